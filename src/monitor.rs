//! The monitor samples a running app every couple of seconds: each
//! instance's CPU and memory (from its runtime), and the `/metrics` of the
//! resources `dashboard.metrics_from` names, turned into the outbox series
//! the dashboard draws (rates from counters, latency quantiles from
//! histogram buckets over a recent window). Reading never blocks sampling.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use contracts::metrics::{
    OUTBOX_BROKER_CONNECTED, OUTBOX_DEAD_LETTERED, OUTBOX_OLDEST_PENDING_SECONDS, OUTBOX_PENDING, OUTBOX_PUBLISHED,
    RECEIVER_DUPLICATES, RECEIVER_END_TO_END_SECONDS, RECEIVER_PROCESSED, RECEIVER_REJECTED,
};
use dashboard::{Outbox, Series, SeriesKind};
use tokio_util::sync::CancellationToken;

use crate::{plan::Instance, runtime::Usage, supervisor::Supervisor};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Points kept per series: ten minutes.
const KEPT: usize = 300;
/// Latency quantiles cover the observations of about this long.
const WINDOW: Duration = Duration::from_secs(30);

/// One scrape of every source, summed.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    values: HashMap<String, f64>,
    /// Histogram name → upper bound → cumulative count.
    buckets: HashMap<String, BTreeMap<Bound, f64>>,
}

/// A bucket's upper bound, ordered as a number (`+Inf` last).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound(f64);
impl Eq for Bound {}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Scrape {
    /// The `q` quantile of histogram `series`'s observations since `before`.
    pub fn quantile_since(&self, before: &Scrape, series: &str, q: f64) -> Option<f64> {
        quantile(q, self.buckets.get(series)?, before.buckets.get(series))
    }

