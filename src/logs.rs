//! The log store: recent lines per resource in bounded rings, plus a live
//! feed. Appending never waits: a reader that falls behind loses lines (and
//! is told how many), the child writing them never does.

use std::{
    collections::{HashMap, VecDeque},
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

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    rings: Mutex<HashMap<Arc<str>, VecDeque<LogLine>>>,
    live: broadcast::Sender<LogLine>,
    seq: AtomicU64,
    /// Lines pushed out of a full ring, per resource.
    evicted: Mutex<HashMap<Arc<str>, u64>>,
}

impl LogStore {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(8192);
        Self {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                rings: Mutex::default(),
                live,
                seq: AtomicU64::new(0),
                evicted: Mutex::default(),
            }),
        }
    }

    pub fn push(&self, resource: &Arc<str>, stream: Stream, text: impl Into<String>) {
        let line = LogLine {
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            at: Utc::now(),
            resource: resource.clone(),
            stream,
            text: text.into(),
        };
        {
            let mut rings = self.inner.rings.lock().expect("log lock");
            let ring = rings.entry(resource.clone()).or_default();
            if ring.len() == self.inner.capacity {
                ring.pop_front();
                *self.inner.evicted.lock().expect("log lock").entry(resource.clone()).or_default() += 1;
            }
            ring.push_back(line.clone());
        }
        // No receiver is fine; a slow one lags and is told so on its next recv.
        let _ = self.inner.live.send(line);
    }

    /// The last `n` lines of `resource` (all resources when `None`), oldest first.
    pub fn tail(&self, resource: Option<&str>, n: usize) -> Vec<LogLine> {
        let rings = self.inner.rings.lock().expect("log lock");
        let mut lines: Vec<LogLine> = match resource {
            Some(r) => rings.get(r).map(|ring| ring.iter().rev().take(n).cloned().collect()).unwrap_or_default(),
            None => {
                // Newest first from every ring at once: only the `n` lines wanted are touched.
                let mut cursors: Vec<_> = rings.values().map(|r| r.iter().rev().peekable()).collect();
                let mut all = Vec::with_capacity(n.min(4096));
                while all.len() < n {
                    let newest = cursors.iter_mut().enumerate().filter_map(|(i, c)| c.peek().map(|l| (l.seq, i))).max();
                    let Some((_, i)) = newest else { break };
                    all.extend(cursors[i].next().cloned());
                }
                all
            }
        };
        lines.reverse();
        lines
    }

    /// Lines of `resource` numbered `seq` or later, oldest first.
    pub fn since(&self, resource: &str, seq: u64) -> Vec<LogLine> {
        let rings = self.inner.rings.lock().expect("log lock");
        let Some(ring) = rings.get(resource) else { return Vec::new() };
        let fresh = ring.iter().rev().take_while(|l| l.seq >= seq).count();
        ring.iter().skip(ring.len() - fresh).cloned().collect()
    }

    /// The number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.seq.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.inner.live.subscribe()
    }

    /// Lines dropped from a full ring for `resource` (for all when `None`).
    pub fn evicted(&self, resource: Option<&str>) -> u64 {
        let evicted = self.inner.evicted.lock().expect("log lock");
        match resource {
            Some(r) => evicted.get(r).copied().unwrap_or(0),
            None => evicted.values().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_count_what_they_drop() {
        let store = LogStore::new(3);
        let a: Arc<str> = "a".into();
        for i in 0..5 {
            store.push(&a, Stream::Stdout, format!("line {i}"));
        }
        let tail: Vec<String> = store.tail(Some("a"), 10).into_iter().map(|l| l.text).collect();
        assert_eq!(tail, ["line 2", "line 3", "line 4"]);
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
        let all: Vec<String> = store.tail(None, 2).into_iter().map(|l| l.text).collect();
        assert_eq!(all, ["2", "3"]);
    }
}
