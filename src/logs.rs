//! The log store: recent lines per resource, plus a live feed. Appending
//! never waits: a reader that falls behind loses lines (and is told how
//! many), the child writing them never does.
//!
//! A session's store is journaled: each resource's lines go to a file of its
//! own under `.apphost/logs/` (owner-only), and memory holds only its last
//! [`RECENT`] lines, enough for health probes, `logs -f` and a screen of the
//! dashboard. Older lines are read back from the journal, so apphost's memory
//! does not grow with what the stack prints, however long it runs. Without a
//! journal (tests, or a journal that cannot be written) memory holds them all.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::Utc;
use tokio::sync::broadcast;

// A line is what the dashboard shows and `GET /v1/logs` streams: one type for all three.
pub use dashboard::{LogLine, Stream};

/// Lines kept per resource unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Lines of each resource held in memory when a journal holds the rest.
pub const RECENT: usize = 256;

/// A journal file is started afresh past this size (the lines stay readable
/// from the one before it), so one resource's history stays within twice
/// this on disk and a read of it is bounded too.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    /// Lines in memory per resource while its journal is written.
    recent: usize,
    segment_bytes: u64,
    /// The folder of the journals; `None`: memory only.
    journal: Option<PathBuf>,
    rings: Mutex<HashMap<Arc<str>, Ring>>,
    live: broadcast::Sender<LogLine>,
    seq: AtomicU64,
}

/// One resource's lines.
#[derive(Default)]
struct Ring {
    /// Its newest lines, oldest first.
    memory: VecDeque<LogLine>,
    /// Lines ever pushed.
    total: u64,
    journal: Option<Journal>,
    /// Why its journal failed, until said.
    trouble: Option<String>,
}

/// One resource's lines on disk: the file being written and the one before.
struct Journal {
    current: PathBuf,
    previous: PathBuf,
    /// Buffered: a flood of lines costs a write per 64 KiB, not per line;
    /// flushed before every read of the journal.
    file: BufWriter<fs::File>,
    lines: u64,
    bytes: u64,
    previous_lines: u64,
    /// Where every [`MARK_EVERY`]th line of each file begins, so that a
    /// read starts near the lines it wants instead of parsing the whole
    /// file: the dashboard asks for what came since its last frame, ten
    /// times a second, and under a flood that is past what memory holds.
    marks: Vec<Mark>,
    previous_marks: Vec<Mark>,
}

/// A line of a journal file: its index in the file, its number, its offset.
#[derive(Clone, Copy)]
struct Mark {
    line: u64,
    seq: u64,
    offset: u64,
}

const MARK_EVERY: u64 = 256;

/// The offset to read a file from for its lines numbered `seq` or later
/// that are among its last `last` lines: the latest mark before the first
/// such line (its line or an earlier one is numbered at most `seq`, or
/// stands before the last `last`).
fn start_of(marks: &[Mark], lines: u64, seq: u64, last: u64) -> u64 {
    let first_wanted = lines.saturating_sub(last);
    let by_seq = marks.partition_point(|m| m.seq <= seq);
    let by_count = marks.partition_point(|m| m.line <= first_wanted);
    by_seq.max(by_count).checked_sub(1).map_or(0, |i| marks[i].offset)
}