    /// Adds the Prometheus text exposition `text` to this scrape.
    pub fn add(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            if let Some(histogram) = name.strip_suffix("_bucket") {
                let le = labels
                    .split(',')
                    .find_map(|l| l.trim().strip_prefix("le=\""))
                    .and_then(|v| v.trim_end_matches(['"', '}']).parse::<f64>().ok());
                if let Some(le) = le {
                    *self.buckets.entry(histogram.to_owned()).or_default().entry(Bound(le)).or_default() += value;
                }
                continue;
            }
            *self.values.entry(name.to_owned()).or_default() += value;
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// The `q` quantile of the observations between two snapshots of one
/// histogram, interpolated inside its bucket as Prometheus does; `None`
/// without observations.
fn quantile(q: f64, now: &BTreeMap<Bound, f64>, before: Option<&BTreeMap<Bound, f64>>) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        now.iter().map(|(b, c)| (b.0, c - before.and_then(|p| p.get(b)).copied().unwrap_or(0.0))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &delta {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = count - lower.1;
            let fraction = if inside > 0.0 { (rank - lower.1) / inside } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    None
}

/// One point of every outbox series.
#[derive(Debug, Default, Clone, Copy)]
struct Point {
    pending: Option<f64>,
    oldest: Option<f64>,
    published: Option<f64>,
    connected: Option<f64>,
    processed: Option<f64>,
    duplicates: Option<f64>,
    rejected: Option<f64>,
    dead_lettered: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

#[derive(Default)]
struct Samples {
    /// Instance → (percent of a core, resident bytes).
    usage: HashMap<String, (Option<f64>, u64)>,
    cpu_before: HashMap<String, (Instant, f64)>,
    points: VecDeque<Point>,
    scrapes: VecDeque<(Instant, Scrape)>,
}

pub struct Monitor {
    samples: Mutex<Samples>,
    /// Bumped after every sample.
    version: AtomicU64,
    /// Whether any resource feeds the outbox pane.
    has_sources: bool,
}

impl Monitor {
    /// Starts sampling `supervisor`'s instances in `tasks` until `stop`;
    /// `sources` are the instances whose `/metrics` feed the outbox series.
    pub fn spawn(
        supervisor: Arc<Supervisor>,
        sources: Vec<Instance>,
        stop: CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Arc<Self> {
        let monitor =
            Arc::new(Self { samples: Mutex::default(), version: AtomicU64::new(0), has_sources: !sources.is_empty() });
        let this = monitor.clone();
        tasks.spawn(async move {
            let client = crate::loopback::client(Some(Duration::from_secs(1)));
            let urls: Vec<String> = sources
                .iter()
                .filter_map(|i| i.port("http"))
                .map(|p| format!("http://127.0.0.1:{p}/metrics"))
                .collect();
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (usage, scrape) = tokio::join!(supervisor.usage(), scrape(&client, &urls));
                this.record(usage, scrape);
            }
        });
        monitor
    }

    fn record(&self, usage: HashMap<String, Usage>, scrape: Option<Scrape>) {
        let now = Instant::now();
        let mut s = self.samples.lock().expect("monitor lock");
        let mut cpu_before = std::mem::take(&mut s.cpu_before);
        s.usage = usage
            .into_iter()
            .map(|(name, u)| {
                let cpu = cpu_before.get(&name).and_then(|(at, before)| {
                    let elapsed = now.duration_since(*at).as_secs_f64();
                    // A restart resets the counter: no rate across it.
                    (elapsed > 0.0 && u.cpu_seconds >= *before).then(|| (u.cpu_seconds - before) / elapsed * 100.0)
                });
                cpu_before.insert(name.clone(), (now, u.cpu_seconds));
                (name, (cpu, u.memory_bytes))
            })
            .collect();
        s.cpu_before = cpu_before;
        if self.has_sources {
            let point = match &scrape {
                None => Point::default(),
                Some(scrape) => {
                    let previous = s.scrapes.back();
                    let rate = |name: &str| {
                        let (at, before) = previous?;
                        let now_value = scrape.get(name)?;
                        let elapsed = now.duration_since(*at).as_secs_f64();
                        let delta = now_value - before.get(name).unwrap_or(0.0);
                        // A counter that went down belongs to a restarted service.
                        Some(if delta >= 0.0 { delta } else { now_value } / elapsed.max(0.001))
                    };
                    let window_start =
                        s.scrapes.iter().find(|(at, _)| now.duration_since(*at) <= WINDOW).map(|(_, sc)| sc);
                    let latency = |q| {
                        let hist = scrape.buckets.get(RECEIVER_END_TO_END_SECONDS.series)?;
                        quantile(q, hist, window_start.and_then(|w| w.buckets.get(RECEIVER_END_TO_END_SECONDS.series)))
                    };
                    Point {
                        pending: scrape.get(OUTBOX_PENDING.series),
                        oldest: scrape.get(OUTBOX_OLDEST_PENDING_SECONDS.series),
                        published: rate(OUTBOX_PUBLISHED.series),
                        connected: scrape.get(OUTBOX_BROKER_CONNECTED.series).map(|c| if c >= 1.0 { 1.0 } else { 0.0 }),
                        processed: rate(RECEIVER_PROCESSED.series),
                        duplicates: scrape.get(RECEIVER_DUPLICATES.series),
                        rejected: scrape.get(RECEIVER_REJECTED.series),
                        dead_lettered: scrape.get(OUTBOX_DEAD_LETTERED.series),
                        p50: latency(0.5),
                        p99: latency(0.99),
                    }
                }
            };
            s.points.push_back(point);
            if s.points.len() > KEPT {
                s.points.pop_front();
            }
            if let Some(scrape) = scrape {
                s.scrapes.push_back((now, scrape));
                while s.scrapes.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW + INTERVAL * 2) {
                    s.scrapes.pop_front();
                }
            }
        }
        drop(s);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// `(percent of one core, resident bytes)` of `instance`, when sampled.
    pub fn usage(&self, instance: &str) -> Option<(Option<f64>, u64)> {
        self.samples.lock().expect("monitor lock").usage.get(instance).copied()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The outbox series; `None` when no resource feeds them.
    pub fn outbox(&self) -> Option<Outbox> {
        if !self.has_sources {
            return None;
        }
        let s = self.samples.lock().expect("monitor lock");
        let series = |kind, f: fn(&Point) -> Option<f64>| Series { kind, points: s.points.iter().map(f).collect() };
        Some(Outbox {
            interval_seconds: INTERVAL.as_secs_f64(),
            series: vec![
                series(SeriesKind::Pending, |p| p.pending),
                series(SeriesKind::OldestPending, |p| p.oldest),
                series(SeriesKind::Published, |p| p.published),
                series(SeriesKind::Relay, |p| p.connected),
                series(SeriesKind::DeadLettered, |p| p.dead_lettered),
                series(SeriesKind::Processed, |p| p.processed),
                series(SeriesKind::Duplicates, |p| p.duplicates),
                series(SeriesKind::Rejected, |p| p.rejected),
                series(SeriesKind::EndToEndP50, |p| p.p50),
                series(SeriesKind::EndToEndP99, |p| p.p99),
            ],
        })
    }
}

/// Every source's `/metrics` summed; `None` when none answered.
pub(crate) async fn scrape(client: &reqwest::Client, urls: &[String]) -> Option<Scrape> {
    let texts = futures::future::join_all(urls.iter().map(|url| async move {
        let response = client.get(url).send().await.ok()?.error_for_status().ok()?;
        response.text().await.ok()
    }))
    .await;
    let mut scrape = Scrape::default();
    let mut any = false;
    for text in texts.into_iter().flatten() {
        scrape.add(&text);
        any = true;
    }
    any.then_some(scrape)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP receiver_end_to_end_seconds x\n\
        # TYPE receiver_end_to_end_seconds histogram\n\
        receiver_end_to_end_seconds_sum 1.5\n\
        receiver_end_to_end_seconds_count 100\n\
        receiver_end_to_end_seconds_bucket{le=\"0.01\"} 50\n\
        receiver_end_to_end_seconds_bucket{le=\"0.1\"} 90\n\
        receiver_end_to_end_seconds_bucket{le=\"1.0\"} 100\n\
        receiver_end_to_end_seconds_bucket{le=\"+Inf\"} 100\n\
        outbox_pending 7\n\
        outbox_publish_failures_total{outcome=\"rejected\"} 2\n\
        outbox_publish_failures_total{outcome=\"released\"} 3\n\
        # EOF\n";

    #[test]
    fn scrapes_sum_labels_and_read_histograms() {
        let mut scrape = Scrape::default();
        scrape.add(TEXT);
        assert_eq!(scrape.get("outbox_pending"), Some(7.0));
        assert_eq!(scrape.get("outbox_publish_failures_total"), Some(5.0));
        let hist = &scrape.buckets["receiver_end_to_end_seconds"];
        assert_eq!(quantile(0.5, hist, None), Some(0.01));
        // rank 99 lies 9/10 into the (0.1, 1.0] bucket.
        assert!((quantile(0.99, hist, None).unwrap() - 0.91).abs() < 1e-9);
    }

    #[test]
    fn quantiles_cover_only_the_window() {
        let mut before = Scrape::default();
        before.add(TEXT);
        let mut now = Scrape::default();
        now.add(&TEXT.replace("} 100\n", "} 200\n"));
        // The only new observations are the 100 in (0.1, 1.0].
        let q = quantile(
            0.5,
            &now.buckets["receiver_end_to_end_seconds"],
            Some(&before.buckets["receiver_end_to_end_seconds"]),
        )
        .unwrap();
        assert!((q - 0.55).abs() < 1e-9, "{q}");
        assert_eq!(
            quantile(
                0.5,
                &before.buckets["receiver_end_to_end_seconds"],
                Some(&before.buckets["receiver_end_to_end_seconds"])
            ),
            None
        );
    }
}
