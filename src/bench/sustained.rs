//! Sustained throughput: open-loop load at a fixed share of the `pgbench`
//! figure (or the closed loop's, if less: [`offered`]) for minutes, the
//! end-to-end rate the receiver keeps up with and whether the outbox's
//! backlog grows; then the same with the seed's relay settings (a sender
//! started by hand with the same variables, as a user could), for the
//! speed-up over it.

use std::time::{Duration, Instant};

use contracts::metrics::OUTBOX_PENDING;
use dashboard::Action;

use crate::scenario::Ctx;

/// The relay settings the project started from.
pub const SEED: [(&str, &str); 3] =
    [("OUTBOX_POLL_INTERVAL", "5s"), ("OUTBOX_BATCH_SIZE", "50"), ("OUTBOX_MAX_IN_FLIGHT", "1")];

/// The goal: an end-to-end rate this share of the `pgbench` figure.
pub const GOAL: f64 = 0.6;

/// The rate a sustained run offers: the goal's, unless the closed loop took
/// less. Open-loop load beyond what the sender takes at its own pace can only
/// be refused (503); on this machine the load generator then takes the CPU
/// the stack needs, so such a run measures overload, not what the stack
/// holds: at dce2a5d, 5,482/s offered (0.6 × `pgbench`, above the 2,681/s
/// CPU ceiling) gave 1,128 items/s end to end against 2,387 req/s in the
/// closed loop.
pub fn offered(pgbench: f64, closed: Option<f64>) -> f64 {
    let goal = pgbench * GOAL;
    closed.map_or(goal, |c| c.min(goal)).max(1.0).round()
}

/// How long after the load the items still arriving count toward its rate: a
/// pipeline that keeps up has delivered all within moments; one that does not
/// (the seed's relay) delivers at its steady rate meanwhile, so waiting longer
/// changes its figure little and costs the bench that time (it was 30 s).
const SETTLE: Duration = Duration::from_secs(5);

pub struct Sustained {
    pub offered: f64,
    /// Items the receiver stored a second, over the run (until all were in, or the limit).
    pub end_to_end: f64,
    /// The outbox's pending rows: the most seen, and at the end of the load.
    pub pending_max: f64,
    pub pending_end: f64,
    pub ids: Vec<uuid::Uuid>,
    /// Requests not acknowledged, by why (`load::Run::why`), and not sent on time.
    pub why: std::collections::BTreeMap<String, usize>,
    pub not_sent: usize,
}

/// `rate` POSTs a second for `duration`; the rate items reached the
/// receiver, counted until every one had (or SETTLE after the load).
pub async fn run(
    ctx: &Ctx,
    client: &reqwest::Client,
    sender: &str,
    rate: f64,
    duration: Duration,
) -> Result<Sustained, String> {
    let began = Instant::now();
    // Sampled beside the load, never in its way: both are polled by the same join.
    let done = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        let run = super::load::open(client, sender, rate, duration, 8192, "bench sustained").await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        run
    };
    let sampler = async {
        let mut most: f64 = 0.0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(ctx.metric(&ctx.roles.sender, OUTBOX_PENDING.series).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        most
    };
    let (run, pending_max) = tokio::join!(load, sampler);
    let pending_end = ctx.metric(&ctx.roles.sender, OUTBOX_PENDING.series).await;
    // Delivered within the load's time and SETTLE more at most: a pipeline that keeps up is
    // done moments after the load; one that does not delivers at its steady rate meanwhile.
    let missing = super::missing_after(ctx, &run.ids, Instant::now() + SETTLE).await?;
    let seconds = began.elapsed().as_secs_f64();
    let delivered = run.ids.len() - missing.len();
    let pending_max = pending_max.max(pending_end);
    Ok(Sustained {
        offered: rate,
        end_to_end: delivered as f64 / seconds,
        pending_max,
        pending_end,
        ids: run.ids,
        why: run.why,
        not_sent: run.not_sent,
    })
}

/// The same run against a sender started by hand with the stack's variables
/// and the seed's relay settings; the stack's own sender is back after.
pub async fn seed(
    ctx: &Ctx,
    client: &reqwest::Client,
    sender: &str,
    instance: &crate::plan::Instance,
    rate: f64,
    duration: Duration,
) -> Result<Sustained, String> {
    let seed = |env: &mut Vec<(String, String)>| env.extend(SEED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    by_hand(ctx, client, &[instance], seed, async || run(ctx, client, sender, rate, duration).await).await
}

/// Runs `body` while `instances` run by hand, as a user could start them:
/// each is stopped in the stack and started again from the binary it ran,
/// with its variables as `change` leaves them; after `body`, each is
/// stopped and the stack's own started again, healthy before this returns.
pub async fn by_hand<T>(
    ctx: &Ctx,
    client: &reqwest::Client,
    instances: &[&crate::plan::Instance],
    change: impl Fn(&mut Vec<(String, String)>),
    body: impl AsyncFnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let mut children = Vec::new();
    let started = async {
        for instance in instances {
            let name = instance.name.clone();
            let pid = ctx
                .supervisor
                .snapshot()
                .into_iter()
                .find(|s| s.name == name)
                .and_then(|s| s.id?.strip_prefix("pid ")?.parse::<u32>().ok())
                .ok_or_else(|| format!("`{name}` runs as no process this benchmark can start again by hand"))?;
            let binary =
                std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("the binary of `{name}`: {e}"))?;
            let url = ctx.url(&name)?;
            ctx.act(&name, Action::Stop).await?;
            let mut env = instance.env.clone();
            change(&mut env);
            // As the process runtime does: apphost's environment, then the instance's; what
            // `change` took away goes from both.
            let mut command = tokio::process::Command::new(&binary);
            for (gone, _) in instance.env.iter().filter(|(k, _)| !env.iter().any(|(e, _)| e == k)) {
                command.env_remove(gone);
            }
            command.envs(env);
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            command.process_group(0).kill_on_drop(true);
            children.push(command.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))?);
            let ready = Instant::now() + Duration::from_secs(60);
            while !client.get(format!("{url}/health/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
                if Instant::now() > ready {
                    return Err(format!("`{name}` started by hand was not ready within 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
    .await;
    let result = match started {
        Ok(()) => body().await,
        Err(e) => Err(e),
    };
    // Whatever they left (a sender's outbox), the stack's own take on.
    for mut child in children {
        if let Some(pid) = child.id() {
            // SAFETY: a group this benchmark made for the child it started, which it still holds.
            unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        let _ = child.kill().await;
    }
    for instance in instances {
        ctx.act(&instance.name, Action::Start).await?;
    }
    if !ctx.wait_all_healthy(Duration::from_secs(120)).await {
        return Err("the stack was not healthy again within 120 s of a run by hand".to_owned());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::offered;

    #[test]
    fn a_sustained_run_offers_the_goal_unless_the_closed_loop_took_less() {
        assert_eq!(offered(1000.0, None), 600.0);
        assert_eq!(offered(1000.0, Some(900.0)), 600.0);
        assert_eq!(offered(9137.0, Some(2387.4)), 2387.0);
    }
}