impl LogStore {
    /// A store that keeps `capacity` lines per resource in memory.
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, None, RECENT, SEGMENT_BYTES)
    }

    /// A store that keeps `capacity` lines per resource in journals under
    /// `dir` (emptied first: it holds one session) and only the recent ones
    /// in memory. `dir`'s parent must be a folder only its owner can write.
    pub fn journaled(capacity: usize, dir: &Path) -> std::io::Result<Self> {
        Self::journaled_with(capacity, dir, RECENT, SEGMENT_BYTES)
    }

    /// A session's store: journaled under `dir`, or in memory when the
    /// journal cannot be made (and then it says why).
    pub fn for_session(capacity: usize, dir: &Path) -> Self {
        Self::journaled(capacity, dir).unwrap_or_else(|e| {
            let store = Self::new(capacity);
            let text = format!("logs are kept in memory only: cannot make {}: {e}", dir.display());
            eprintln!("apphost: {text}");
            store.push(&"apphost".into(), Stream::System, text);
            store
        })
    }

    fn journaled_with(capacity: usize, dir: &Path, recent: usize, segment_bytes: u64) -> std::io::Result<Self> {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::DirBuilder::new().mode(0o700).create(dir)?;
        Ok(Self::build(capacity, Some(dir.to_owned()), recent, segment_bytes))
    }

    fn build(capacity: usize, journal: Option<PathBuf>, recent: usize, segment_bytes: u64) -> Self {
        let (live, _) = broadcast::channel(8192);
        Self {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                recent: recent.clamp(1, capacity.max(1)),
                segment_bytes,
                journal,
                rings: Mutex::default(),
                live,
                seq: AtomicU64::new(0),
            }),
        }
    }

    pub fn push(&self, resource: &Arc<str>, stream: Stream, text: impl Into<String>) {
        let text = text.into();
        let (line, trouble) = {
            let mut rings = self.inner.rings.lock().expect("log lock");
            // Numbered under the lock: a reader that has line N has every line before it.
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            let line = LogLine { seq, at: Utc::now(), resource: resource.clone(), stream, text };
            let ring = rings.entry(resource.clone()).or_insert_with(|| self.inner.ring(resource));
            let trouble = self.inner.append(ring, &line);
            (line, trouble)
        };
        // No receiver is fine; a slow one lags and is told so on its next recv.
        let _ = self.inner.live.send(line);
        if let Some(error) = trouble {
            // Once per resource: from now on its ring has no journal to fail.
            let text = format!("the lines of `{resource}` are kept in memory only from now on: {error}");
            self.push(&"apphost".into(), Stream::System, text);
        }
    }

    /// The last `n` lines of `resource` (all resources when `None`), oldest first.
    pub fn tail(&self, resource: Option<&str>, n: usize) -> Vec<LogLine> {
        let mut rings = self.inner.rings.lock().expect("log lock");
        match resource {
            Some(r) => rings.get_mut(r).map(|ring| self.inner.read(ring, 0, n)).unwrap_or_default(),
            None => {
                let mut all: Vec<LogLine> = rings.values_mut().flat_map(|ring| self.inner.read(ring, 0, n)).collect();
                all.sort_unstable_by_key(|l| l.seq);
                all.split_off(all.len().saturating_sub(n))
            }
        }
    }

    /// Lines of `resource` (all resources when `None`) numbered `seq` or
    /// later, oldest first: at most the `capacity` newest of each.
    pub fn since(&self, resource: Option<&str>, seq: u64) -> Vec<LogLine> {
        let mut rings = self.inner.rings.lock().expect("log lock");
        let n = self.inner.capacity;
        match resource {
            Some(r) => rings.get_mut(r).map(|ring| self.inner.read(ring, seq, n)).unwrap_or_default(),
            None => {
                let mut all: Vec<LogLine> = rings.values_mut().flat_map(|ring| self.inner.read(ring, seq, n)).collect();
                all.sort_unstable_by_key(|l| l.seq);
                all
            }
        }
    }

    /// The number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.seq.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.inner.live.subscribe()
    }

    /// Lines no longer kept for `resource` (for all when `None`).
    pub fn evicted(&self, resource: Option<&str>) -> u64 {
        let rings = self.inner.rings.lock().expect("log lock");
        let evicted = |ring: &Ring| ring.total - self.inner.kept(ring) as u64;
        match resource {
            Some(r) => rings.get(r).map_or(0, evicted),
            None => rings.values().map(evicted).sum(),
        }
    }
}

impl Inner {
    fn ring(&self, resource: &str) -> Ring {
        let Some(dir) = &self.journal else { return Ring::default() };
        let name = file_name(resource);
        let (current, previous) = (dir.join(format!("{name}.jsonl")), dir.join(format!("{name}.1.jsonl")));
        match create(&current) {
            Ok(file) => Ring {
                // Its full size from the start (a few KiB): a ring filling up is not growth.
                memory: VecDeque::with_capacity(self.recent),
                journal: Some(Journal {
                    current,
                    previous,
                    file: BufWriter::with_capacity(64 * 1024, file),
                    lines: 0,
                    bytes: 0,
                    previous_lines: 0,
                    marks: Vec::new(),
                    previous_marks: Vec::new(),
                }),
                ..Ring::default()
            },
            Err(e) => Ring { trouble: Some(format!("cannot create {}: {e}", current.display())), ..Ring::default() },
        }
    }

    /// Lines `ring` can still give.
    fn kept(&self, ring: &Ring) -> usize {
        match &ring.journal {
            Some(j) => ((j.previous_lines + j.lines) as usize).min(self.capacity),
            None => ring.memory.len(),
        }
    }

    /// Adds `line` to `ring`; says what went wrong with its journal, once.
    fn append(&self, ring: &mut Ring, line: &LogLine) -> Option<String> {
        ring.total += 1;
        if let Some(journal) = &mut ring.journal
            && let Err(e) = journal.append(line, self.segment_bytes)
        {
            // Memory keeps what it has and takes over: a full disk loses history
            // (counted as dropped), never new lines.
            ring.trouble = Some(format!("cannot write {}: {e}", journal.current.display()));
            ring.journal = None;
        }
        let limit = if ring.journal.is_some() { self.recent } else { self.capacity };
        while ring.memory.len() >= limit {
            ring.memory.pop_front();
        }
        ring.memory.push_back(line.clone());
        ring.trouble.take()
    }

