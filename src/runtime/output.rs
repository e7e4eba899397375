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
    /// Memory stays bounded whatever comes: a line is kept up to [`MAX_LINE`]
    /// bytes and the rest of it is counted, not stored (gigabytes without a
    /// newline cost 16 KiB); bytes that are not UTF-8 are shown replaced.
    pub fn pump(&self, reader: impl AsyncRead + Unpin + Send + 'static, stream: Stream) -> tokio::task::JoinHandle<()> {
        let out = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let mut line = LineBuf::default();
            loop {
                let chunk = match reader.fill_buf().await {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => chunk,
                };
                let (used, ended) = match chunk.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                line.take(&chunk[..used - usize::from(ended)]);
                reader.consume(used);
                if ended {
                    out.line(stream, &line.finish());
                }
            }
            if !line.is_empty() {
                out.line(stream, &line.finish());
            }
        })
    }
}

/// A line being read: its first [`MAX_LINE`] bytes and how many more there were.
#[derive(Default)]
struct LineBuf {
    kept: Vec<u8>,
    cut: u64,
}

impl LineBuf {
    fn take(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.kept.len()).min(bytes.len());
        self.kept.extend_from_slice(&bytes[..room]);
        self.cut += (bytes.len() - room) as u64;
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.cut == 0
    }

    fn finish(&mut self) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.cut > 0 {
            text = format!("{text} …[line cut: {} more bytes]", self.cut);
        }
        self.kept.clear();
        self.cut = 0;
        text
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// This process's peak resident memory (`VmHWM`).
    fn peak_rss_kib() -> i64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// 200 MiB without a newline, then a short line: two entries, the first cut
    /// at 16 KiB saying how much was dropped, and nothing held meanwhile
    /// beyond one line's 16 KiB.
    #[tokio::test]
    async fn a_runaway_line_is_cut_and_the_next_line_still_comes() {
        let store = LogStore::new(100);
        let out = Output { store: store.clone(), resource: "r".into(), secrets: Arc::new(Vec::new()) };
        let huge = 200 * 1024 * 1024u64;
        let reader = tokio::io::repeat(b'a').take(huge).chain(&b"\n\xffnext\n"[..]);
        let peak_before = peak_rss_kib();
        out.pump(reader, Stream::Stdout).await.unwrap();
        let grew = peak_rss_kib() - peak_before;
        assert!(grew < 32 * 1024, "reading a 200 MiB line raised the peak memory by {grew} KiB");
        let lines = store.since(Some("r"), 0);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].text.starts_with(&"a".repeat(MAX_LINE)));
        assert!(
            lines[0].text.ends_with(&format!("…[line cut: {} more bytes]", huge - MAX_LINE as u64)),
            "{}",
            &lines[0].text[MAX_LINE..]
        );
        assert_eq!(lines[1].text, "\u{fffd}next", "bytes that are not UTF-8 are replaced");
    }
}
