//! The relay after a broker outage: with the broker stopped the sender keeps
//! taking writes, so a backlog builds in the outbox; once the broker is
//! started again, how soon it accepts AMQP connections, how soon after that
//! the relay sends, and how fast the backlog drains. The reference is
//! Artemis's own `artemis perf producer` sending as many durable messages of
//! the same size over AMQP to the same broker. Neither has a consumer: the
//! receiver is stopped from before the outage until after the reference, so
//! both measure a producer and the broker alone (it then takes the backlog).

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
    /// `artemis perf producer`, durable, same broker, same message size.
    pub reference: f64,
    /// Percent of one core each component used while the backlog drained.
    pub cpu: std::collections::BTreeMap<String, f64>,
    pub ids: Vec<uuid::Uuid>,
}

/// Builds a backlog of `backlog` items with the broker stopped, starts it,
/// and times the relay's recovery and drain.
pub async fn drain(
    ctx: &Ctx,
    client: &reqwest::Client,
    sender: &str,
    backlog: usize,
    connections: usize,
    scratch: &Path,
) -> Result<Drain, String> {
    let receiver = ctx.roles.receiver.clone();
    ctx.act(&receiver, Action::Stop).await?;
    let measured = measure(ctx, client, sender, backlog, connections, scratch).await;
    ctx.act(&receiver, Action::Start).await?;
    measured
}

async fn measure(
    ctx: &Ctx,
    client: &reqwest::Client,
    sender: &str,
    backlog: usize,
    connections: usize,
    scratch: &Path,
) -> Result<Drain, String> {
    let broker = ctx.roles.broker.clone();
    ctx.act(&broker, Action::Stop).await?;
    let ids = super::load::count(client, sender, connections, backlog, "bench backlog").await;
    if ids.len() < backlog {
        return Err(format!("the sender acknowledged {} of {backlog} items with the broker stopped", ids.len()));
    }
    let published = || async { ctx.metric(&ctx.roles.sender, OUTBOX_PUBLISHED.series).await };
    let before = published().await;
    let url = url::Url::parse(&ctx.roles.broker_url).map_err(|e| format!("the broker's URL: {e}"))?;
    ctx.act(&broker, Action::Start).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let accepting = async {
        while !crate::supervisor::health::opens("apphost-bench-probe", url.clone(), Duration::from_secs(1)).await {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(started.elapsed())
    };
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
    // CPU from the first message on, sampled beside the drain (a sample takes the engine a while).
    let cpu_at_first = async {
        let _ = sent.wait_for(|s| *s).await;
        (super::cpu(ctx).await, Instant::now())
    };
    let (accepting, draining, (cpu_before, sampled)) = tokio::join!(accepting, draining, cpu_at_first);
    let accepting = accepting.ok_or("the broker did not accept AMQP connections within 300 s")?;
    let (first, done) = draining.ok_or("the backlog did not drain within 300 s")?;
    let cpu = super::cpu_since(ctx, &cpu_before, sampled.elapsed().as_secs_f64()).await;
    // Wait for the outbox gauge too: published counts only committed deletes.
    while ctx.metric(&ctx.roles.sender, OUTBOX_PENDING.series).await > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = (done - first).as_secs_f64();
    let reference = perf_producer(ctx, Duration::from_secs_f64(seconds.ceil()), scratch).await?;
    Ok(Drain {
        backlog,
        broker_accepting: accepting,
        relay_sending: first.saturating_sub(accepting),
        rate: backlog as f64 / seconds.max(1e-3),
        reference,
        cpu,
        ids,
    })
}

/// Durable messages a second `artemis perf producer` sends over AMQP to the
/// broker, warmed up (its JVM is new, the relay is not), then for about as
/// long as the drain took, of the size of the sender's events, with as many
/// unsettled as the relay allows (256). The rate is that of its intervals
/// after the warm-up. Its queue is deleted after.
async fn perf_producer(ctx: &Ctx, duration: Duration, scratch: &Path) -> Result<f64, String> {
    let total = PERF_WARMUP + duration.max(Duration::from_secs(3));
    let warmup = ["--warmup".to_owned(), PERF_WARMUP.as_secs().to_string()];
    let report = perf(ctx, &warmup, total, false, scratch).await?;
    steady_rate(&report).ok_or_else(|| "artemis perf producer reported no interval after its warm-up".to_owned())
}

/// `artemis perf producer` at a fixed `rate` (open loop: it sends on
/// schedule, 256 unsettled at most), durable, 200-byte messages, on the
/// stack's broker for `duration`: each message's time from its send to the
/// broker's outcome (`Accepted`, the journal written), p50 and p99 in
/// seconds. What the broker alone takes to accept what the relay sends at
/// that rate: a floor under the outbox lag.
pub async fn accept_latency(ctx: &Ctx, rate: f64, duration: Duration, scratch: &Path) -> Result<(f64, f64), String> {
    let args = ["--rate".to_owned(), format!("{rate:.0}")];
    // Its rate limiter stalls after a second on a millisecond clock; this opens the microsecond one.
    let report = perf(ctx, &args, duration, true, scratch).await?;
    let summary = report.iter().find(|s| s["sampleType"] == "summary").ok_or("artemis perf producer: no summary")?;
    let at = |q: &str| summary["totalSendTime"][q].as_f64().map(|micros| micros / 1e6);
    match (at("50"), at("99"), summary["totalCompleted"].as_u64()) {
        (Some(p50), Some(p99), Some(n)) if n > 0 => Ok((p50, p99)),
        _ => Err(format!("artemis perf producer measured no send: {summary}")),
    }
}

/// Runs `artemis perf producer` on the stack's broker with `extra` arguments
/// and returns its JSON report's samples. Its queue is deleted after.
async fn perf(
    ctx: &Ctx,
    extra: &[String],
    total: Duration,
    micro_clock: bool,
    scratch: &Path,
) -> Result<Vec<serde_json::Value>, String> {
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
        .args(["perf", "producer"])
        .arg(format!("@{}", args.display()))
        .args(["--protocol", "AMQP", "--url", &amqp, "--persistent", "--silent"])
        .args(extra)
        .args(["--duration", &total.as_secs().to_string()])
        .args(["--max-pending", "256", "--message-size", "200"])
        .arg("--json")
        .arg(&json)
        .arg("queue://apphost-bench-reference")
        .stdin(std::process::Stdio::null());
    if micro_clock {
        command.env("JAVA_ARGS_APPEND", "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED");
    }
    let output = command.output().await.map_err(|e| format!("cannot run {}: {e}", artemis.display()))?;
    let _ = delete_queue(ctx, &artemis, &args).await;
    if !output.status.success() {
        return Err(format!("artemis perf producer failed: {}", String::from_utf8_lossy(&output.stdout).trim()));
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .map_err(|e| format!("artemis perf producer's report: {e}"))?;
    Ok(report.as_array().cloned().unwrap_or_default())
}

/// How long `artemis perf producer` runs before its rate counts.
const PERF_WARMUP: Duration = Duration::from_secs(3);

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
    use super::steady_rate;

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
}
