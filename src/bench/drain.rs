//! The relay after a broker outage: with the broker stopped the sender keeps
//! taking writes, so a backlog builds in the outbox; once the broker is
//! started again, how soon it accepts AMQP connections, how soon after that
//! the relay sends, and how fast the backlog drains.
//!
//! The reference is Artemis's own `artemis perf producer` sending as many
//! durable messages of the same size over AMQP to the same broker, in the
//! state the relay found it: stopped and started again, sending from the
//! moment it accepts connections. A just-started broker's JVM runs its code
//! interpreted at first and compiles it as it goes: here perf's rate on one
//! broker still rose after 20 s and 36,000 messages since its start (4,900,
//! 7,100, 9,800, 12,500, then 14,000–24,000 messages a second), so a
//! reference on a warmed broker measures another broker than the relay found.
//! A warm pair is measured beside it: perf 5 s after a 3 s warm-up, then the
//! relay after a pause of that broker. Neither has a consumer: the receiver
//! is stopped through the drains and the references (it takes each backlog
//! in between).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use contracts::metrics::{OUTBOX_PENDING, OUTBOX_PUBLISHED};
use dashboard::Action;

use crate::scenario::Ctx;

pub struct Drain {
    pub backlog: usize,
    /// Broker started → it accepts AMQP connections.
    pub broker_accepting: Duration,
    /// It accepts → the relay's first message is accepted.
    pub relay_sending: Duration,
    /// Messages a second from the first to the last of the backlog.
    pub rate: f64,
    /// The drain's duration, from the first message to the last.
    pub seconds: f64,
    /// Percent of one core each component used while the backlog drained.
    pub cpu: std::collections::BTreeMap<String, f64>,
    pub ids: Vec<uuid::Uuid>,
}

/// Builds a backlog of `backlog` items with the broker down by `outage`
/// (stop, or pause: frozen, its JVM as warm as it was), undoes it, and times
/// the relay's recovery and drain. The references are [`references`].
pub async fn drain(
    ctx: &Ctx,
    client: &super::load::Client,
    backlog: usize,
    connections: usize,
    outage: Action,
) -> Result<Drain, String> {
    let receiver = ctx.roles.receiver.clone();
    ctx.act(&receiver, Action::Stop).await?;
    let measured = measure(ctx, client, backlog, connections, outage).await;
    ctx.act(&receiver, Action::Start).await?;
    measured
}

