//! Reading a child's output line by line into the log store, with secrets masked.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::logs::{LogStore, Stream};

/// Where an instance's output goes.
#[derive(Clone)]
pub struct Output {
    pub store: LogStore,
    pub resource: Arc<str>,
    /// Values never to show: generated passwords.
    pub secrets: Arc<Vec<String>>,
}

/// Lines longer than this are cut (and marked) so one runaway line cannot eat memory.
const MAX_LINE: usize = 16 * 1024;

impl Output {
    pub fn line(&self, stream: Stream, text: &str) {
        let mut text = text.trim_end_matches(['\n', '\r']).to_owned();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "****");
            }
        }
        self.store.push(&self.resource, stream, text);
    }

    pub fn system(&self, text: &str) {
        self.line(Stream::System, text);
    }

    /// Reads `reader` to its end as fast as it produces, one entry per line.
    pub fn pump(&self, reader: impl AsyncRead + Unpin + Send + 'static, stream: Stream) -> tokio::task::JoinHandle<()> {
        let out = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if buf.len() > MAX_LINE {
                            buf.truncate(MAX_LINE);
                            buf.extend_from_slice(" …[line cut]".as_bytes());
                        }
                        out.line(stream, &String::from_utf8_lossy(&buf));
                    }
                }
            }
        })
    }
}