    /// The last `n` of `ring`'s kept lines numbered `seq` or later, from
    /// memory when it has them all, else from the journal.
    fn read(&self, ring: &mut Ring, seq: u64, n: usize) -> Vec<LogLine> {
        let n = n.min(self.capacity);
        let kept = self.kept(ring);
        let in_memory = ring.memory.len();
        let fresh = ring.memory.iter().rev().take_while(|l| l.seq >= seq).take(n).count();
        let from_memory = |ring: &Ring| ring.memory.iter().skip(in_memory - fresh).cloned().collect();
        let memory_has_all = fresh == n || fresh < in_memory || in_memory == kept;
        let Some(journal) = ring.journal.as_mut().filter(|_| !memory_has_all) else { return from_memory(ring) };
        // What the buffer holds is part of the journal too; a failed flush
        // shows at the next line's write, which then says so.
        if journal.file.flush().is_err() {
            return from_memory(ring);
        }
        let mut wanted = VecDeque::with_capacity(n.min(4096));
        let current_last = n as u64;
        let previous_last = current_last.saturating_sub(journal.lines);
        // The previous file only when the current one holds fewer than the last `n` lines.
        let previous = (previous_last > 0).then(|| {
            (&journal.previous, start_of(&journal.previous_marks, journal.previous_lines, seq, previous_last))
        });
        let current = (&journal.current, start_of(&journal.marks, journal.lines, seq, current_last));
        for (path, start) in previous.into_iter().chain([current]) {
            let Ok(mut file) = fs::File::open(path) else { continue };
            if file.seek(SeekFrom::Start(start)).is_err() {
                continue;
            }
            for text in BufReader::new(file).lines() {
                let Ok(text) = text else { break };
                let Ok(line) = serde_json::from_str::<LogLine>(&text) else { continue };
                if line.seq >= seq {
                    if wanted.len() == n {
                        wanted.pop_front();
                    }
                    wanted.push_back(line);
                }
            }
        }
        // A journal that could not be read back gives what memory has.
        if wanted.len() < fresh { from_memory(ring) } else { wanted.into() }
    }
}

impl Journal {
    fn append(&mut self, line: &LogLine, segment_bytes: u64) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        text.push(b'\n');
        if self.bytes > 0 && self.bytes + text.len() as u64 > segment_bytes {
            self.file.flush()?;
            fs::rename(&self.current, &self.previous)?;
            self.file = BufWriter::with_capacity(64 * 1024, create(&self.current)?);
            self.previous_lines = self.lines;
            self.previous_marks = std::mem::take(&mut self.marks);
            (self.lines, self.bytes) = (0, 0);
        }
        if self.lines.is_multiple_of(MARK_EVERY) {
            self.marks.push(Mark { line: self.lines, seq: line.seq, offset: self.bytes });
        }
        self.file.write_all(&text)?;
        self.lines += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }
}