async fn measure(
    ctx: &Ctx,
    client: &super::load::Client,
    backlog: usize,
    connections: usize,
    outage: Action,
) -> Result<Drain, String> {
    let broker = ctx.roles.broker.clone();
    let back = outage.undo().ok_or_else(|| format!("`{outage}` is not an outage"))?;
    ctx.act(&broker, outage).await?;
    let ids = super::load::count(client, connections, backlog, "bench backlog").await;
    if ids.len() < backlog {
        let _ = ctx.act(&broker, back).await;
        return Err(format!(
            "the sender acknowledged {} of {backlog} items with the broker down ({outage})",
            ids.len()
        ));
    }
    let published = || async { ctx.metric(&ctx.roles.sender, OUTBOX_PUBLISHED.series).await };
    let before = published().await;
    let url = url::Url::parse(&ctx.roles.broker_url).map_err(|e| format!("the broker's URL: {e}"))?;
    ctx.act(&broker, back).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let accepting = async { accepts(&url, deadline).await.then(|| started.elapsed()) };
    let (sending, mut sent) = tokio::sync::watch::channel(false);
    let draining = async {
        let mut first = None;
        loop {
            let now = published().await - before;
            if now > 0.0 && first.is_none() {
                first = Some(started.elapsed());
                let _ = sending.send(true);
            }
            if now >= backlog as f64 {
                let _ = sending.send(true);
                return first.map(|f| (f, started.elapsed()));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // CPU from the first message on, sampled beside the drain.
    let cpu_at_first = async {
        let _ = sent.wait_for(|s| *s).await;
        super::cpu_sample(ctx).await
    };
    let (accepting, draining, cpu_before) = tokio::join!(accepting, draining, cpu_at_first);
    let accepting = accepting.ok_or("the broker did not accept AMQP connections within 300 s")?;
    let (first, done) = draining.ok_or("the backlog did not drain within 300 s")?;
    let cpu = super::cpu_between(&cpu_before, &super::cpu_sample(ctx).await);
    // Wait for the outbox gauge too: published counts only committed deletes.
    while ctx.metric(&ctx.roles.sender, OUTBOX_PENDING.series).await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = (done - first).as_secs_f64();
    Ok(Drain {
        backlog,
        broker_accepting: accepting,
        relay_sending: first.saturating_sub(accepting),
        rate: backlog as f64 / seconds.max(1e-3),
        seconds,
        cpu,
        ids,
    })
}

/// What `artemis perf producer` does on the same broker, the receiver stopped
/// again (call it once the drain's backlog was taken, so the broker holds
/// what it held before the outage).
pub struct References {
    /// The broker stopped and started, `backlog` messages sent from the moment
    /// it accepts connections: messages a second from perf's first send to
    /// its last outcome. `None` when it took less than perf's first interval
    /// (a second), too short for its report to time.
    pub restarted: Option<f64>,
    /// Then, on the broker it warmed: [`WARM_PERF`] after [`PERF_WARMUP`].
    pub warmed: f64,
    /// The broker's CPU seconds per message in that warm run (all of it,
    /// warm-up included, over all it completed), and for `artemis perf
    /// consumer` to take them all after it.
    pub broker_cost: BrokerCost,
}

pub async fn references(ctx: &Ctx, backlog: usize, scratch: &Path) -> Result<References, String> {
    let receiver = ctx.roles.receiver.clone();
    ctx.act(&receiver, Action::Stop).await?;
    let measured = async {
        let broker = ctx.roles.broker.clone();
        let url = url::Url::parse(&ctx.roles.broker_url).map_err(|e| format!("the broker's URL: {e}"))?;
        let count = ["--message-count".to_owned(), backlog.to_string()];
        // Once, perf sent its count to a just-started broker and waited for an
        // outcome 42 minutes: a run that hangs is killed, and the broker
        // restarted for a second try.
        let mut tries = 0;
        let restarted = loop {
            ctx.act(&broker, Action::Stop).await?;
            ctx.act(&broker, Action::Start).await?;
            if !accepts(&url, Instant::now() + Duration::from_secs(300)).await {
                return Err("the broker did not accept AMQP connections within 300 s".to_owned());
            }
            tries += 1;
            match perf(ctx, Side::Produce, &count, Duration::ZERO, false, scratch).await {
                Ok(report) => break whole_rate(&report),
                Err(e) if tries < 2 && e.contains(PERF_HUNG) => {
                    eprintln!("bench: {e}; the broker is restarted for a second try")
                }
                Err(e) => return Err(e),
            }
        };
        let (warmed, broker_cost) = perf_producer(ctx, WARM_PERF, scratch).await?;
        Ok(References { restarted, warmed, broker_cost })
    }
    .await;
    ctx.act(&receiver, Action::Start).await?;
    measured
}

/// Waits until the broker at `url` completes an AMQP open, every 20 ms;
/// false at `deadline`.
async fn accepts(url: &url::Url, deadline: Instant) -> bool {
    while !crate::supervisor::health::opens("apphost-bench-probe", url.clone(), Duration::from_secs(1)).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Durable messages a second `artemis perf producer` sends over AMQP to the
/// broker, warmed up (its JVM is new, the relay is not), then for `duration`,
/// of the size of the sender's events, with as many unsettled as the relay
/// allows (256). The rate is that of its intervals after the warm-up. Then
/// `artemis perf consumer` takes what it sent, and the queue is deleted.
/// With the rate, the broker's CPU seconds per message for each: taking a
/// message in (the whole producer run) and handing it out (the consumer's).
async fn perf_producer(ctx: &Ctx, duration: Duration, scratch: &Path) -> Result<(f64, BrokerCost), String> {
    let total = PERF_WARMUP + duration.max(Duration::from_secs(3));
    let warmup = ["--warmup".to_owned(), PERF_WARMUP.as_secs().to_string()];
    let before = super::cpu(ctx).await;
    let report = perf(ctx, Side::ProduceKeep, &warmup, total, false, scratch).await?;
    let produced = super::cpu(ctx).await;
    let rate = steady_rate(&report)
        .ok_or_else(|| "artemis perf producer reported no interval after its warm-up".to_owned())?;
    let sent = completed(&report);
    let consumed_report = match sent {
        Some(sent) => {
            let count = ["--message-count".to_owned(), sent.to_string()];
            perf(ctx, Side::Consume, &count, Duration::ZERO, false, scratch).await
        }
        // No count to wait for: a consumer for a few seconds empties the kept
        // queue (and deletes it); the cost of handing out stays unknown.
        None => perf(ctx, Side::Consume, &[], Duration::from_secs(3), false, scratch)
            .await
            .and(Err("artemis perf producer reported no total".to_owned())),
    };
    let consumed = super::cpu(ctx).await;
    let broker = &ctx.roles.broker;
    let per = |used: Option<f64>, count: Option<f64>| used.zip(count).map(|(u, c)| u / c);
    let cost = BrokerCost {
        taking_in: per(super::used(&before, &produced, broker), sent),
        handing_out: match consumed_report {
            Ok(r) => per(super::used(&produced, &consumed, broker), completed(&r)),
            Err(e) => {
                eprintln!("bench: the broker's cost of handing out is unknown: {e}");
                None
            }
        },
    };
    Ok((rate, cost))
}

/// All that a perf run completed (a producer) or received (a consumer),
/// from its summary; `None` for none.
fn completed(report: &[serde_json::Value]) -> Option<f64> {
    let summary = report.iter().find(|s| s["sampleType"] == "summary")?;
    summary["totalCompleted"].as_f64().or_else(|| summary["totalReceived"].as_f64()).filter(|c| *c > 0.0)
}

/// The broker's CPU seconds per durable message under `artemis perf`, whoever
/// sends it: to take it in, and to hand it out. `None` when perf reported no total.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerCost {
    pub taking_in: Option<f64>,
    pub handing_out: Option<f64>,
}

/// `artemis perf producer` at a fixed `rate` (open loop: it sends on
/// schedule, 256 unsettled at most), durable, 200-byte messages, on the
/// stack's broker for `duration` after a warm-up of [`PERF_WARMUP`]: each
/// message's time from when it was due to the broker's outcome (`Accepted`,
/// the journal written), p50 and p99 in seconds. What the broker alone takes
/// to accept what the relay sends at that rate: a floor under the outbox lag.
///
/// The warm-up is left out as the relay's is (it runs warm): perf's JVM is
/// new, and here its first second alone had a p99 of 25–56 ms against 5–9
/// ms after, which put the floor's p99 at 8.7–42.5 ms. Its summary counts the
/// warm-up too, so the figures come from its HDR interval log instead: the
/// `send` intervals after the warm-up, merged.
pub async fn accept_latency(ctx: &Ctx, rate: f64, duration: Duration, scratch: &Path) -> Result<(f64, f64), String> {
    let log = scratch.join("perf.hdr");
    let _ = std::fs::remove_file(&log);
    let args = [
        "--rate".to_owned(),
        format!("{rate:.0}"),
        "--warmup".to_owned(),
        PERF_WARMUP.as_secs().to_string(),
        "--hdr".to_owned(),
        log.display().to_string(),
    ];
    // Its rate limiter stalls after a second on a millisecond clock; this opens the microsecond one.
    perf(ctx, Side::Produce, &args, PERF_WARMUP + duration, true, scratch).await?;
    let text = std::fs::read(&log).map_err(|e| format!("artemis perf producer's HDR log {}: {e}", log.display()))?;
    let sends = merged(&text, "send")?;
    if sends.is_empty() {
        return Err("artemis perf producer measured no send after its warm-up".to_owned());
    }
    // Its histograms hold microseconds.
    let at = |q: f64| sends.value_at_quantile(q) as f64 / 1e6;
    Ok((at(0.5), at(0.99)))
}

/// The intervals tagged `tag` of an HDR interval log (as the Java
/// HdrHistogram's `HistogramLogWriter` writes it), merged into one.
fn merged(log: &[u8], tag: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    use base64::Engine;
    use hdrhistogram::serialization::{
        Deserializer,
        interval_log::{IntervalLogIterator, LogEntry},
    };
    let mut all = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(log) {
        let interval = match entry {
            Ok(LogEntry::Interval(interval)) => interval,
            Ok(_) => continue,
            Err(e) => return Err(format!("an HDR interval log that does not parse: {e:?}")),
        };
        if interval.tag().map(|t| t.as_str()) != Some(tag) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .map_err(|e| format!("an HDR interval's histogram is not base64: {e}"))?;
        let histogram: hdrhistogram::Histogram<u64> =
            deserializer.deserialize(&mut &bytes[..]).map_err(|e| format!("an HDR interval's histogram: {e:?}"))?;
        all.add(&histogram).map_err(|e| format!("merging HDR intervals: {e:?}"))?;
    }
    Ok(all)
}

/// Which `artemis perf` runs, and whether its queue outlives it.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// `perf producer`; its queue is deleted after.
    Produce,
    /// `perf producer`, its queue kept for a [`Side::Consume`] to take.
    ProduceKeep,
    /// `perf consumer`; its queue is deleted after.
    Consume,
}

/// Runs `artemis perf producer` (or `consumer`) on the stack's broker with
/// `extra` arguments (for `total`, unless zero) and returns its JSON
/// report's samples.
async fn perf(
    ctx: &Ctx,
    side: Side,
    extra: &[String],
    total: Duration,
    micro_clock: bool,
    scratch: &Path,
) -> Result<Vec<serde_json::Value>, String> {
    let name = if side == Side::Consume { "consumer" } else { "producer" };
    let url = url::Url::parse(&ctx.roles.broker_url).map_err(|e| format!("the broker's URL: {e}"))?;
    let home = local_install::artemis_home().map_err(|e| e.to_string())?;
    let artemis = home.join("bin/artemis");
    // Credentials in an owner-only argument file (picocli's @file): never on a command line.
    let args = scratch.join("artemis-credentials");
    let credentials = format!("--user={}\n--password={}\n", url.username(), url.password().unwrap_or_default());
    crate::statedir::write_private(&args, credentials.as_bytes()).map_err(|e| format!("{}: {e}", args.display()))?;
    let json = scratch.join("perf.json");
    let _ = std::fs::remove_file(&json);
    let amqp = format!("amqp://127.0.0.1:{}", url.port().unwrap_or(5672));
    let mut command = tokio::process::Command::new(&artemis);
    command
        .args(["perf", name])
        .arg(format!("@{}", args.display()))
        .args(["--protocol", "AMQP", "--url", &amqp, "--silent"])
        .args(extra)
        .args((!total.is_zero()).then(|| ["--duration".to_owned(), total.as_secs().to_string()]).into_iter().flatten());
    if side != Side::Consume {
        command.args(["--persistent", "--max-pending", "256", "--message-size", "200"]);
    }
    command.arg("--json").arg(&json).arg("queue://apphost-bench-reference").stdin(std::process::Stdio::null());
    if micro_clock {
        command.env("JAVA_ARGS_APPEND", "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED");
    }
    // A run by count has no end of its own if an outcome never comes. Its runs here take
    // seconds (16,000 messages at 3,800/s or more, or 8 s by time); one that
    // hung was waited on for 180 s at 04a5e45, a fifth of the bench's 15 minutes.
    let limit = total.max(Duration::from_secs(30)) + Duration::from_secs(30);
    // Both captured, as `output()` did before the bound.
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().map_err(|e| format!("cannot run {}: {e}", artemis.display()))?;
    let finished = tokio::time::timeout(limit, child.wait_with_output()).await;
    if side != Side::ProduceKeep || !matches!(finished, Ok(Ok(ref o)) if o.status.success()) {
        let _ = delete_queue(ctx, &artemis, &args).await;
    }
    let output = match finished {
        Ok(output) => output.map_err(|e| format!("artemis perf {name}: {e}"))?,
        Err(_) => return Err(format!("artemis perf {name} {PERF_HUNG} {} s (killed)", limit.as_secs())),
    };
    if !output.status.success() {
        return Err(format!("artemis perf {name} failed: {}", String::from_utf8_lossy(&output.stdout).trim()));
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .map_err(|e| format!("artemis perf {name}'s report: {e}"))?;
    Ok(report.as_array().cloned().unwrap_or_default())
}

/// What [`perf`]'s error says when perf did not finish in time.
const PERF_HUNG: &str = "did not finish within";

/// How long `artemis perf producer` runs before its rate counts.
pub const PERF_WARMUP: Duration = Duration::from_secs(3);

/// How long the warm reference counts, after [`PERF_WARMUP`]: five of perf's
/// one-second intervals (it was 10 s; the bench has 15 minutes in all).
pub const WARM_PERF: Duration = Duration::from_secs(5);

/// Messages a second over the intervals of a perf report after its warm-up:
/// those completed in them over the time from the last warm-up interval's end.
fn steady_rate(samples: &[serde_json::Value]) -> Option<f64> {
    let intervals: Vec<_> = samples.iter().filter(|s| s["sampleType"] == "interval").collect();
    let warm = intervals.iter().rposition(|s| s["warmup"] == true)?;
    let from = intervals[warm]["time"].as_f64()?;
    let steady = &intervals[warm + 1..];
    let to = steady.last()?["time"].as_f64()?;
    let completed: f64 = steady.iter().filter_map(|s| s["completed"].as_f64()).sum();
    (to > from).then(|| completed / ((to - from) / 1000.0))
}

/// Messages a second over a whole perf report: all it completed, from the
/// start of its first interval (its end less the interval, as long as the
/// next ones) to its summary (the last outcome).
fn whole_rate(samples: &[serde_json::Value]) -> Option<f64> {
    let times: Vec<f64> =
        samples.iter().filter(|s| s["sampleType"] == "interval").filter_map(|s| s["time"].as_f64()).collect();
    let summary = samples.iter().find(|s| s["sampleType"] == "summary")?;
    let period = match times[..] {
        [] => return None,
        [_] => 1000.0,
        [a, b, ..] => b - a,
    };
    let from = times[0] - period;
    let to = summary["time"].as_f64()?;
    let completed = summary["totalCompleted"].as_f64()?;
    (to > from && completed > 0.0).then(|| completed / ((to - from) / 1000.0))
}

async fn delete_queue(ctx: &Ctx, artemis: &Path, args: &Path) -> Result<(), String> {
    let core = ctx
        .supervisor
        .snapshot()
        .into_iter()
        .find(|s| s.name == ctx.roles.broker || s.resource == ctx.roles.broker)
        .and_then(|s| s.endpoints.iter().find(|e| e.name == "core").map(|e| e.url.clone()))
        .ok_or("the broker has no core endpoint")?;
    tokio::process::Command::new(artemis)
        .args(["queue", "delete"])
        .arg(format!("@{}", args.display()))
        .args(["--url", &core, "--name", "apphost-bench-reference", "--silent"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{merged, steady_rate, whole_rate};

    /// A real log of `artemis perf producer --rate 480 --duration 8 --warmup 3
    /// --hdr` (2.40.0): 2 warm-up intervals, then 5 whose `send` histograms
    /// its JSON report counts as 483, 485, 483, 482 and 478 messages, the
    /// slowest 93,183 µs; the warm-up's counted 484 and 512.
    const PERF_LOG: &[u8] = include_bytes!("testdata/perf-producer-480.hdr");

    #[test]
    fn the_floor_merges_the_send_intervals_after_the_warm_up_only() {
        let sends = merged(PERF_LOG, "send").unwrap();
        assert_eq!(sends.len(), 483 + 485 + 483 + 482 + 478, "the five send intervals, no warm-up one");
        // perf's histograms keep 2 significant digits: within 1 %.
        assert!(sends.max().abs_diff(93_183) < 932, "its slowest send, in µs: {}", sends.max());
        let warm_up = merged(PERF_LOG, "warmup send").unwrap();
        assert_eq!(warm_up.len(), 484 + 512);
        assert!(merged(b"Tag=send,0.1,1.0,2.0,not-base64!\n", "send").is_err(), "a broken interval is an error");
    }

    #[test]
    fn the_reference_rate_counts_only_what_follows_the_warm_up() {
        let report: serde_json::Value = serde_json::from_str(
            r#"[{"sampleType":"interval","warmup":true,"time":1000,"completed":100},
                {"sampleType":"interval","warmup":true,"time":2000,"completed":200},
                {"sampleType":"interval","warmup":false,"time":3000,"completed":900},
                {"sampleType":"interval","warmup":false,"time":4000,"completed":1100},
                {"sampleType":"summary","totalCompleted":2300}]"#,
        )
        .unwrap();
        assert_eq!(steady_rate(report.as_array().unwrap()), Some(1000.0));
        assert_eq!(steady_rate(&report.as_array().unwrap()[..2]), None, "nothing after the warm-up");
    }

    #[test]
    fn the_restarted_reference_counts_from_the_first_send_to_the_last_outcome() {
        let report: serde_json::Value = serde_json::from_str(
            r#"[{"sampleType":"interval","warmup":false,"time":11000,"completed":1000},
                {"sampleType":"interval","warmup":false,"time":12000,"completed":3000},
                {"sampleType":"summary","time":12500,"totalCompleted":6000}]"#,
        )
        .unwrap();
        let samples = report.as_array().unwrap();
        // Sending from 10,000 ms (the first interval's start) to 12,500: 6,000 in 2.5 s.
        assert_eq!(whole_rate(samples), Some(2400.0));
        assert_eq!(whole_rate(&samples[2..]), None, "no interval: no start to count from");
    }
}
