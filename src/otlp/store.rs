//! The receiver's store: recent traces and log records within a budget of
//! bytes, with the sampling policy and counts of everything let go.
//!
//! **Sampling.** Every trace is kept while new traces arrive at no more than
//! [`KEPT_TRACES_PER_SECOND`] (bursts of up to twice that pass); above that
//! rate a new trace is kept only when a token is free, so about that many a
//! second are, whatever the load. The decision is taken once, at a trace's
//! first span, and remembered, so a kept trace stays whole across services
//! and a dropped one is dropped whole. A span that ended in error is always
//! kept. Log records are not sampled.
//!
//! **Bounds.** Spans and log records each have a share of the budget; past
//! it the oldest trace (or record) goes. Ids of traces let go are remembered
//! (a bounded set), so their late spans are counted, not kept as fragments.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use dashboard::telemetry::{LogFilter, LogRecord, Span, Stats, Trace, TraceFilter, TraceSummary};

/// New traces a second kept under load (see the module's doc).
pub const KEPT_TRACES_PER_SECOND: f64 = 200.0;

/// What the store holds at most unless told otherwise: within the
/// dashboard's memory goal (under 50 MB resident). Filled with spans, a
/// debug apphost was 46.7 MB resident (21 MB its own, 25 MB pages of its
/// binary); with 16 MiB it was 53.1 MB. What is counted here is what the
/// spans hold; the allocator's and the map's share comes on top.
/// (`python3 docs/bench/otlp-fill.py ENDPOINT 15` beside `apphost up`.)
pub const DEFAULT_BUDGET: usize = 8 * 1024 * 1024;

/// Ids of let-go traces remembered, so their late spans are not kept.
const FORGOTTEN: usize = 65_536;

pub struct Store {
    inner: Mutex<Inner>,
    /// Moves whenever what a reader sees would differ.
    version: AtomicU64,
}

struct Inner {
    span_budget: usize,
    log_budget: usize,
    span_bytes: usize,
    log_bytes: usize,
    traces: HashMap<String, Entry>,
    /// Trace ids by first arrival, oldest first.
    order: VecDeque<String>,
    forgotten: HashSet<String>,
    forgotten_order: VecDeque<String>,
    logs: VecDeque<LogRecord>,
    seq: u64,
    tokens: f64,
    refilled: Instant,
    stats: Stats,
}

struct Entry {
    spans: Vec<Span>,
    bytes: usize,
    summary: TraceSummary,
}

/// What a batch of spans came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub kept: usize,
    pub sampled_out: usize,
}