/// A new file, owner-only from its first moment; never through a link.
fn create(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A resource name as a file name: names are checked when the topology is
/// read, but `apphost` and anything else outside it are written safely too.
fn file_name(resource: &str) -> String {
    resource.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn texts(lines: Vec<LogLine>) -> Vec<String> {
        lines.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn rings_are_bounded_and_count_what_they_drop() {
        let store = LogStore::new(3);
        let a: Arc<str> = "a".into();
        for i in 0..5 {
            store.push(&a, Stream::Stdout, format!("line {i}"));
        }
        assert_eq!(texts(store.tail(Some("a"), 10)), ["line 2", "line 3", "line 4"]);
        assert_eq!(store.evicted(Some("a")), 2);
        assert_eq!(store.evicted(None), 2);
    }

    #[test]
    fn all_resources_interleave_in_order() {
        let store = LogStore::new(10);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        store.push(&a, Stream::Stdout, "1");
        store.push(&b, Stream::Stderr, "2");
        store.push(&a, Stream::Stdout, "3");
        assert_eq!(texts(store.tail(None, 2)), ["2", "3"]);
        assert_eq!(texts(store.since(None, 1)), ["2", "3"]);
    }

    /// Reads that start at a mark give what a read of the whole journal
    /// gives: every `since` and `tail` of a resource whose lines interleave
    /// with another's, across a rotation, against the lines as pushed.
    #[test]
    fn a_read_from_a_mark_gives_what_the_whole_journal_does() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 2500;
        let store = LogStore::journaled_with(capacity, &dir.path().join("logs"), 16, 200 * 1024).unwrap();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut pushed = Vec::new(); // (seq, text) of `a`
        for i in 0..3000u64 {
            let seq = store.next_seq();
            store.push(&a, Stream::Stdout, format!("a {i}"));
            pushed.push((seq, format!("a {i}")));
            if i % 3 == 0 {
                store.push(&b, Stream::Stdout, format!("b {i}"));
            }
        }
        // Counts that end right at a mark, and one line either side of it.
        let mut counts = vec![1, 100, 1000, 2500];
        {
            let rings = store.inner.rings.lock().unwrap();
            let journal = rings["a"].journal.as_ref().unwrap();
            assert!(journal.previous_lines > 0 && journal.marks.len() > 2, "a rotation, and marks to start from");
            for m in &journal.marks {
                let n = (journal.lines - m.line) as usize;
                counts.extend([n - 1, n, n + 1]);
            }
        }
        let kept = &pushed[pushed.len() - capacity..];
        for seq in [0, 1, 700, 2999, 3001, 3500, 3990, 3999] {
            for &n in &counts {
                let want: Vec<&String> = kept.iter().filter(|(s, _)| *s >= seq).map(|(_, t)| t).collect();
                let want = &want[want.len().saturating_sub(n)..];
                let got = texts(store.inner.read(store.inner.rings.lock().unwrap().get_mut("a").unwrap(), seq, n));
                assert_eq!(got.iter().collect::<Vec<_>>(), want, "seq {seq}, last {n}");
            }
        }
    }

    /// Memory holds 3 lines, the journal 8 in segments of about 4: what
    /// memory lost is read back, the oldest past 8 are gone and counted.
    #[test]
    fn a_journal_keeps_what_memory_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let line_bytes = serde_json::to_vec(&LogLine {
            seq: 10,
            at: Utc::now(),
            resource: "a".into(),
            stream: Stream::Stdout,
            text: "line 10".into(),
        })
        .unwrap()
        .len() as u64;
        let store = LogStore::journaled_with(8, &logs, 3, 4 * line_bytes + 4).unwrap();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for i in 10..30 {
            store.push(&a, Stream::Stdout, format!("line {i}"));
        }
        store.push(&b, Stream::Stdout, "other");
        assert_eq!(store.inner.rings.lock().unwrap()["a"].memory.len(), 3);
        let want: Vec<String> = (22..30).map(|i| format!("line {i}")).collect();
        assert_eq!(texts(store.tail(Some("a"), 100)), want);
        assert_eq!(texts(store.tail(Some("a"), 2)), ["line 28", "line 29"]);
        // Line `i` is numbered `i - 10`.
        assert_eq!(texts(store.since(Some("a"), 15)), want[3..]);
        assert_eq!(texts(store.since(Some("a"), 19)), ["line 29"]);
        assert_eq!(texts(store.since(Some("a"), 0)), want);
        assert_eq!(texts(store.tail(None, 3)), ["line 28", "line 29", "other"]);
        assert_eq!(store.evicted(Some("a")), 12);
        assert_eq!(store.evicted(None), 12);

        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&logs), 0o700);
        assert_eq!(mode(&logs.join("a.jsonl")), 0o600);
        assert_eq!(mode(&logs.join("a.1.jsonl")), 0o600);

        // A new session starts from an empty folder.
        let again = LogStore::journaled(8, &logs).unwrap();
        again.push(&a, Stream::Stdout, "new");
        assert_eq!(texts(again.tail(Some("a"), 100)), ["new"]);
    }

    /// A link where a journal goes is not followed: the lines stay in memory.
    #[test]
    fn a_journal_never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let store = LogStore::journaled_with(5, &logs, 2, SEGMENT_BYTES).unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, logs.join("a.jsonl")).unwrap();
        let a: Arc<str> = "a".into();
        for i in 0..4 {
            store.push(&a, Stream::Stdout, format!("line {i}"));
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(texts(store.tail(Some("a"), 10)), ["line 0", "line 1", "line 2", "line 3"]);
    }

    /// A journal that stops taking lines (the disk is full, the file was
    /// removed) costs history, never the lines memory has.
    #[test]
    fn a_journal_that_fails_falls_back_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let store = LogStore::journaled_with(5, &logs, 2, 64).unwrap();
        let a: Arc<str> = "a".into();
        store.push(&a, Stream::Stdout, "line 0");
        fs::remove_dir_all(&logs).unwrap();
        for i in 1..4 {
            store.push(&a, Stream::Stdout, format!("line {i}"));
        }
        let kept = texts(store.tail(Some("a"), 10));
        assert!(kept.ends_with(&["line 2".to_owned(), "line 3".to_owned()]), "{kept:?}");
        assert_eq!(store.evicted(Some("a")) + kept.len() as u64, 4);
    }
}
