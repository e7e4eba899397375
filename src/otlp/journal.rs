//! Telemetry that survives apphost (`up --keep-telemetry`): what the store
//! keeps is also appended, one JSON object a line, to
//! `.apphost/telemetry/current.jsonl`; past a size that file becomes
//! `previous.jsonl` and a new one starts, so the two stay within twice that.
//! The next `up` (or `apphost traces` with no app running) reads both back.
//!
//! The folder is owner-only and must be ours; files are opened without
//! following links, lines past a length are skipped unread, so a hostile
//! file costs bounded memory and is never trusted for more than data.

use std::{
    fs,
    io::{BufRead, BufReader, BufWriter, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use dashboard::telemetry::{LogRecord, Span};
use serde::{Deserialize, Serialize};

/// A line longer than this is not telemetry apphost wrote: skipped.
const MAX_LINE: usize = 64 * 1024;

/// Lines waiting for the writer, at most; past that they are counted and dropped.
const QUEUE: usize = 16_384;

#[derive(Serialize, Deserialize)]
enum Line {
    #[serde(rename = "span")]
    Span(Span),
    #[serde(rename = "log")]
    Log(LogRecord),
}

pub struct Journal {
    queue: mpsc::SyncSender<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// The telemetry folder of a state folder.
pub fn dir(state: &Path) -> PathBuf {
    state.join("telemetry")
}

impl Journal {
    /// Opens the journal in `dir` (made owner-only if missing), writing
    /// segments of up to `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> std::io::Result<Self> {
        ensure_dir(dir)?;
        let current = dir.join("current.jsonl");
        let file = open_append(&current)?;
        let written = file.metadata()?.len();
        let (queue, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let dir = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("telemetry-journal".into())
            .spawn(move || write_lines(&dir, file, written, segment_bytes, rx))?;
        Ok(Self { queue, dropped, writer: Some(writer) })
    }

    pub fn spans(&self, spans: &[Span]) {
        for span in spans {
            self.line(&Line::Span(span.clone()));
        }
    }

    pub fn logs(&self, records: &[LogRecord]) {
        for record in records {
            self.line(&Line::Log(record.clone()));
        }
    }

    fn line(&self, line: &Line) {
        let mut bytes = serde_json::to_vec(line).expect("telemetry serialises");
        bytes.push(b'\n');
        if self.queue.try_send(bytes).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued and closes the file.
    pub fn close(mut self) {
        let (closed, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_lines(dir: &Path, file: fs::File, mut written: u64, segment_bytes: u64, rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if written + line.len() as u64 > segment_bytes && written > 0 {
            let _ = out.flush();
            let current = dir.join("current.jsonl");
            if fs::rename(&current, dir.join("previous.jsonl")).is_ok()
                && let Ok(file) = open_append(&current)
            {
                out = BufWriter::with_capacity(64 * 1024, file);
                written = 0;
            }
        }
        if out.write_all(&line).is_ok() {
            written += line.len() as u64;
        }
    }
    let _ = out.flush();
}

/// What the journal in `dir` holds, oldest first; nothing when there is none.
/// Refuses a folder that is not ours or that others can write.
pub fn read(dir: &Path) -> std::io::Result<(Vec<Span>, Vec<LogRecord>)> {
    let (mut spans, mut logs) = (Vec::new(), Vec::new());
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((spans, logs)),
        Err(e) => return Err(e),
        Ok(meta) => {
            if let Some(why) = crate::statedir::untrusted(&meta) {
                return Err(std::io::Error::other(format!("{} {why}: its telemetry is not read", dir.display())));
            }
        }
    }
    for name in ["previous.jsonl", "current.jsonl"] {
        let file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(std::io::Error::other(format!("{}: {e}", dir.join(name).display()))),
        };
        let meta = file.metadata()?;
        // SAFETY: geteuid has no preconditions.
        if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } {
            continue;
        }
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') && n > MAX_LINE {
                // Too long: skip the rest of it.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
                continue;
            }
            match serde_json::from_slice::<Line>(&line) {
                Ok(Line::Span(s)) => spans.push(s),
                Ok(Line::Log(r)) => logs.push(r),
                Err(_) => {}
            }
        }
    }
    Ok((spans, logs))
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => match crate::statedir::untrusted(&meta) {
            Some(why) => Err(std::io::Error::other(format!("{} {why}: telemetry is not kept there", dir.display()))),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new().mode(0o700).create(dir),
        Err(e) => Err(e),
    }
}

fn open_append(path: &Path) -> std::io::Result<fs::File> {
    let file =
        fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is not a file", path.display())));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use dashboard::telemetry::{Level, SpanKind};

    use super::*;

    fn span(i: u64) -> Span {
        Span {
            trace_id: format!("{i:032x}"),
            span_id: format!("{i:016x}"),
            parent_id: None,
            name: "POST /api/EntityItems".into(),
            resource: "sender".into(),
            kind: SpanKind::Server,
            start_unix_nano: i,
            end_unix_nano: i + 1,
            error: None,
            attributes: vec![],
        }
    }

    #[test]
    fn what_is_written_reads_back_within_two_segments_and_hostile_lines_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("telemetry");
        let journal = Journal::open(&dir, 4096).unwrap();
        journal.spans(&(1..=200).map(span).collect::<Vec<_>>());
        let record = LogRecord {
            seq: 1,
            at_unix_nano: 5,
            resource: "receiver".into(),
            level: Level::Warn,
            body: "held".into(),
            attributes: vec![],
            trace_id: Some(format!("{:032x}", 200)),
            span_id: None,
        };
        journal.logs(std::slice::from_ref(&record));
        journal.close();
        let on_disk: u64 = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(on_disk <= 2 * 4096 + 512, "{on_disk} bytes");
        let mode = fs::metadata(dir.join("current.jsonl")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A line far too long and one that is not JSON, appended by someone else.
        let mut f = fs::OpenOptions::new().append(true).open(dir.join("current.jsonl")).unwrap();
        f.write_all(&vec![b'x'; MAX_LINE * 2]).unwrap();
        f.write_all(b"\nnot json\n").unwrap();
        let (spans, logs) = read(&dir).unwrap();
        assert_eq!(logs, [record]);
        assert_eq!(spans.last().unwrap(), &span(200), "the newest are kept");
        assert!(spans.len() < 200, "the oldest segment went: {}", spans.len());
    }

    #[test]
    fn a_link_in_place_of_the_journal_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("telemetry");
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("current.jsonl")).unwrap();
        assert!(Journal::open(&dir, 4096).is_err());
        assert!(read(&dir).is_err() || read(&dir).unwrap().0.is_empty());
    }
}