impl Store {
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                // Traces take the larger share; records are small and many.
                span_budget: budget / 4 * 3,
                log_budget: budget / 4,
                span_bytes: 0,
                log_bytes: 0,
                traces: HashMap::new(),
                order: VecDeque::new(),
                forgotten: HashSet::new(),
                forgotten_order: VecDeque::new(),
                logs: VecDeque::new(),
                seq: 0,
                tokens: KEPT_TRACES_PER_SECOND * 2.0,
                refilled: Instant::now(),
                stats: Stats { budget_bytes: budget, ..Stats::default() },
            }),
            version: AtomicU64::new(0),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Takes `spans` through the sampling policy; returns those kept (for the journal).
    pub fn add_spans(&self, spans: Vec<Span>) -> Vec<Span> {
        let mut inner = self.inner.lock().expect("telemetry store");
        inner.refill();
        let mut kept = Vec::with_capacity(spans.len());
        for span in spans {
            inner.stats.spans_received += 1;
            let known = inner.traces.contains_key(&span.trace_id);
            let keep = if known {
                true
            } else if inner.forgotten.contains(&span.trace_id) {
                span.error.is_some()
            } else if inner.tokens >= 1.0 {
                inner.tokens -= 1.0;
                true
            } else {
                let id = span.trace_id.clone();
                inner.forget(id);
                span.error.is_some()
            };
            if keep {
                inner.insert(span.clone());
                kept.push(span);
            } else {
                inner.stats.spans_sampled_out += 1;
            }
        }
        drop(inner);
        if !kept.is_empty() {
            self.version.fetch_add(1, Ordering::Relaxed);
        }
        kept
    }

    /// Spans read back from the journal: kept as they were, no sampling.
    pub fn restore_spans(&self, spans: Vec<Span>) {
        let mut inner = self.inner.lock().expect("telemetry store");
        for span in spans {
            inner.insert(span);
        }
        drop(inner);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `records` (numbering them); returns them numbered, for the journal.
    pub fn add_logs(&self, records: Vec<LogRecord>) -> Vec<LogRecord> {
        let mut inner = self.inner.lock().expect("telemetry store");
        let mut kept = Vec::with_capacity(records.len());
        for mut record in records {
            inner.stats.logs_received += 1;
            inner.seq += 1;
            record.seq = inner.seq;
            inner.push_log(record.clone());
            kept.push(record);
        }
        drop(inner);
        self.version.fetch_add(1, Ordering::Relaxed);
        kept
    }

    pub fn restore_logs(&self, records: Vec<LogRecord>) {
        let mut inner = self.inner.lock().expect("telemetry store");
        for record in records {
            inner.seq = inner.seq.max(record.seq);
            inner.push_log(record);
        }
        drop(inner);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// The newest traces passing `filter`, newest first, at most `limit`.
    pub fn traces(&self, filter: &TraceFilter, limit: usize) -> Vec<TraceSummary> {
        let inner = self.inner.lock().expect("telemetry store");
        let mut out: Vec<TraceSummary> = inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.traces.get(id))
            .filter(|e| filter.matches(&e.summary))
            .take(limit)
            .map(|e| e.summary.clone())
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));
        out
    }

    /// One trace by id (or a unique prefix of one), with the records that name it.
    pub fn trace(&self, id: &str) -> Option<Trace> {
        let inner = self.inner.lock().expect("telemetry store");
        let id = id.to_ascii_lowercase();
        let entry = inner.traces.get(&id).or_else(|| {
            let mut found = inner.traces.iter().filter(|(k, _)| k.starts_with(&id) && id.len() >= 4);
            let first = found.next()?;
            found.next().is_none().then_some(first.1)
        })?;
        let mut spans = entry.spans.clone();
        spans.sort_by_key(|s| s.start_unix_nano);
        let trace_id = &entry.summary.trace_id;
        let logs = inner.logs.iter().filter(|r| r.trace_id.as_ref() == Some(trace_id)).cloned().collect();
        Some(Trace { spans, logs })
    }

    /// The newest records passing `filter`, oldest first, at most `limit`.
    pub fn logs(&self, filter: &LogFilter, limit: usize) -> Vec<LogRecord> {
        let inner = self.inner.lock().expect("telemetry store");
        let mut out: Vec<LogRecord> =
            inner.logs.iter().rev().filter(|r| filter.matches(r)).take(limit).cloned().collect();
        out.reverse();
        out
    }

    /// The trace with a span whose attribute `key` is `value` (`entity.id` of
    /// an item: the sender's `outbox insert` span carries it), if one is kept.
    pub fn trace_with(&self, key: &str, value: &str) -> Option<String> {
        let inner = self.inner.lock().expect("telemetry store");
        inner
            .traces
            .iter()
            .find(|(_, e)| e.spans.iter().any(|s| s.attribute(key) == Some(value)))
            .map(|(id, _)| id.clone())
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner.lock().expect("telemetry store");
        let mut stats = inner.stats.clone();
        stats.traces = inner.traces.len();
        stats.spans = inner.traces.values().map(|e| e.spans.len()).sum();
        stats.logs = inner.logs.len();
        stats.bytes = inner.span_bytes + inner.log_bytes;
        stats
    }

    pub fn note_rejected_request(&self) {
        self.inner.lock().expect("telemetry store").stats.rejected_requests += 1;
    }
}

impl Inner {
    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * KEPT_TRACES_PER_SECOND).min(KEPT_TRACES_PER_SECOND * 2.0);
    }

    fn insert(&mut self, span: Span) {
        let bytes = span_bytes(&span);
        let id = span.trace_id.clone();
        match self.traces.get_mut(&id) {
            Some(entry) => {
                entry.bytes += bytes;
                entry.spans.push(span);
                entry.summary = TraceSummary::of(&entry.spans).expect("a span");
            }
            None => {
                let summary = TraceSummary::of(std::slice::from_ref(&span)).expect("a span");
                self.traces.insert(id.clone(), Entry { spans: vec![span], bytes, summary });
                self.order.push_back(id.clone());
                // Kept again (an error span of a let-go trace): no longer forgotten.
                self.forgotten.remove(&id);
            }
        }
        self.span_bytes += bytes;
        while self.span_bytes > self.span_budget {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(entry) = self.traces.remove(&oldest) {
                self.span_bytes -= entry.bytes;
                self.stats.spans_evicted += entry.spans.len() as u64;
                self.forget(oldest);
            }
        }
    }

    fn forget(&mut self, id: String) {
        if self.forgotten.insert(id.clone()) {
            self.forgotten_order.push_back(id);
            if self.forgotten_order.len() > FORGOTTEN
                && let Some(old) = self.forgotten_order.pop_front()
            {
                self.forgotten.remove(&old);
            }
        }
    }

    fn push_log(&mut self, record: LogRecord) {
        self.log_bytes += log_bytes(&record);
        self.logs.push_back(record);
        while self.log_bytes > self.log_budget {
            let Some(old) = self.logs.pop_front() else { break };
            self.log_bytes -= log_bytes(&old);
            self.stats.logs_evicted += 1;
        }
    }
}

fn attributes_bytes(attributes: &[(String, String)]) -> usize {
    attributes.iter().map(|(k, v)| k.capacity() + v.capacity() + 2 * std::mem::size_of::<String>()).sum()
}

/// What a span costs in memory: the struct, its strings, a share of the map.
pub fn span_bytes(s: &Span) -> usize {
    std::mem::size_of::<Span>()
        + s.trace_id.capacity()
        + s.span_id.capacity()
        + s.parent_id.as_ref().map_or(0, String::capacity)
        + s.name.capacity()
        + s.resource.capacity()
        + s.error.as_ref().map_or(0, String::capacity)
        + attributes_bytes(&s.attributes)
        + 16
}

pub fn log_bytes(r: &LogRecord) -> usize {
    std::mem::size_of::<LogRecord>()
        + r.resource.capacity()
        + r.body.capacity()
        + r.trace_id.as_ref().map_or(0, String::capacity)
        + r.span_id.as_ref().map_or(0, String::capacity)
        + attributes_bytes(&r.attributes)
}

#[cfg(test)]
mod tests {
    use dashboard::telemetry::SpanKind;

    use super::*;

    fn span(trace: u64, id: u64, error: bool) -> Span {
        Span {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{id:016x}"),
            parent_id: None,
            name: "POST /api/EntityItems".into(),
            resource: "sender".into(),
            kind: SpanKind::Server,
            start_unix_nano: trace * 1000,
            end_unix_nano: trace * 1000 + 500,
            error: error.then(|| "boom".into()),
            attributes: vec![("http.route".into(), "/api/EntityItems".into())],
        }
    }

    #[test]
    fn a_trace_is_kept_whole_or_dropped_whole_under_a_flood() {
        let store = Store::new(DEFAULT_BUDGET);
        // 10,000 traces at once: the burst passes, the rest is sampled out, whole.
        let first: Vec<Span> = (1..=10_000).map(|t| span(t, t, false)).collect();
        let kept = store.add_spans(first).len();
        assert!((1..=(KEPT_TRACES_PER_SECOND as usize * 2) + 1).contains(&kept), "kept {kept}");
        // Their second spans follow their first's fate.
        let second: Vec<Span> = (1..=10_000).map(|t| span(t, t + 100_000, false)).collect();
        assert_eq!(store.add_spans(second).len(), kept);
        let stats = store.stats();
        assert_eq!(stats.spans_received, 20_000);
        assert_eq!(stats.spans_sampled_out, 20_000 - 2 * kept as u64);
        assert_eq!(stats.traces, kept);
        assert!(store.traces(&TraceFilter::default(), usize::MAX).iter().all(|t| t.spans == 2));
    }

    #[test]
    fn an_error_span_is_kept_even_when_its_trace_was_sampled_out() {
        let store = Store::new(DEFAULT_BUDGET);
        store.add_spans((1..=1_000).map(|t| span(t, t, false)).collect());
        assert!(store.trace(&format!("{:032x}", 1_000)).is_none(), "sampled out");
        assert_eq!(store.add_spans(vec![span(1_000, 7, true)]).len(), 1);
        assert_eq!(store.trace(&format!("{:032x}", 1_000)).unwrap().spans.len(), 1);
    }

    #[test]
    fn the_store_stays_within_its_budget_and_counts_what_it_let_go() {
        let budget = 256 * 1024;
        let store = Store::new(budget);
        let mut total = 0;
        for round in 0..200u64 {
            // One round a "second" of tokens: all of each is kept, then evicted in turn.
            store.inner.lock().unwrap().tokens = 1e9;
            let spans: Vec<Span> = (0..100).map(|i| span(round * 100 + i + 1, i + 1, false)).collect();
            total += store.add_spans(spans).len() as u64;
        }
        let stats = store.stats();
        assert!(stats.bytes <= budget, "{} > {budget}", stats.bytes);
        assert_eq!(total, 20_000);
        assert_eq!(stats.spans_evicted + stats.spans as u64, 20_000);
        assert!(stats.spans_evicted > 0);
        // The newest are the ones kept.
        let newest = store.traces(&TraceFilter::default(), 1);
        assert_eq!(newest[0].trace_id, format!("{:032x}", 20_000));
    }
}
