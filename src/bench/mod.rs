//! `apphost bench`: the outbox pipeline measured against references taken in
//! the same invocation, on the same machine, written to `docs/benchmarks.md`.
//! Not a test: nothing here asserts a time; the figures are medians of a few
//! runs and the ratios to their references are what a reader compares.
//!
//! - `pgbench`: the reference for the sender's write path;
//! - `load`: closed-loop and open-loop HTTP load with HDR histograms;
//! - here: the runs, CPU per component, delivery checks, the report.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::scenario::{Ctx, Report};

mod chart;
mod drain;
mod load;
mod pgbench;
mod startup;
mod sustained;
mod wire;

#[derive(Debug, Clone)]
pub struct Options {
    /// Where the report goes.
    pub out: PathBuf,
    /// Runs of each measurement; the report gives their median.
    pub runs: usize,
    /// How long each run lasts: 6 s (2,880 items at 480/s, the p99 the 29th
    /// slowest). It was 10 s, then 8 s: the bench took 15 min 39 s at
    /// e6c3489 with 97 s of build, and a build of the services (and apphost)
    /// after a change adds up to 141 s to the 15 minutes it has.
    pub seconds: Duration,
    /// An uncounted closed loop before the first counted one: the broker's JVM
    /// compiles its hot paths in the first seconds of load, which made a closed
    /// loop's first runs the broker's warm-up rather than the pipeline's figure.
    pub warm_up: Duration,
    /// Connections of the closed-loop run and clients of `pgbench`.
    pub connections: usize,
    /// Offered rates of the open-loop runs in POSTs a second, whatever the machine
    /// (the goals were stated at 480/s), ...
    pub rates: Vec<f64>,
    /// ... and as fractions of the `pgbench` figure.
    pub fractions: Vec<f64>,
    /// Items written with the broker stopped, for the drain.
    pub backlog: usize,
    /// How long each step of the search for the sustained run's rate lasts.
    pub step: Duration,
    /// How long the sustained run with the stack's settings lasts ...
    pub sustained: Duration,
    /// ... and the one with the seed's relay settings: shorter. Where that
    /// relay cannot keep up, its backlog grows meanwhile, which slows it, so
    /// a shorter run flatters the seed, never the speed-up: at c5184b0 its
    /// rate was 900/s over 40 s and 772/s over 60 s (654/s over 300 s at
    /// d60ac9d), so it stays at 60 s.
    pub seed: Duration,
    /// The command line that produced the report, for its readers.
    pub command: String,
    /// `release` or `debug`: how the services were built.
    pub profile: &'static str,
    /// Only these parts (all when empty). A partial run writes no report:
    /// its figures are in its notes, for trying a change quickly.
    pub only: Vec<Part>,
    /// When the invocation began, for how long the whole took.
    pub began: Instant,
}

/// A part of the benchmark, for `apphost bench --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// `pgbench`, the write path's reference (and the receiver's statements, for the references' costs)
    Pgbench,
    /// The closed loop: `POST` max throughput.
    Closed,
    /// The open loops at fixed offered rates, with each stage of a message's time.
    Open,
    /// The floor under the outbox lag: its two commits alone.
    Floor,
    /// The services with OTLP on versus off.
    Telemetry,
    /// The relay's drain of a backlog after a broker outage, against `artemis perf producer`
    /// (and `consumer`, for the broker's CPU per message).
    Drain,
    /// One broker alone to active, the start-up's reference.
    Startup,
    /// Five minutes at the most the stack held in steps of 10 s (shares of the
    /// closed loop's figure, none above 0.62 × `pgbench`, the goal and a little more) with the stack's
    /// settings, one with the seed's.
    Sustained,
}

impl Options {
    /// The full benchmark (`quick`: seconds, to show in CI that it still runs).
    pub fn new(quick: bool, out: PathBuf, command: String, profile: &'static str) -> Self {
        if quick {
            Self {
                out,
                runs: 1,
                seconds: Duration::from_secs(2),
                warm_up: Duration::from_secs(1),
                connections: 4,
                rates: vec![],
                fractions: vec![0.05],
                backlog: 1000,
                step: Duration::from_secs(1),
                sustained: Duration::from_secs(5),
                seed: Duration::from_secs(5),
                command,
                profile,
                only: Vec::new(),
                began: Instant::now(),
            }
        } else {
            Self {
                out,
                runs: 3,
                seconds: Duration::from_secs(6),
                warm_up: Duration::from_secs(WARM_UP_SECONDS),
                connections: 32,
                rates: vec![480.0],
                fractions: vec![0.25],
                backlog: 16_000,
                step: Duration::from_secs(10),
                sustained: Duration::from_secs(300),
                seed: Duration::from_secs(60),
                command,
                profile,
                only: Vec::new(),
                began: Instant::now(),
            }
        }
    }

    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// One drain run's figures (rates in messages a second, times in seconds).
struct DrainRun {
    /// The relay after a stop, and `artemis perf producer` on the broker
    /// restarted (NaN: too short to time).
    relay: f64,
    restarted: f64,
    /// `artemis perf producer` on the warmed broker, and the relay after a pause of it.
    warmed: f64,
    relay_warm: f64,
    accepting: f64,
    sending: f64,
    /// The broker's CPU seconds per message under perf on the warmed broker.
    broker_cost: drain::BrokerCost,
}

/// The table's figures at one offered rate over its runs: each latency the
/// median (outbox lag in seconds, end to end and `POST` answer in µs), the
/// requests not sent on time or failed the sum.
#[derive(Default)]
struct OpenFigures {
    lag_p50: Option<f64>,
    lag_p99: Option<f64>,
    e2e_p50: u64,
    e2e_p99: u64,
    e2e_max: u64,
    http_p50: u64,
    http_p99: u64,
    not_sent: usize,
    why: BTreeMap<String, usize>,
}

impl OpenFigures {
    fn of(runs: &[OpenLoop]) -> Self {
        let lag = |g: fn(&OpenLoop) -> Option<f64>| {
            let values: Vec<f64> = runs.iter().filter_map(g).collect();
            (!values.is_empty()).then(|| median(&values))
        };
        let micros =
            |g: &dyn Fn(&OpenLoop) -> u64| median(&runs.iter().map(|r| g(r) as f64).collect::<Vec<_>>()) as u64;
        Self {
            lag_p50: lag(|r| r.lag_p50),
            lag_p99: lag(|r| r.lag_p99),
            e2e_p50: micros(&|r| r.end_to_end.value_at_quantile(0.5)),
            e2e_p99: micros(&|r| r.end_to_end.value_at_quantile(0.99)),
            e2e_max: micros(&|r| r.end_to_end.max()),
            http_p50: micros(&|r| r.http.value_at_quantile(0.5)),
            http_p99: micros(&|r| r.http.value_at_quantile(0.99)),
            not_sent: runs.iter().map(|r| r.not_sent).sum(),
            why: runs.iter().fold(BTreeMap::new(), |mut all, r| {
                load::add_why(&mut all, &r.why);
                all
            }),
        }
    }
}

/// What the report says of one offered rate.
struct OpenLoop {
    offered: f64,
    http: Histogram<u64>,
    end_to_end: Histogram<u64>,
    lag_p50: Option<f64>,
    lag_p99: Option<f64>,
    /// Each stage of a message's time: its label, p50 and p99 in seconds.
    stages: Vec<(&'static str, Option<f64>, Option<f64>)>,
    cpu: BTreeMap<String, f64>,
    /// Write transactions in the sender's and the receiver's database, until the receiver had every item.
    transactions: Option<[i64; 2]>,
    not_sent: usize,
    why: BTreeMap<String, usize>,
    /// Set on the run that stands for its rate: the table's figures over all its runs.
    figures: OpenFigures,
}

/// The stages of a message's time (`docs/contracts.md`): label, histogram,
/// and whether the receiver (not the sender) exports it.
const STAGES: [(&str, contracts::metrics::Metric, bool); 6] = {
    use contracts::metrics::*;
    [
        ("waiting in the outbox", OUTBOX_WAIT_SECONDS, false),
        ("relay send (credit, in-flight window)", OUTBOX_SEND_SECONDS, false),
        ("broker accept", OUTBOX_ACCEPT_SECONDS, false),
        ("relay send → the receiver has it", RECEIVER_DELIVERY_SECONDS, true),
        ("receiver batch wait", RECEIVER_BATCH_WAIT_SECONDS, true),
        ("receiver commit", RECEIVER_COMMIT_SECONDS, true),
    ]
};

/// One closed-loop run, its CPU counted from its start until the receiver
/// had all its items.
struct ClosedRun {
    rate: f64,
    /// Percent of one core, each component, over `seconds`.
    cpu: BTreeMap<String, f64>,
    seconds: f64,
    items: usize,
    /// How long after the loop the last of its items was delivered.
    delivered_after: f64,
    /// Write transactions in the sender's and the receiver's database until then.
    transactions: Option<[i64; 2]>,
}

impl ClosedRun {
    /// CPU seconds one item cost, each component.
    fn per_item(&self) -> BTreeMap<String, f64> {
        let items = self.items.max(1) as f64;
        self.cpu.iter().map(|(name, pct)| (name.clone(), pct / 100.0 * self.seconds / items)).collect()
    }
}

/// The figures and the checks behind them.
#[derive(Default)]
struct Figures {
    pgbench: Vec<f64>,
    /// The sender's database's CPU seconds per `pgbench` transaction, per run.
    pgbench_db_per_tx: Vec<f64>,
    /// The receiver's database's CPU seconds per message under the receiver's
    /// statements (`pgbench`, transactions of [`pgbench::RECEIVER_BATCH`]).
    receiver_db_per_message: Vec<f64>,
    /// The load generator's and the sender's CPU seconds per `GET /health/live`:
    /// an HTTP round trip with no body and no database.
    http_per_request: Vec<f64>,
    closed: Vec<f64>,
    /// The closed-loop run whose rate is the median.
    closed_run: Option<ClosedRun>,
    /// What that run paid per item in the two components the references
    /// measure alone, in ms: the sender's database and the broker.
    paid: Option<Paid>,
    open: Vec<OpenLoop>,
    /// The median run by drain rate.
    drain: Option<drain::Drain>,
    drains: Vec<DrainRun>,
    /// Seconds one broker alone took to be active, per run.
    broker_alone: Vec<f64>,
    /// How that broker was started, for the report.
    broker_reference: String,
    /// How the stack's broker was set up: kept from an earlier `up`, or made at this one.
    broker_setup: &'static str,
    /// The settings the figures were taken with: the services' own start
    /// lines (their effective tuning) and the broker's JVM arguments.
    settings: Vec<String>,
    /// The steps that found the sustained run's rate.
    steps: Vec<sustained::Step>,
    /// Sustained load with the stack's settings, then with the seed's.
    sustained: Option<(sustained::Sustained, sustained::Sustained)>,
    /// At the lowest offered rate, per run: the sender's transaction alone
    /// (`pgbench --rate`, start → commit) and the broker alone (`artemis perf
    /// producer --rate`, send → Accepted), p50 and p99 in seconds.
    floor: Vec<Floor>,
    /// The services started by hand without OTLP, per run: closed-loop
    /// req/s, and at the lowest offered rate the end-to-end and `POST` p99 (µs).
    telemetry_off: Vec<(f64, u64, u64)>,
    acknowledged: usize,
    delivered: usize,
}

/// What the outbox lag cannot go below at an offered rate: its two durable
/// commits, each measured alone at that rate.
struct Floor {
    offered: f64,
    commit: (f64, f64),
    accept: (f64, f64),
}

/// Runs the benchmark on the started stack in `ctx`. `startups` are how
/// long the stack took from `apphost` starting to all healthy, each time; `labels` mark a
/// container the bench starts as the stack's (app and owner), so the
/// stack's teardown removes it whatever happens to the bench.
pub async fn bench(
    ctx: &Ctx,
    instances: &[crate::plan::Instance],
    sender_db_url: &str,
    startups: &[Duration],
    options: &Options,
    labels: &HashMap<String, String>,
) -> Report {
    let began = Instant::now();
    // Taken before the run writes its charts, which would make the tree look changed.
    let checkout = commit();
    let mut report = Report { scenario: "bench".into(), ..Default::default() };
    match measure(ctx, instances, sender_db_url, options, labels, &mut report).await {
        Ok(figures) => {
            report.acknowledged = figures.acknowledged;
            report.delivered = figures.delivered;
            report.lost = figures.acknowledged - figures.delivered;
            if report.lost > 0 {
                report.failure = Some(format!("{} acknowledged items never reached the receiver", report.lost));
            }
            if !options.only.is_empty() {
                if options.wants(Part::Startup) && !figures.broker_alone.is_empty() {
                    report.notes.push(startup_note(startups, &figures.broker_alone));
                }
                report.notes.push(format!("a partial run (--only): {} not written", options.out.display()));
            } else {
                let charts = write_charts(&figures, &options.out);
                let startups: Vec<f64> = startups.iter().map(Duration::as_secs_f64).collect();
                let text = markdown(&figures, &startups, options, &charts, checkout.as_deref());
                if let Err(e) = write_section(&options.out, &text) {
                    report.failure = Some(format!("cannot write {}: {e}", options.out.display()));
                } else {
                    report.notes.push(format!("figures written to {}", options.out.display()));
                }
            }
        }
        Err(e) => report.failure = Some(e),
    }
    report.seconds = began.elapsed().as_secs_f64();
    report
}

/// `2.3, 2.2, 2.4`: each of `seconds` to a tenth.
fn seconds_each(seconds: &[f64]) -> String {
    seconds.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", ")
}

/// The start-up's figure for a partial run: each start, the median, and its ratio to the broker alone.
fn startup_note(startups: &[Duration], broker_alone: &[f64]) -> String {
    let starts: Vec<f64> = startups.iter().map(Duration::as_secs_f64).collect();
    format!(
        "start-up: {} s (median {:.1} s); the broker alone: {} s (median {:.1} s); {:.2} ×",
        seconds_each(&starts),
        median(&starts),
        seconds_each(broker_alone),
        median(broker_alone),
        median(&starts) / median(broker_alone).max(1e-9)
    )
}

async fn measure(
    ctx: &Ctx,
    instances: &[crate::plan::Instance],
    sender_db_url: &str,
    options: &Options,
    labels: &HashMap<String, String>,
    report: &mut Report,
) -> Result<Figures, String> {
    let sender = ctx.url(&ctx.roles.sender)?;
    let client = load::Client::new(&sender)?;
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch folder: {e}"))?;
    let mut figures = Figures::default();
    let mut all_ids = Vec::new();
    let sender_db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy(sender_db_url)
        .map_err(|e| format!("the sender's database's address: {e}"))?;
    // Read before the runs, while the services' start lines are still in the bounded log store.
    let broker = instances.iter().find(|i| i.resource.kind.spec().is_broker());
    figures.settings = settings(ctx, broker);
    figures.broker_setup = broker_setup(ctx);
    let mut lap = Lap(Instant::now());
    let pgbench_runs = if options.wants(Part::Pgbench) || options.wants(Part::Sustained) { options.runs } else { 0 };
    let closed_wanted = if options.wants(Part::Closed) { options.runs } else { 0 };
    let mut closed_runs = Vec::new();
    if closed_wanted > 0 {
        let warm = warm_up(ctx, &client, &sender_db, options).await?;
        all_ids.extend(warm.ids.iter().copied());
        report.notes.push(format!(
            "warm-up, uncounted: a closed loop of {:.0} s, {:.0} req/s",
            options.warm_up.as_secs_f64(),
            warm.rate()
        ));
    }
    // Each `pgbench` run is followed by a closed-loop run, so a machine whose speed
    // drifts over minutes moves the reference and the figure it is compared with alike;
    // each `pgbench` run after a closed loop starts from databases settled as the first.
    for run in 0..pgbench_runs.max(closed_wanted) {
        if run < pgbench_runs {
            if run > 0 && closed_wanted > 0 {
                settle(ctx, &sender_db).await?;
            }
            let before = cpu(ctx).await;
            let tps = pgbench::tps(sender_db_url, options.connections, options.seconds, scratch.path()).await?;
            let after = cpu(ctx).await;
            // The database's CPU over the whole run (its tables made and dropped, its
            // clients' connections), over the transactions pgbench counted.
            let per_tx = used(&before, &after, &ctx.roles.sender_db).map(|s| s / (tps * options.seconds.as_secs_f64()));
            report.notes.push(format!(
                "pgbench run {}: {tps:.0} tps; the database's CPU per transaction {}",
                run + 1,
                per_message(per_tx)
            ));
            figures.pgbench.push(tps);
            figures.pgbench_db_per_tx.extend(per_tx);
            // A cost per message or request needs no long run: half a run's time.
            let seconds = (options.seconds / 2).max(Duration::from_secs(1));
            if !ctx.roles.receiver_db_url.is_empty() {
                let before = cpu(ctx).await;
                let url = &ctx.roles.receiver_db_url;
                let messages = pgbench::receiver_messages(url, RECEIVER_CLIENTS, seconds, scratch.path()).await?;
                let after = cpu(ctx).await;
                let per_message_cost =
                    used(&before, &after, &ctx.roles.receiver_db).map(|s| s / (messages * seconds.as_secs_f64()));
                report.notes.push(format!(
                    "pgbench run {}, the receiver's statements in transactions of {}: {messages:.0} messages/s; \
                     its database's CPU per message {}",
                    run + 1,
                    pgbench::RECEIVER_BATCH,
                    per_message(per_message_cost)
                ));
                figures.receiver_db_per_message.extend(per_message_cost);
            }
            let before = cpu(ctx).await;
            let answered = load::closed_get(&client, "/health/live", options.connections, seconds).await;
            // What the requests left to do (their spans exported, received) counts too.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = cpu(ctx).await;
            let per_request = [LOAD, ctx.roles.sender.as_str()]
                .iter()
                .map(|name| used(&before, &after, name))
                .sum::<Option<f64>>()
                .map(|s| s / answered.max(1) as f64);
            report.notes.push(format!(
                "HTTP alone, run {}: {:.0} GET /health/live a second over {} connections; the load generator's and \
                 the sender's CPU per request {}",
                run + 1,
                answered as f64 / seconds.as_secs_f64(),
                options.connections,
                per_message(per_request)
            ));
            figures.http_per_request.extend(per_request.filter(|_| answered > 0));
        }
        if run < closed_wanted {
            let before = cpu_sample(ctx).await;
            let transactions_before = transactions(&sender_db, ctx).await;
            let result = load::closed(&client, options.connections, options.seconds, "bench closed").await;
            let items = result.ids.len();
            all_ids.extend(result.ids.iter().copied());
            // The CPU its items cost counts until the receiver has them all: a relay that fell
            // behind in the loop does that work after it, and the ceiling must not leave it out.
            let loop_ended = Instant::now();
            await_delivery(ctx, &all_ids, Duration::from_secs(120)).await?;
            let delivered_after = loop_ended.elapsed().as_secs_f64();
            let after = cpu_sample(ctx).await;
            let written = transactions_between(transactions_before, transactions(&sender_db, ctx).await);
            let cpu = cpu_between(&before, &after);
            let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
            let per_item: f64 = cpu.values().map(|pct| pct / 100.0 * seconds / items.max(1) as f64).sum();
            report.notes.push(format!(
                "closed loop run {}: {:.0} req/s, {} failed ({}); all delivered {delivered_after:.2} s after the loop; \
                 {:.2} ms of CPU per item until then ({}); {}",
                run + 1,
                result.rate(),
                result.failed(),
                load::why_text(&result.why),
                per_item * 1000.0,
                cpu_text(&cpu),
                items_per_transaction_text(items, written)
            ));
            figures.closed.push(result.rate());
            closed_runs.push(ClosedRun {
                rate: result.rate(),
                cpu,
                seconds,
                items,
                delivered_after,
                transactions: written,
            });
        }
    }
    lap.note(report, "pgbench and the closed loop");
    let reference = median(&figures.pgbench);
    // The run whose rate is the median stands for the loop's CPU, as for the open loops.
    closed_runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    figures.closed_run = (!closed_runs.is_empty()).then(|| closed_runs.swap_remove(closed_runs.len() / 2));
    figures.paid = figures.closed_run.as_ref().and_then(|r| {
        let per_item = r.per_item();
        let ms = |name: &str| per_item.get(name).map(|s| s * 1000.0);
        Some(Paid { db: ms(&ctx.roles.sender_db)?, broker: ms(&ctx.roles.broker)? })
    });
    let mut offered_rates = if options.wants(Part::Open) { options.rates.clone() } else { Vec::new() };
    if options.wants(Part::Open) && !figures.pgbench.is_empty() {
        offered_rates.extend(options.fractions.iter().map(|f| (reference * f).max(1.0).round()));
    }
    offered_rates.sort_by(f64::total_cmp);
    offered_rates.dedup();
    for offered in offered_rates {
        let mut runs = Vec::new();
        for run in 0..options.runs {
            let settled = settle(ctx, &sender_db).await?;
            let metrics_before = ctx.scrape(&ctx.roles.sender).await;
            let receiver_before = ctx.scrape(&ctx.roles.receiver).await;
            let before = cpu(ctx).await;
            let transactions_before = transactions(&sender_db, ctx).await;
            let result = load::open(&client, offered, options.seconds, 4096, "bench open").await;
            let cpu = cpu_since(ctx, &before, result.seconds).await;
            await_delivery(ctx, &result.ids, Duration::from_secs(120)).await?;
            let written = transactions_between(transactions_before, transactions(&sender_db, ctx).await);
            let metrics = ctx.scrape(&ctx.roles.sender).await;
            let receiver_metrics = ctx.scrape(&ctx.roles.receiver).await;
            let lag = |q| metrics.quantile_since(&metrics_before, contracts::metrics::OUTBOX_LAG_SECONDS.series, q);
            let stages: Vec<(&'static str, Option<f64>, Option<f64>)> = STAGES
                .iter()
                .map(|(label, metric, at_receiver)| {
                    let (now, then) =
                        if *at_receiver { (&receiver_metrics, &receiver_before) } else { (&metrics, &metrics_before) };
                    (
                        *label,
                        now.quantile_since(then, metric.series, 0.5),
                        now.quantile_since(then, metric.series, 0.99),
                    )
                })
                .collect();
            let end_to_end = end_to_end(ctx, &result.ids).await?;
            report.notes.push(format!(
                "open loop {offered:.0}/s run {} (databases settled in {settled:.1} s): {} acknowledged, {} failed ({}); HTTP p99 {:.1} ms, end to end p99 {:.1} ms, outbox lag p50 {} p99 {}; {}; CPU {}; {}",
                run + 1,
                result.ids.len(),
                result.failed(),
                load::why_text(&result.why),
                result.latency.value_at_quantile(0.99) as f64 / 1000.0,
                end_to_end.value_at_quantile(0.99) as f64 / 1000.0,
                seconds_as_ms(lag(0.5)),
                seconds_as_ms(lag(0.99)),
                stages
                    .iter()
                    .map(|(label, _, p99)| format!("{label} p99 {}", seconds_as_ms(*p99)))
                    .collect::<Vec<_>>()
                    .join(", "),
                cpu_text(&cpu),
                items_per_transaction_text(result.ids.len(), written)
            ));
            runs.push(OpenLoop {
                offered,
                http: result.latency.clone(),
                end_to_end,
                lag_p50: lag(0.5),
                lag_p99: lag(0.99),
                stages,
                cpu,
                transactions: written,
                not_sent: result.not_sent,
                why: result.why.clone(),
                figures: OpenFigures::default(),
            });
            all_ids.extend(result.ids);
        }
        if figures.floor.is_empty() && options.wants(Part::Floor) {
            // Half a run's time: at 480/s that is still over a thousand commits each, and the
            // floor's two took 63 s of the benchmark's 15 min 42 s at 97af7e1 at a whole run's.
            let seconds = (options.seconds / 2).max(Duration::from_secs(1));
            for run in 0..options.runs {
                let commit = pgbench::commit_latency(sender_db_url, offered, seconds, scratch.path()).await?;
                let accept = drain::accept_latency(ctx, offered, seconds, scratch.path()).await?;
                report.notes.push(format!(
                    "floor at {offered:.0}/s run {}: transaction p99 {:.1} ms, broker accept p99 {:.1} ms",
                    run + 1,
                    commit.1 * 1000.0,
                    accept.1 * 1000.0
                ));
                figures.floor.push(Floor { offered, commit, accept });
            }
        }
        // The run whose end-to-end p99 is the median of the runs stands for them in the
        // charts, the stages and CPU; each figure of the table is the median over the runs.
        let over_runs = OpenFigures::of(&runs);
        runs.sort_by_key(|r| r.end_to_end.value_at_quantile(0.99));
        let mut standing = runs.swap_remove(runs.len() / 2);
        standing.figures = over_runs;
        figures.open.push(standing);
    }
    lap.note(report, "the open loops and the floor");
    // Telemetry's cost: the same closed loop, and the open loop at the lowest rate, with
    // the services started by hand without OTLP (the runs above had it on, as `up` runs them).
    if let Some(offered) = figures.open.first().map(|r| r.offered).filter(|_| options.wants(Part::Telemetry)) {
        let services: Vec<&crate::plan::Instance> = instances
            .iter()
            .filter(|i| i.resource.name == ctx.roles.sender || i.resource.name == ctx.roles.receiver)
            .collect();
        let no_otlp = |env: &mut Vec<(String, String)>| env.retain(|(k, _)| !k.starts_with("OTEL_EXPORTER_OTLP_"));
        let (runs, ids) = sustained::by_hand(ctx, &services, no_otlp, async || {
            let (mut runs, mut ids) = (Vec::new(), Vec::new());
            // The services just started: warmed as the runs with OTLP were, or the first
            // run measures their new connections (at 5dc7155: 4,850/s, then 6,074 and 6,657).
            ids.extend(warm_up(ctx, &client, &sender_db, options).await?.ids);
            for run in 0..options.runs {
                let closed = load::closed(&client, options.connections, options.seconds, "bench closed").await;
                await_delivery(ctx, &closed.ids, Duration::from_secs(120)).await?;
                settle(ctx, &sender_db).await?;
                let open = load::open(&client, offered, options.seconds, 4096, "bench open").await;
                await_delivery(ctx, &open.ids, Duration::from_secs(120)).await?;
                let e2e = end_to_end(ctx, &open.ids).await?.value_at_quantile(0.99);
                let http = open.latency.value_at_quantile(0.99);
                report.notes.push(format!(
                    "telemetry off run {}: closed loop {:.0} req/s; {offered:.0}/s: end to end p99 {:.1} ms, POST p99 {:.1} ms",
                    run + 1,
                    closed.rate(),
                    e2e as f64 / 1000.0,
                    http as f64 / 1000.0
                ));
                runs.push((closed.rate(), e2e, http));
                ids.extend(closed.ids);
                ids.extend(open.ids);
            }
            Ok((runs, ids))
        })
        .await?;
        figures.telemetry_off = runs;
        all_ids.extend(ids);
    }
    lap.note(report, "telemetry's cost");
    let mut drains = Vec::new();
    for run in 0..if options.wants(Part::Drain) { options.runs } else { 0 } {
        let d = drain::drain(ctx, &client, options.backlog, options.connections, dashboard::Action::Stop).await?;
        await_delivery(ctx, &d.ids, Duration::from_secs(120)).await?;
        all_ids.extend(d.ids.iter().copied());
        let refs = drain::references(ctx, options.backlog, scratch.path()).await?;
        let restarted = refs.restarted.unwrap_or(f64::NAN);
        // The same drain on the broker perf just warmed, frozen (a pause) instead of stopped.
        let warm = drain::drain(ctx, &client, options.backlog, options.connections, dashboard::Action::Pause).await?;
        await_delivery(ctx, &warm.ids, Duration::from_secs(120)).await?;
        all_ids.extend(warm.ids.iter().copied());
        report.notes.push(format!(
            "drain run {}: broker accepting after {:.1} s, relay sending {:.2} s later, {:.0} msg/s over {:.1} s \
             (artemis perf on the broker restarted: {restarted:.0} msg/s); on the broker warmed: relay after a \
             pause {:.0} msg/s, artemis perf {:.0} msg/s (the broker's CPU per message under perf: in {}, out {}); CPU \
             during the first drain {}; during the warm one {}",
            run + 1,
            d.broker_accepting.as_secs_f64(),
            d.relay_sending.as_secs_f64(),
            d.rate,
            d.seconds,
            warm.rate,
            refs.warmed,
            per_message(refs.broker_cost.taking_in),
            per_message(refs.broker_cost.handing_out),
            cpu_text(&d.cpu),
            cpu_text(&warm.cpu)
        ));
        figures.drains.push(DrainRun {
            relay: d.rate,
            restarted,
            warmed: refs.warmed,
            relay_warm: warm.rate,
            accepting: d.broker_accepting.as_secs_f64(),
            sending: d.relay_sending.as_secs_f64(),
            broker_cost: refs.broker_cost,
        });
        drains.push(d);
    }
    lap.note(report, "the drains");
    if let Some(b) = bound(&figures) {
        report.notes.extend(b.notes(median(&figures.pgbench).max(1e-9)));
    }
    for _ in 0..if options.wants(Part::Startup) { options.runs } else { 0 } {
        let took = match broker {
            Some(b) if b.runtime == crate::plan::RuntimeKind::Docker => {
                let image = b.resource.image().unwrap_or_default();
                figures.broker_reference = format!("a container of `{image}` alone, created and started");
                startup::broker_container_alone(&image, &b.env, labels.clone()).await?
            }
            _ => {
                figures.broker_reference =
                    "one Artemis broker alone, created and run as the process runtime does".into();
                startup::broker_alone(scratch.path()).await?
            }
        };
        figures.broker_alone.push(took.as_secs_f64());
    }
    lap.note(report, "the broker alone");
    drains.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    figures.drain = (!drains.is_empty()).then(|| drains.swap_remove(drains.len() / 2));
    if options.wants(Part::Sustained) {
        let (up, below) =
            sustained::step_rates(reference, (!figures.closed.is_empty()).then(|| median(&figures.closed)));
        let (steps, ids) = sustained::steps(ctx, &client, (&up, &below), options.step).await?;
        all_ids.extend(ids);
        for step in &steps {
            report.notes.push(format!(
                "step {:.0}/s for {} s: {} acknowledged, {} not sent on time, failed: {}; {} not at the receiver {} s after",
                step.offered,
                options.step.as_secs(),
                step.acknowledged,
                step.not_sent,
                load::why_text(&step.why),
                step.late,
                sustained::HELD_WITHIN.as_secs_f64()
            ));
        }
        let rate = sustained::offered(&steps).ok_or("no step to find the sustained run's rate")?;
        figures.steps = steps;
        let ours = sustained::run(ctx, &sender_db, &client, rate, options.sustained).await?;
        report.notes.push(format!(
            "sustained {rate:.0}/s for {} s: {:.0}/s end to end, outbox pending at most {:.0}; {} acknowledged, {} not sent on time, failed: {}; {}",
            options.sustained.as_secs(),
            ours.end_to_end,
            ours.pending_max,
            ours.ids.len(),
            ours.not_sent,
            load::why_text(&ours.why),
            items_per_transaction_text(ours.ids.len(), ours.transactions)
        ));
        await_delivery(ctx, &ours.ids, Duration::from_secs(300)).await?;
        all_ids.extend(ours.ids.iter().copied());
        let sender_instance = instances
            .iter()
            .find(|i| i.resource.name == ctx.roles.sender)
            .ok_or("no sender instance to run with the seed's settings")?;
        let seed = sustained::seed(ctx, &sender_db, &client, sender_instance, rate, options.seed).await?;
        report.notes.push(format!(
            "sustained {rate:.0}/s with the seed's relay settings for {} s: {:.0}/s end to end, outbox pending at most {:.0}; {} acknowledged, {} not sent on time, failed: {}; {}",
            options.seed.as_secs(),
            seed.end_to_end,
            seed.pending_max,
            seed.ids.len(),
            seed.not_sent,
            load::why_text(&seed.why),
            items_per_transaction_text(seed.ids.len(), seed.transactions)
        ));
        // What the seed's relay left behind, the stack's own sender relays now.
        await_delivery(ctx, &seed.ids, Duration::from_secs(600)).await?;
        all_ids.extend(seed.ids.iter().copied());
        figures.sustained = Some((ours, seed));
        lap.note(report, "the sustained runs");
    }
    figures.acknowledged = all_ids.len();
    figures.delivered = all_ids.len() - undelivered(ctx, &all_ids).await?.len();
    Ok(figures)
}

/// How long each part took, in the report's notes (parts not run take no time).
struct Lap(Instant);

impl Lap {
    fn note(&mut self, report: &mut Report, part: &str) {
        let took = self.0.elapsed();
        if took >= Duration::from_secs(1) {
            report.notes.push(format!("{part} took {:.0} s", took.as_secs_f64()));
        }
        self.0 = Instant::now();
    }
}

/// The sender's and receiver's first start lines (they log their tuning
/// there; a later one may be the seed's sender) and the broker's
/// `JAVA_ARGS_APPEND`, as the report's settings.
fn settings(ctx: &Ctx, broker: Option<&crate::plan::Instance>) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, said) in [(&ctx.roles.sender, "sender listening"), (&ctx.roles.receiver, "receiver listening")] {
        let logs = ctx.supervisor.logs().since(Some(name), 0);
        if let Some(line) = logs.iter().find(|l| l.text.contains(said)) {
            let fields = line.text.split_once(said).map_or("", |(_, rest)| rest).trim();
            lines.push(format!("{name}: `{fields}`"));
        }
    }
    if let Some((_, args)) = broker.and_then(|b| b.env.iter().find(|(k, _)| k == "JAVA_ARGS_APPEND")) {
        lines.push(format!("{}: `JAVA_ARGS_APPEND={args}`", ctx.roles.broker));
    }
    lines
}

/// Whether the stack's start reused the set-ups kept from an earlier `up`
/// (the docker runtime's `apphost.setup` volume and images), as the logs say.
fn broker_setup(ctx: &Ctx) -> &'static str {
    let logs = ctx.supervisor.logs().since(Some(&ctx.roles.broker), 0);
    if logs.iter().any(|l| l.text.contains("reusing the set-up of an earlier start") && l.text.contains("warm")) {
        "the set-ups kept from an earlier `up`: the broker's `artemis create` and class-data archive, the databases' `initdb`"
    } else if logs.iter().any(|l| l.text.contains("reusing the set-up of an earlier start")) {
        "its broker's `artemis create` kept from an earlier `up` (its class-data archive made at this one)"
    } else if logs.iter().any(|l| l.text.contains("its first start sets it up")) {
        "its broker's `artemis create` run at this `up`, and kept for the next"
    } else {
        "its broker created at this `up`"
    }
}

/// CPU seconds used so far by each running instance, and by apphost itself
/// (which is the load generator here).
async fn cpu(ctx: &Ctx) -> BTreeMap<String, f64> {
    let mut used: BTreeMap<String, f64> =
        ctx.supervisor.usage().await.into_iter().map(|(name, u)| (name, u.cpu_seconds)).collect();
    used.insert(LOAD.into(), own_cpu_seconds());
    used
}

/// CPU seconds `name` used from `before` to `after` (two readings of [`cpu`]).
fn used(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
    Some(after.get(name)? - before.get(name)?)
}

/// Percent of one core each used since `before`, over `seconds`.
async fn cpu_since(ctx: &Ctx, before: &BTreeMap<String, f64>, seconds: f64) -> BTreeMap<String, f64> {
    percent(before, &cpu(ctx).await, seconds)
}

/// Percent of one core each component used from `before` to `after`, `seconds` apart.
fn percent(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, seconds: f64) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, now)| Some((name.clone(), (now - before.get(name)?).max(0.0) / seconds * 100.0)))
        .collect()
}

/// CPU seconds used so far by each component, and when: the middle of the
/// sample (a container's cgroup is read at once when the engine runs here;
/// the engine's one-shot stats, read otherwise, take up to a second).
struct CpuSample {
    used: BTreeMap<String, f64>,
    at: Instant,
}

/// The write transactions (those given an id) each database has run so far,
/// the sender's then the receiver's: the next transaction id, read without
/// taking one, so the difference between two readings counts exactly.
async fn transactions(sender_db: &sqlx::PgPool, ctx: &Ctx) -> Option<[i64; 2]> {
    const NEXT: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint";
    let next = async |pool| sqlx::query_scalar::<_, i64>(NEXT).fetch_one(pool).await.ok();
    Some([next(sender_db).await?, next(ctx.receiver_db()?).await?])
}

/// Write transactions in each database between two [`transactions`] readings.
fn transactions_between(before: Option<[i64; 2]>, after: Option<[i64; 2]>) -> Option<[i64; 2]> {
    let (b, a) = (before?, after?);
    Some([a[0] - b[0], a[1] - b[1]])
}

/// Items per write transaction in the sender's and the receiver's database.
fn items_per_transaction(items: usize, transactions: Option<[i64; 2]>) -> Option<[f64; 2]> {
    transactions.map(|t| t.map(|n| items as f64 / n.max(1) as f64))
}

/// [`items_per_transaction`] for a run's note.
fn items_per_transaction_text(items: usize, transactions: Option<[i64; 2]>) -> String {
    items_per_transaction(items, transactions).map_or(String::new(), |[sender, receiver]| {
        format!(
            "{sender:.1} items per write transaction in the sender's database (its writes and the relay's batches), \
             {receiver:.1} in the receiver's"
        )
    })
}

async fn cpu_sample(ctx: &Ctx) -> CpuSample {
    let asked = Instant::now();
    let used = cpu(ctx).await;
    CpuSample { used, at: asked + asked.elapsed() / 2 }
}

/// Percent of one core each used between two samples, over the time between
/// their middles. (Through the engine's stats, a drain of 2 s once read the
/// broker at 276 % of one core on a 2-core machine timed between the samples,
/// and 83 % between their middles; its cgroup counter, read at the drain's
/// first and last message, gave 115–121 %.)
fn cpu_between(before: &CpuSample, after: &CpuSample) -> BTreeMap<String, f64> {
    percent(&before.used, &after.used, after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-3))
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Before a run that measures latency, both databases are vacuumed and
/// checkpointed (as `pgbench` vacuums before its runs): what the run before
/// left (a closed loop writes some 50,000 rows in 24 s) is then not cleaned
/// up by autovacuum, or flushed by a checkpoint, in the middle of this one.
/// Returns how long it took, in seconds.
/// The uncounted closed loop of [`Options::warm_up`], its items at the receiver and
/// both databases settled after it.
async fn warm_up(
    ctx: &Ctx,
    client: &load::Client,
    sender_db: &sqlx::PgPool,
    options: &Options,
) -> Result<load::Run, String> {
    let warm = load::closed(client, options.connections, options.warm_up, "bench warm-up").await;
    await_delivery(ctx, &warm.ids, Duration::from_secs(120)).await?;
    settle(ctx, sender_db).await?;
    Ok(warm)
}

async fn settle(ctx: &Ctx, sender: &sqlx::PgPool) -> Result<f64, String> {
    let began = Instant::now();
    for (name, pool) in [("sender's", sender), ("receiver's", receiver_db(ctx)?)] {
        // One statement a query: VACUUM refuses to run in a multi-statement string.
        for statement in ["VACUUM (ANALYZE)", "CHECKPOINT"] {
            sqlx::raw_sql(statement)
                .execute(pool)
                .await
                .map_err(|e| format!("cannot run {statement} on the {name} database: {e}"))?;
        }
    }
    Ok(began.elapsed().as_secs_f64())
}

/// A goal for a ratio the report compares with one.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => ratio >= goal,
            Goal::AtMost(goal) => ratio <= goal,
        }
    }
}

/// The goals: `POST` over `pgbench`, a drain over `artemis perf
/// producer`, a start over the broker's alone.
const POST_GOAL: f64 = 0.7;
const DRAIN_GOAL: f64 = 0.9;
const STARTUP_GOAL: f64 = 1.25;

/// `ratio` to two decimals, or to as many more as it takes not to round it
/// onto the other side of `goal`: 0.696 is not ≥ 0.7, and written as 0.70
/// beside "≥ 0.7" it would read as met (the `POST` row at c9d21c1).
fn against(ratio: f64, goal: Goal) -> String {
    for decimals in 2..=6 {
        let text = format!("{ratio:.decimals$}");
        if text.parse::<f64>().is_ok_and(|shown| goal.met(shown) == goal.met(ratio)) {
            return text;
        }
    }
    format!("{ratio}")
}

fn receiver_db(ctx: &Ctx) -> Result<&sqlx::PgPool, String> {
    ctx.receiver_db().ok_or_else(|| "the receiver's database cannot be reached".to_owned())
}

/// Ids asked for in one query: a plan over a million ids (a parallel hash join)
/// needs more shared memory than a container's 64 MB `/dev/shm` holds.
const IDS_PER_QUERY: usize = 20_000;

/// apphost itself in the CPU figures: the load generator (and what else it runs meanwhile).
const LOAD: &str = "apphost (load)";

/// How long the closed loop's warm-up lasts in the full benchmark.
const WARM_UP_SECONDS: u64 = 12;

/// Clients of the receiver's reference: the receiver's default pool size.
const RECEIVER_CLIENTS: usize = 8;

/// Those of `ids` the receiver has not stored (yet).
async fn undelivered(ctx: &Ctx, ids: &[uuid::Uuid]) -> Result<Vec<uuid::Uuid>, String> {
    let mut missing = Vec::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT u FROM unnest($1::uuid[]) AS u WHERE NOT EXISTS (SELECT 1 FROM entity_items WHERE id = u)",
        )
        .bind(chunk)
        .fetch_all(receiver_db(ctx)?)
        .await
        .map_err(|e| format!("cannot look up the receiver's items: {e}"))?;
        missing.extend(rows);
    }
    Ok(missing)
}

/// Waits until the receiver has every item of `ids`, or `limit` has passed;
/// those still missing then, and when the look that found them began (what
/// it saw is the receiver's database as of then: a first look at 1.45 million
/// items took about 1.4 s, which is not the pipeline's). Each look asks only
/// for those missing at the last, so polling a run of a million items does
/// not load the receiver's database while it is still catching up.
async fn missing_after(ctx: &Ctx, ids: &[uuid::Uuid], limit: Instant) -> Result<(Vec<uuid::Uuid>, Instant), String> {
    let mut seen = Instant::now();
    let mut missing = undelivered(ctx, ids).await?;
    while !missing.is_empty() && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = Instant::now();
        missing = undelivered(ctx, &missing).await?;
    }
    Ok((missing, seen))
}

/// Waits until the receiver has every item of `ids`, or fails after `limit`.
async fn await_delivery(ctx: &Ctx, ids: &[uuid::Uuid], limit: Duration) -> Result<(), String> {
    let (missing, _) = missing_after(ctx, ids, Instant::now() + limit).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!("{} of {} acknowledged items not delivered after {limit:?}", missing.len(), ids.len()))
}

/// Per item: from the sender's transaction (its `created_at`) to the
/// receiver's (its `received_at`), in microseconds.
async fn end_to_end(ctx: &Ctx, ids: &[uuid::Uuid]) -> Result<Histogram<u64>, String> {
    let micros: Vec<i64> = sqlx::query_scalar(
        "SELECT greatest(0, (extract(epoch FROM received_at - created_at) * 1e6)::bigint)
           FROM entity_items WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(receiver_db(ctx)?)
    .await
    .map_err(|e| format!("cannot read the receiver's timestamps: {e}"))?;
    let mut histogram = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for m in micros {
        let _ = histogram.record(m.max(1) as u64);
    }
    Ok(histogram)
}

/// The latency charts, as SVG files beside `out`; their names, for the report.
fn write_charts(f: &Figures, out: &std::path::Path) -> Vec<(String, String)> {
    let stem = out.file_stem().map_or("benchmarks".into(), |s| s.to_string_lossy().into_owned());
    let mut written = Vec::new();
    type Pick = fn(&OpenLoop) -> &Histogram<u64>;
    let charts: [(&str, &str, Pick); 2] = [
        ("end-to-end", "end to end (insert → receiver's transaction), by percentile", |r| &r.end_to_end),
        ("post", "`POST` answer from when it was due, by percentile", |r| &r.http),
    ];
    for (name, title, of) in charts {
        let series: Vec<(String, &Histogram<u64>)> =
            f.open.iter().map(|r| (format!("{:.0} POST/s offered", r.offered), of(r))).collect();
        let file = format!("{stem}-{name}.svg");
        let svg = chart::latency_by_percentile(&series, &title.replace('`', ""));
        if let Ok(svg) = svg
            && std::fs::write(out.with_file_name(&file), svg).is_ok()
        {
            written.push((title.to_owned(), file));
        }
    }
    written
}

const BEGIN: &str = "<!-- apphost bench: begin (written by `apphost bench`; edits here are replaced) -->";
const END: &str = "<!-- apphost bench: end -->";

/// Puts `text` between the markers of `path`, keeping the rest of it (the
/// dashboard's benchmarks share the file); at its end when it has none.
fn write_section(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let section = format!("{BEGIN}\n{text}{END}\n");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &old[..a], old[b + END.len()..].trim_start_matches('\n'))
        }
        _ if old.is_empty() => section,
        _ => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(path, new)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

fn seconds_as_ms(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0))
}

/// The checkout's commit (with `+changes` when the tree differs from it), if in one.
fn commit() -> Option<String> {
    let git = |args: &[&str]| std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success());
    let head = String::from_utf8(git(&["rev-parse", "--short", "HEAD"])?.stdout).ok()?.trim().to_owned();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{head}+changes") } else { head })
}

/// The machine: CPU model, cores, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1)).unwrap_or("?").trim();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!("{model}, {cores} cores, {:.1} GiB memory", mem_kib as f64 / 1024.0 / 1024.0)
}

/// "name N %, …" for a run's notes.
fn cpu_text(cpu: &BTreeMap<String, f64>) -> String {
    cpu.iter().map(|(name, percent)| format!("{name} {percent:.0} %")).collect::<Vec<_>>().join(", ")
}

fn cpu_row(label: &str, cpu: &BTreeMap<String, f64>, columns: &[String]) -> String {
    let cells: Vec<String> = columns.iter().map(|c| cpu.get(c).map_or("-".into(), |v| format!("{v:.0} %"))).collect();
    format!("| {label} | {} |\n", cells.join(" | "))
}

/// Each open loop's and the sustained run's CPU across the machine over the
/// items it had acknowledged a second, and each run's items per write
/// transaction in the sender's and the receiver's database, the closed
/// loop's too: `open loop 480/s 2.41 ms (1.0 / 2.9)`.
fn cpu_per_item(f: &Figures, o: &Options) -> Vec<String> {
    let batched = |items: usize, transactions: Option<[i64; 2]>| {
        items_per_transaction(items, transactions)
            .map_or(String::new(), |[sender, receiver]| format!(" ({sender:.1} / {receiver:.1})"))
    };
    let mut text: Vec<String> = f
        .closed_run
        .iter()
        .map(|r| {
            let per_item: f64 = r.per_item().values().sum();
            format!("closed loop {:.2} ms{}", per_item * 1000.0, batched(r.items, r.transactions))
        })
        .collect();
    text.extend(f.open.iter().map(|r| {
        let items = r.http.len() as f64 / o.seconds.as_secs_f64();
        format!(
            "open loop {:.0}/s {:.2} ms{}",
            r.offered,
            cpu_seconds_per_item(&r.cpu, items) * 1000.0,
            batched(r.http.len() as usize, r.transactions)
        )
    }));
    if let Some((ours, _)) = &f.sustained {
        let (per_item, _) = sustained_ceiling(ours, o);
        text.push(format!(
            "sustained {:.0}/s {:.2} ms{}",
            ours.offered,
            per_item * 1000.0,
            batched(ours.ids.len(), ours.transactions)
        ));
    }
    text
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The closed loop's CPU seconds per item across the machine (until the
/// receiver had them), and the items a second all its cores would give at
/// that cost if nothing ever waited.
fn ceiling(f: &Figures) -> Option<(f64, f64)> {
    let total: f64 = f.closed_run.as_ref()?.per_item().values().sum();
    (total > 0.0).then(|| (total, cores() as f64 / total))
}

/// CPU seconds per item across the machine: `cpu` (percent of a core, by
/// component) over the items a run had a second.
fn cpu_seconds_per_item(cpu: &BTreeMap<String, f64>, items_a_second: f64) -> f64 {
    cpu.values().sum::<f64>() / 100.0 / items_a_second.max(1e-9)
}

/// The sustained run's CPU seconds per acknowledged item across the machine,
/// over the load's time, and the items a second all cores would give at that
/// cost if nothing ever waited.
fn sustained_ceiling(ours: &sustained::Sustained, o: &Options) -> (f64, f64) {
    let items = ours.ids.len() as f64 / o.sustained.as_secs_f64();
    let per_item = cpu_seconds_per_item(&ours.cpu, items);
    (per_item, cores() as f64 / per_item.max(1e-12))
}

/// CPU seconds per message (or transaction) in milliseconds, for a note.
fn per_message(seconds: Option<f64>) -> String {
    seconds.map_or("unknown".into(), |s| format!("{:.3} ms", s * 1000.0))
}

/// What the references' own costs would allow here: the sender's
/// transaction in its database (CPU per `pgbench` transaction, one item
/// each) and one durable message the broker takes in and hands out (CPU per
/// message under `artemis perf producer`, then `consumer`). Returns the
/// milliseconds of each, and the items a second all cores give at their sum;
/// and end to end, with the receiver's database's CPU per message under the
/// receiver's own statements added.
///
/// Not a floor for every pipeline: one that shares a commit or a broker
/// flush among more items than the references do pays less for them (the
/// sender's writers and relays do; [`Paid`] says how much the closed loop
/// paid), and the report says so beside the figure.
fn bound(f: &Figures) -> Option<Bound> {
    let of = |values: Vec<f64>| {
        let values: Vec<f64> = values.into_iter().filter(|s| s.is_finite() && *s > 0.0).collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let db = of(f.pgbench_db_per_tx.clone())?;
    let taking_in = of(f.drains.iter().filter_map(|d| d.broker_cost.taking_in).collect())?;
    let handing_out = of(f.drains.iter().filter_map(|d| d.broker_cost.handing_out).collect())?;
    let sum = db + taking_in + handing_out;
    let receiver_db = of(f.receiver_db_per_message.clone());
    let end_to_end = receiver_db.map(|r| EndToEnd { receiver_db: r * 1000.0, items: cores() as f64 / (sum + r) });
    let with_http = of(f.http_per_request.clone()).map(|http| WithHttp {
        http: http * 1000.0,
        items: cores() as f64 / (sum + http),
        end_to_end: receiver_db.map(|r| cores() as f64 / (sum + r + http)),
    });
    Some(Bound {
        db: db * 1000.0,
        taking_in: taking_in * 1000.0,
        handing_out: handing_out * 1000.0,
        items: cores() as f64 / sum,
        end_to_end,
        with_http,
    })
}

impl Bound {
    /// The bound's lines for a run's notes, as ratios to `reference` (`pgbench`'s tps).
    fn notes(&self, reference: f64) -> Vec<String> {
        let ratio = |items: f64| format!("{items:.0} items/s, {:.2} × pgbench", items / reference);
        let mut notes = vec![format!(
            "the references' costs alone would allow: {} cores ÷ ({:.3} + {:.3} + {:.3} ms) = {}",
            cores(),
            self.db,
            self.taking_in,
            self.handing_out,
            ratio(self.items)
        )];
        if let Some(e) = &self.end_to_end {
            notes.push(format!(
                "end to end, with the receiver's database's {:.3} ms: {}",
                e.receiver_db,
                ratio(e.items)
            ));
        }
        if let Some(h) = &self.with_http {
            let end_to_end = h.end_to_end.map_or("unknown".into(), ratio);
            notes.push(format!("with HTTP alone's {:.3} ms: {}; end to end {end_to_end}", h.http, ratio(h.items)));
        }
        notes
    }
}

/// See [`bound`]: the receiver's database's milliseconds per message added, and items a second.
#[derive(Debug)]
struct EndToEnd {
    receiver_db: f64,
    items: f64,
}

/// See [`bound`]: with the HTTP round trip at its cheapest here (the load
/// generator's and the sender's milliseconds per `GET /health/live`): items a
/// second, and end to end.
#[derive(Debug)]
struct WithHttp {
    http: f64,
    items: f64,
    end_to_end: Option<f64>,
}

/// What the closed loop paid per item, in ms, where [`bound`] takes the
/// references' costs: the sender's database and the broker.
#[derive(Debug, Clone, Copy)]
struct Paid {
    db: f64,
    broker: f64,
}

/// Whether the references' costs are a floor the closed loop did not pass,
/// as the report's goal column says: a goal above the ratio is out of reach
/// only where the pipeline paid at least what the references did.
fn floor_text(b: &Bound, paid: Option<Paid>, out_of_reach: &str) -> String {
    match paid {
        Some(p) if p.db < b.db || p.broker < b.taking_in + b.handing_out => format!(
            "not a floor: the closed loop paid {:.3} ms in the sender's database and {:.3} ms in the broker per item \
             (CPU per component, below), sharing commits and flushes among more items than the references do",
            p.db, p.broker
        ),
        Some(p) => {
            format!("{out_of_reach} (the closed loop paid {:.3} ms and {:.3} ms for them, no less)", p.db, p.broker)
        }
        None => format!("{out_of_reach}, if the pipeline pays no less than the references do"),
    }
}

/// See [`bound`]: milliseconds of CPU per item, and items a second.
#[derive(Debug)]
struct Bound {
    db: f64,
    taking_in: f64,
    handing_out: f64,
    items: f64,
    end_to_end: Option<EndToEnd>,
    with_http: Option<WithHttp>,
}

fn markdown(f: &Figures, startups: &[f64], o: &Options, charts: &[(String, String)], commit: Option<&str>) -> String {
    use std::fmt::Write;
    let reference = median(&f.pgbench);
    let closed = median(&f.closed);
    let mut s = String::new();
    let _ = writeln!(s, "## The outbox pipeline\n");
    let _ = writeln!(
        s,
        "Written by `apphost bench`; each figure is the median of {} run(s) of {} s, each reference is taken in the \
         same invocation, on the same machine. Nothing here is a test: no figure is asserted anywhere.\n",
        o.runs,
        o.seconds.as_secs()
    );
    let _ = writeln!(s, "- **Reproduce:** `{}`", o.command);
    if let Some(commit) = commit {
        let _ = writeln!(s, "- **Commit:** {commit}");
    }
    let _ = writeln!(s, "- **Machine:** {}", machine());
    // apphost generates the load: a debug build of it takes more CPU from the stack it measures.
    let generator = if cfg!(debug_assertions) { "debug" } else { "release" };
    let _ = writeln!(
        s,
        "- **Services built:** {}; load generator: apphost itself ({generator} build), on the same machine: its own HTTP/1.1 client (a request in one write, the answer parsed in place by `httparse`), keeping every connection it opened for its next request",
        o.profile
    );
    for line in &f.settings {
        let _ = writeln!(s, "- **Settings:** {line}");
    }
    let took = o.began.elapsed().as_secs();
    let _ = writeln!(
        s,
        "- **Written:** {}, {} min {} s after `apphost bench` began (its build, the stack's starts and every part)\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        took / 60,
        took % 60
    );
    let _ = writeln!(s, "| measured | figure | reference in the same run | ratio | goal |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| `POST` max throughput, {} connections (closed loop), relay running | {closed:.0} req/s | `pgbench`, the same \
         transaction, {} clients: {reference:.0} tps | {} | ≥ {POST_GOAL} |",
        o.connections,
        o.connections,
        against(closed / reference.max(1e-9), Goal::AtLeast(POST_GOAL))
    );
    if let Some((total, ceiling)) = ceiling(f) {
        let _ = writeln!(
            s,
            "| the pipeline's CPU ceiling here: {} cores ÷ {:.2} ms of CPU per item (closed loop, below) | {ceiling:.0} \
             items/s | `pgbench`: {reference:.0} tps | {:.2} | the most a ratio to `pgbench` can be at this cost per item |",
            cores(),
            total * 1000.0,
            ceiling / reference.max(1e-9)
        );
    }
    if let Some(b) = bound(f) {
        let _ = writeln!(
            s,
            "| what the references' own costs would allow here: {} cores ÷ ({:.3} ms, the sender's database's CPU per \
             `pgbench` transaction, one item each + {:.3} ms and {:.3} ms, the broker's CPU per durable message under \
             `artemis perf producer` and `consumer`), before the load generator, the HTTP request, the relay's \
             delete, the receiver and its database | {:.0} items/s | `pgbench`: {reference:.0} tps | {:.2} | {} |",
            cores(),
            b.db,
            b.taking_in,
            b.handing_out,
            b.items,
            b.items / reference.max(1e-9),
            floor_text(&b, f.paid, "a goal above this ratio is out of reach at these costs")
        );
        if let Some(e) = &b.end_to_end {
            let _ = writeln!(
                s,
                "| what the references' own costs would allow end to end here: {} cores ÷ \
                 (the sum above + {:.3} ms, the receiver's database's CPU per message under the receiver's own two \
                 statements in `pgbench` transactions of {} messages, its largest batch), before the load generator, \
                 the HTTP request, the relay's delete and the receiver | {:.0} items/s | `pgbench`: {reference:.0} tps \
                 | {:.2} | {} |",
                cores(),
                e.receiver_db,
                pgbench::RECEIVER_BATCH,
                e.items,
                e.items / reference.max(1e-9),
                floor_text(&b, f.paid, "a sustained end-to-end goal above this ratio is out of reach at these costs")
            );
        }
        if let Some(h) = &b.with_http {
            let end_to_end = h.end_to_end.map_or(String::new(), |items| {
                format!("; end to end, with the receiver's database too: {items:.0} items/s, {:.2}", items / reference)
            });
            let _ = writeln!(
                s,
                "| the same with the HTTP round trip at its cheapest here: the sum above + {:.3} ms, the load \
                 generator's and the sender's CPU per `GET /health/live` (no body, no database; {} connections, closed \
                 loop) | {:.0} items/s{end_to_end} | `pgbench`: {reference:.0} tps | {:.2} | {} |",
                h.http,
                o.connections,
                h.items,
                h.items / reference.max(1e-9),
                floor_text(
                    &b,
                    f.paid,
                    "a goal above this ratio is out of reach at these costs with this load generator"
                )
            );
        }
    }
    for r in &f.open {
        let _ = writeln!(
            s,
            "| outbox lag (insert → broker Accepted), {:.0} POST/s offered (open loop) | p50 {}, p99 {} | — | — | p99 ≤ 20 ms |",
            r.offered,
            seconds_as_ms(r.figures.lag_p50),
            seconds_as_ms(r.figures.lag_p99)
        );
        let _ = writeln!(
            s,
            "| end to end (insert → receiver's transaction), {:.0} POST/s offered | p50 {}, p99 {}, max {} | — | — | p99 ≤ 50 ms |",
            r.offered,
            ms(r.figures.e2e_p50),
            ms(r.figures.e2e_p99),
            ms(r.figures.e2e_max)
        );
        let _ = writeln!(
            s,
            "| `POST` answer, {:.0} POST/s offered, from when it was due | p50 {}, p99 {} | — | — | — |",
            r.offered,
            ms(r.figures.http_p50),
            ms(r.figures.http_p99)
        );
    }
    if let Some(first) = f.floor.first() {
        let of = |g: fn(&Floor) -> f64| median(&f.floor.iter().map(g).collect::<Vec<_>>()) * 1000.0;
        let (commit, accept) = (of(|r| r.commit.1), of(|r| r.accept.1));
        let lag =
            f.open.iter().find(|r| r.offered == first.offered).and_then(|r| r.figures.lag_p99).unwrap_or(f64::NAN)
                * 1000.0;
        let _ = writeln!(
            s,
            "| the floor under the outbox lag at {:.0}/s: its two durable commits, each alone at that rate (open loop, half a run's time) | the sender's transaction, start → commit (`pgbench --rate`, same statements, same database): p50 {:.1} ms, p99 {commit:.1} ms; then a durable send → `Accepted` (`artemis perf producer --rate`, 200-byte messages, same broker, its JVM's first {} s left out): p50 {:.1} ms, p99 {accept:.1} ms | the outbox lag's p99 above: {lag:.1} ms | {:.2} × their sum | the lag's p99 cannot be below either; in sequence ≈ their sum, {:.1} ms |",
            first.offered,
            of(|r| r.commit.0),
            drain::PERF_WARMUP.as_secs(),
            of(|r| r.accept.0),
            lag / (commit + accept).max(1e-9),
            commit + accept
        );
    }
    if let (Some(on), false) = (f.open.first(), f.telemetry_off.is_empty()) {
        let off = |g: fn(&(f64, u64, u64)) -> f64| median(&f.telemetry_off.iter().map(g).collect::<Vec<_>>());
        let (closed_off, e2e_off, http_off) = (off(|r| r.0), off(|r| r.1 as f64), off(|r| r.2 as f64));
        let _ = writeln!(
            s,
            "| telemetry's cost: the services exporting every span and log record to apphost's OTLP receiver (as `up` \
             runs them; the runs above) | closed loop {closed:.0} req/s; {:.0}/s offered: end to end p99 {}, `POST` p99 \
             {} | the same services started by hand without OTLP: {closed_off:.0} req/s; p99 {} and {} | {:.2} × the \
             throughput | — |",
            on.offered,
            ms(on.figures.e2e_p99),
            ms(on.figures.http_p99),
            ms(e2e_off as u64),
            ms(http_off as u64),
            closed / closed_off.max(1e-9)
        );
    }
    if let Some(d) = &f.drain {
        let median_of =
            |at: fn(&DrainRun) -> f64| median(&f.drains.iter().map(at).filter(|v| !v.is_nan()).collect::<Vec<_>>());
        // A reference too short to time (a quick run's) has no figure.
        let rate = |at: fn(&DrainRun) -> f64| match median_of(at) {
            r if r > 0.0 => format!("{r:.0} msg/s"),
            _ => "— (too short to time)".to_owned(),
        };
        // Each run's ratio to its own references, taken minutes apart on a noisy machine: the median of those.
        let ratio = |ours: fn(&DrainRun) -> f64, theirs: fn(&DrainRun) -> f64| {
            let ratios: Vec<f64> = f.drains.iter().map(|r| ours(r) / theirs(r)).filter(|v| v.is_finite()).collect();
            if ratios.is_empty() { "—".to_owned() } else { against(median(&ratios), Goal::AtLeast(DRAIN_GOAL)) }
        };
        let (accepting, sending) = (median_of(|r| r.accepting), median_of(|r| r.sending));
        let _ = writeln!(
            s,
            "| relay drain of a {} backlog after a broker outage (no consumer: the receiver stopped) | {:.0} msg/s | \
             `artemis perf producer`, durable AMQP, 200-byte messages, 256 unsettled, as many messages, same broker \
             stopped and started as for the relay, sending from when it accepts connections, no consumer: \
             {} | {} | ≥ {DRAIN_GOAL} |",
            d.backlog,
            median_of(|r| r.relay),
            rate(|r| r.restarted),
            ratio(|r| r.relay, |r| r.restarted)
        );
        let _ = writeln!(
            s,
            "| the same drain on a warm broker: it ran perf's {} s, then was paused (frozen) while the backlog was \
             written | {:.0} msg/s | `artemis perf producer` as above, on the same broker before the pause, {} s \
             after a {} s warm-up: {:.0} msg/s | {} | ≥ {DRAIN_GOAL} |",
            (drain::PERF_WARMUP + drain::WARM_PERF).as_secs(),
            median_of(|r| r.relay_warm),
            drain::WARM_PERF.as_secs(),
            drain::PERF_WARMUP.as_secs(),
            median_of(|r| r.warmed),
            ratio(|r| r.relay_warm, |r| r.warmed)
        );
        let _ = writeln!(
            s,
            "| broker back → relay sending | {sending:.2} s after the broker accepts AMQP connections | the broker \
             alone: started → accepting AMQP connections in {accepting:.1} s | — | ≤ 1 s |"
        );
    }
    if let Some((ours, seed)) = &f.sustained {
        // What became of the requests: under overload the sender refuses with 503 at once.
        let answered = |r: &sustained::Sustained| {
            let failed = load::failed(&r.why);
            let mut text = format!("{} requests acknowledged", r.ids.len());
            if failed > 0 {
                let _ = write!(text, ", {failed} not ({})", load::why_text(&r.why));
            }
            if r.not_sent > 0 {
                let _ = write!(text, ", {} not sent on time", r.not_sent);
            }
            text
        };
        let goal = (reference * sustained::GOAL).round();
        let cap = sustained::cap_rate(reference);
        let shares = |shares: &[f64]| shares.iter().map(|share| share.to_string()).collect::<Vec<_>>().join(", ");
        let steps: Vec<String> = f
            .steps
            .iter()
            .map(|step| {
                let mut text = format!("{:.0}/s ", step.offered);
                if step.held() {
                    text.push_str("held");
                } else {
                    let failed = load::failed(&step.why);
                    let mut why = Vec::new();
                    if failed > 0 {
                        why.push(format!("{failed} refused ({})", load::why_text(&step.why)));
                    }
                    if step.not_sent > 0 {
                        why.push(format!("{} not sent on time", step.not_sent));
                    }
                    if step.late > 0 {
                        why.push(format!(
                            "{} not at the receiver {} s after",
                            step.late,
                            sustained::HELD_WITHIN.as_secs_f64()
                        ));
                    }
                    text.push_str(&why.join(", "));
                }
                text
            })
            .collect();
        let busy: f64 = ours.cpu.values().sum();
        let _ = writeln!(
            s,
            "| sustained end-to-end rate for {} s, offered the most the stack held in steps of {} s ({} × the closed \
             loop's figure, none above {} × `pgbench`, {cap:.0}/s, the goal's {goal:.0}/s and a little more, as a rate \
             end to end falls a little short of the rate offered; the first step it did not hold ends the search, \
             and if that was the first, {} × until one held: {}): {:.0} POST/s | {:.0} items/s; outbox pending at \
             most {:.0}, {:.0} when the load ended ({}); {}; the machine {busy:.0} % busy of {} % (CPU below) | `pgbench`: {reference:.0} tps | {} | ≥ {} |",
            o.sustained.as_secs(),
            o.step.as_secs(),
            shares(&sustained::STEPS),
            sustained::CAP,
            shares(&sustained::BELOW),
            steps.join("; "),
            ours.offered,
            ours.end_to_end,
            ours.pending_max,
            ours.pending_end,
            ours.backlog_text(),
            answered(ours),
            cores() * 100,
            against(ours.end_to_end / reference.max(1e-9), Goal::AtLeast(sustained::GOAL)),
            sustained::GOAL
        );
        let saturated = ceiling(f)
            .map_or(String::new(), |(total, _)| format!("; the closed loop, saturated, paid {:.2} ms", total * 1000.0));
        let (per_item, most) = sustained_ceiling(ours, o);
        let _ = writeln!(
            s,
            "| the sustained run's CPU ceiling here: {} cores ÷ {:.2} ms of CPU per item (the sustained run, its CPU \
             below) | {most:.0} items/s | `pgbench`: {reference:.0} tps | {:.2} | the most a sustained rate can be at \
             this cost per item; the goal's {goal:.0}/s needs at most {:.2} ms an item with every core busy all the \
             time, where an open loop's queues grow without bound{saturated} |",
            cores(),
            per_item * 1000.0,
            most / reference.max(1e-9),
            cores() as f64 / goal.max(1.0) * 1000.0
        );
        let settings: Vec<String> = sustained::SEED.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(
            s,
            "| the same offered rate with the seed's relay settings ({}) for {} s | {:.0} items/s; outbox pending at most \
             {:.0}, {:.0} when the load ended ({}); {} | the stack's settings: {:.0} items/s | speed-up \
             {:.2} | — |",
            settings.join(" "),
            o.seed.as_secs(),
            seed.end_to_end,
            seed.pending_max,
            seed.pending_end,
            seed.backlog_text(),
            answered(seed),
            ours.end_to_end,
            ours.end_to_end / seed.end_to_end.max(1e-9)
        );
    }
    let alone = median(&f.broker_alone);
    let startup = median(startups);
    let _ = writeln!(
        s,
        "| `apphost` start → all healthy (its `cargo build` included: nothing to build, as the bench builds what changed before the timed starts; \
         {}; the median of {} starts: {} s) | {:.1} s | {}, to `Server is now active`: {alone:.1} s | {} | ≤ {STARTUP_GOAL} |\n",
        f.broker_setup,
        startups.len(),
        seconds_each(startups),
        startup,
        f.broker_reference,
        against(startup / alone.max(1e-9), Goal::AtMost(STARTUP_GOAL))
    );
    let _ = writeln!(
        s,
        "Every acknowledged item of every run was checked in the receiver's database: {} acknowledged, {} delivered.\n",
        f.acknowledged, f.delivered
    );
    let _ = writeln!(s, "Open-loop requests that could not be sent on time or failed, over all runs of a rate:");
    for r in &f.open {
        let why =
            if r.figures.why.is_empty() { String::new() } else { format!(" ({})", load::why_text(&r.figures.why)) };
        let _ = writeln!(
            s,
            "- {:.0}/s: {} not sent on time, {} failed{why}",
            r.offered,
            r.figures.not_sent,
            load::failed(&r.figures.why)
        );
    }
    for (title, file) in charts {
        let _ = writeln!(s, "\n{title}:\n\n![{}]({file})", title.replace('`', ""));
    }
    if let Some(first) = f.open.first() {
        let _ = writeln!(s, "\n### Where a message's time goes (open loop, p50 / p99 of each stage)\n");
        let rates: Vec<String> = f.open.iter().map(|r| format!("{:.0} POST/s", r.offered)).collect();
        let _ = writeln!(s, "| stage | {} |", rates.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(rates.len()));
        for (i, (label, _, _)) in first.stages.iter().enumerate() {
            let cells: Vec<String> = f
                .open
                .iter()
                .map(|r| format!("{} / {}", seconds_as_ms(r.stages[i].1), seconds_as_ms(r.stages[i].2)))
                .collect();
            let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
        }
        let _ = writeln!(
            s,
            "\nEach stage's own histogram over the run (`docs/contracts.md`, \"Where a message's time goes\"); \
             percentiles of stages do not add up to the percentile of the whole. The run is the one whose end-to-end \
             p99 is the median of its rate's runs, as for the charts above and the CPU below; the table's figures \
             are each the median over the runs."
        );
    }
    let empty = BTreeMap::new();
    let closed_cpu = f.closed_run.as_ref().map_or(&empty, |r| &r.cpu);
    let sustained_cpu = f.sustained.as_ref().map(|(ours, _)| &ours.cpu);
    let mut columns: Vec<String> = closed_cpu.keys().cloned().collect();
    for cpu in f.open.iter().map(|r| &r.cpu).chain(sustained_cpu) {
        columns.extend(cpu.keys().filter(|k| !columns.contains(k)).cloned().collect::<Vec<_>>());
    }
    let _ = writeln!(s, "\n### CPU per component (percent of one core, during the run)\n");
    let _ = writeln!(s, "| run | {} |", columns.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(columns.len()));
    if let Some(r) = &f.closed_run {
        let label = format!(
            "closed loop, {} connections, until the receiver had its items ({:.1} s after the loop)",
            o.connections, r.delivered_after
        );
        s.push_str(&cpu_row(&label, &r.cpu, &columns));
    }
    for r in &f.open {
        s.push_str(&cpu_row(&format!("open loop, {:.0}/s", r.offered), &r.cpu, &columns));
    }
    if let Some(d) = &f.drain {
        s.push_str(&cpu_row("relay drain (receiver stopped)", &d.cpu, &columns));
    }
    if let Some((ours, _)) = &f.sustained {
        let label = format!("sustained, {:.0}/s offered for {} s", ours.offered, o.sustained.as_secs());
        s.push_str(&cpu_row(&label, &ours.cpu, &columns));
    }
    if let (Some((total, ceiling)), Some(r)) = (ceiling(f), &f.closed_run) {
        let per_item: Vec<String> =
            r.per_item().iter().map(|(name, seconds)| format!("{name} {:.2}", seconds * 1000.0)).collect();
        let _ = writeln!(
            s,
            "\nIn the closed loop each item cost {:.2} ms of CPU across the machine, counted until the receiver had \
             it ({}, in ms); {} cores give a ceiling of {ceiling:.0} items/s for the whole pipeline if nothing ever \
             waited, {:.2} × the `pgbench` figure: at this cost per item no ratio to `pgbench` above can pass that here.",
            total * 1000.0,
            per_item.join(", "),
            cores(),
            ceiling / reference.max(1e-9)
        );
    }
    let per_item = cpu_per_item(f, o);
    if !per_item.is_empty() {
        let _ = writeln!(
            s,
            "\nEach run's CPU across the machine per item it had acknowledged (the closed loop's until the receiver \
             had them), and in brackets its items per write transaction in the sender's database (its writes and \
             the relay's batches) / in the receiver's, counted from each database's next transaction id: {}. \
             Load below saturation shares fewer commits, wakeups and broker flushes among its items than the closed \
             loop and the references do, so each item costs more there: the sustained run's rate is bounded by \
             its own cost per item, not the closed loop's.",
            per_item.join("; ")
        );
    }
    let _ = writeln!(s, "\n### How the figures are taken\n");
    let _ = writeln!(
        s,
        "- `pgbench` runs the statements of one `POST` (the item, returned; its outbox row) in one transaction, \
         prepared, on tables made `LIKE` the sender's (`INCLUDING ALL`) in the sender's database, so no relay reads \
         them; ids are time-ordered as the sender's UUIDv7 are. Its runs alternate with the closed loop's (each \
         `pgbench` run, then one closed-loop run; both databases vacuumed and checkpointed before each `pgbench` run), \
         so a machine whose speed drifts over minutes moves both sides of the ratio alike. Before the first, an \
         uncounted closed loop of {} s warms the stack: a broker's JVM compiles its hot paths in the first seconds of \
         load, and at 40123fb, without it, the first run's relay fell 5.9 s behind a loop of 6,773 POST/s while the \
         second ran at 4,978/s, each the broker's warm-up more than the pipeline's figure. The services started \
         again without OTLP, for telemetry's cost, are warmed the same way before their runs.",
        o.warm_up.as_secs()
    );
    if bound(f).is_some() {
        let _ = writeln!(
            s,
            "- The references' costs alone: the sender's database's CPU is read (its cgroup) before and after \
             each `pgbench` run, over the transactions it counted; the broker's, before and after `artemis perf \
             producer` on the warmed broker, over the messages it completed (its warm-up included), then over \
             `artemis perf consumer` taking them all. Each is the median over the runs. They are a floor only for a \
             pipeline that shares a commit or a broker flush among no more items than the references do (`pgbench` \
             commits one item a transaction, `artemis perf` sends one message at a time, 256 unsettled): the \
             sender's writers and relays share theirs among more, so the report compares them with what the closed \
             loop paid for the same two components."
        );
        let _ = writeln!(
            s,
            "- End to end, the receiver's database's CPU is added, read the same way around `pgbench` running the \
             receiver's own two statements (its inbox rows, then its items, one transaction) for batches of {} new \
             messages, its largest, on tables made `LIKE` its own (`INCLUDING ALL`, and the items' reference to the \
             inbox) in its database, {} clients, half a run's time after each `pgbench` run above: the least it pays \
             for a message.",
            pgbench::RECEIVER_BATCH,
            RECEIVER_CLIENTS
        );
        let _ = writeln!(
            s,
            "- HTTP alone: after each `pgbench` run, the load generator's closed loop sends `GET /health/live` to \
             the sender (its middleware, no body, no database) for half a run's time; apphost's CPU (`getrusage`) \
             and the sender's (cgroup) over the requests answered. A `POST` costs at least that round trip with this \
             load generator on this machine."
        );
    }
    let _ = writeln!(
        s,
        "- Open loop: requests are sent at fixed times whatever the answers do, at {}{} of the `pgbench` figure; \
         an answer's time counts from when its request was due. Before each run both databases are vacuumed \
         (`VACUUM (ANALYZE)`, as `pgbench` does before its own) and checkpointed, so a run does not pay for the \
         rows the one before it wrote. They run after the closed loop, on a broker whose JVM that loop warmed: on a \
         broker just started (`apphost bench --only open`), three runs at 480/s at 01aea88 gave outbox-lag p99s of \
         122, 130 and 49 ms.",
        o.rates.iter().map(|r| format!("{r:.0}/s and ")).collect::<String>(),
        o.fractions.iter().map(|f| format!("{f}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        s,
        "- End to end is per item, from the receiver's database: `received_at - created_at` (the receiver's and the \
         sender's transaction times), in an HDR histogram. Outbox lag is the sender's `outbox_lag_seconds` histogram \
         over the run, interpolated inside its buckets (…, 5, 7.5, 10, 15, 20, 25, 35, 50 ms, …)."
    );
    let _ = writeln!(
        s,
        "- Drain: the receiver is stopped, then the broker; the backlog is written; the broker is started and the \
         relay's rate timed from its first to its last message; the receiver is started and takes the backlog (every \
         item is checked). Then the reference: the receiver stopped again, the broker stopped and started, and as \
         soon as it accepts connections `artemis perf producer` sends as many messages, timed from its first send to \
         its last outcome; then, on the broker it warmed, {} s after a {} s warm-up; then the drain again on that warm \
         broker, paused instead of stopped. A just-started broker's JVM runs interpreted at first and compiles as it \
         goes (its rate still rises after 20 s here), so each pair faces one broker state; perf's own JVM is new in \
         both, which costs it most on the just-started broker. All rates are a producer and the broker alone, with no \
         consumer taking the broker's time; the ratios are the median of each run's ratio to its own references.",
        drain::WARM_PERF.as_secs(),
        drain::PERF_WARMUP.as_secs()
    );
    let _ = writeln!(
        s,
        "- Start-up: the stack is started to all healthy and stopped {} time(s) before the start the other \
         figures run on; each start counts from `apphost` starting, its `cargo build` included.",
        o.runs.saturating_sub(1)
    );
    let _ = writeln!(
        s,
        "- Sustained: the steps and the run are open loops as above, after every other part and a step's time at \
         the first step's rate, uncounted, to warm the broker the drains restarted. The end-to-end rate \
         is the items the receiver had, over the load's time until the last was in ({} s after the load at most); \
         every acknowledged item is checked as for the other runs.",
        sustained::SETTLE.as_secs()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_never_rounded_onto_the_other_side_of_its_goal() {
        use super::{Goal::*, against};
        assert_eq!(against(0.6961, AtLeast(0.7)), "0.696", "not met: 0.70 would read as met");
        assert_eq!(against(0.69996, AtLeast(0.7)), "0.69996");
        assert_eq!(against(0.7, AtLeast(0.7)), "0.70");
        assert_eq!(against(0.7049, AtLeast(0.7)), "0.70", "met, and 0.70 says so");
        assert_eq!(against(0.62, AtLeast(0.7)), "0.62");
        assert_eq!(against(0.8951, AtLeast(0.9)), "0.895");
        assert_eq!(against(1.2549, AtMost(1.25)), "1.255", "not met: 1.25 would read as met");
        assert_eq!(against(1.2451, AtMost(1.25)), "1.25", "met, and 1.25 says so");
        assert_eq!(against(0.95, AtMost(1.25)), "0.95");
    }

    #[test]
    fn the_section_replaces_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("benchmarks.md");
        write_section(&path, "first\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n## Dashboard\n\nkept\n")).unwrap();
        write_section(&path, "second\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert!(text.ends_with("## Dashboard\n\nkept\n"), "{text}");
        // A file without the markers keeps all it had, above the section.
        std::fs::write(&path, "by hand\n").unwrap();
        write_section(&path, "third\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("by hand\n\n") && text.ends_with(&format!("third\n{END}\n")), "{text}");
    }

    fn run(lag_p99: f64, e2e_ms: u64) -> OpenLoop {
        let mut end_to_end = load::histogram();
        end_to_end.record(e2e_ms * 1000).unwrap();
        OpenLoop {
            offered: 480.0,
            http: load::histogram(),
            end_to_end,
            lag_p50: Some(0.001),
            lag_p99: Some(lag_p99),
            stages: Vec::new(),
            cpu: BTreeMap::new(),
            transactions: None,
            not_sent: 0,
            why: BTreeMap::new(),
            figures: OpenFigures::default(),
        }
    }

    /// Each figure is its own median: the run with the median end-to-end
    /// p99 need not have the median lag.
    #[test]
    fn each_open_loop_figure_is_the_median_over_the_runs() {
        let medians = OpenFigures::of(&[run(0.030, 40), run(0.060, 50), run(0.035, 60)]);
        assert_eq!(medians.lag_p99, Some(0.035));
        assert_eq!(medians.e2e_p99 / 1000, 50);
    }

    fn drain_run(taking_in: Option<f64>, handing_out: Option<f64>) -> DrainRun {
        let broker_cost = drain::BrokerCost { taking_in, handing_out };
        DrainRun { relay: 0.0, restarted: 0.0, warmed: 0.0, relay_warm: 0.0, accepting: 0.0, sending: 0.0, broker_cost }
    }

    /// The references' costs are called a floor only where the closed loop
    /// paid no less for the same two components: the sender's writers and
    /// relays batch, and at 8c6d551 the closed loop paid 0.07 ms in the
    /// database against `pgbench`'s 0.143 ms a transaction.
    #[test]
    fn the_references_costs_are_a_floor_only_where_the_pipeline_paid_no_less() {
        let b =
            Bound { db: 0.143, taking_in: 0.109, handing_out: 0.084, items: 0.0, end_to_end: None, with_http: None };
        let goal = "a goal above this ratio is out of reach at these costs";
        let batched = floor_text(&b, Some(Paid { db: 0.07, broker: 0.25 }), goal);
        assert!(batched.starts_with("not a floor: the closed loop paid 0.070 ms"), "{batched}");
        let broker = floor_text(&b, Some(Paid { db: 0.2, broker: 0.11 }), goal);
        assert!(broker.starts_with("not a floor:"), "{broker}");
        let no_less = floor_text(&b, Some(Paid { db: 0.143, broker: 0.193 }), goal);
        assert!(no_less.starts_with(goal) && no_less.contains("0.143 ms and 0.193 ms"), "{no_less}");
        assert!(floor_text(&b, None, goal).contains("if the pipeline pays no less"));
    }

    /// The bound adds the medians of the two references' costs; a run
    /// without a figure for one is left out of its median, and without any
    /// there is no bound.
    #[test]
    fn the_bound_is_all_cores_over_both_references_costs() {
        let mut f = Figures { pgbench_db_per_tx: vec![0.0003, 0.0001, 0.0002], ..Figures::default() };
        assert!(bound(&f).is_none(), "no broker figure, no bound");
        f.drains = vec![drain_run(Some(0.0001), None), drain_run(None, None), drain_run(Some(0.0001), None)];
        assert!(bound(&f).is_none(), "no figure for handing out, no bound");
        f.drains[1].broker_cost.handing_out = Some(0.00005);
        let b = bound(&f).unwrap();
        assert!((b.db - 0.2).abs() < 1e-9 && (b.taking_in - 0.1).abs() < 1e-9, "{b:?}");
        assert!((b.handing_out - 0.05).abs() < 1e-9, "{b:?}");
        assert!((b.items - cores() as f64 / 0.00035).abs() < 1e-6, "{b:?}");
        assert!(b.end_to_end.is_none(), "no receiver figure, no end-to-end bound: {b:?}");
        f.receiver_db_per_message = vec![0.00002, f64::NAN, 0.00004, 0.00003];
        let e = bound(&f).unwrap().end_to_end.unwrap();
        assert!((e.receiver_db - 0.03).abs() < 1e-9, "{e:?}");
        assert!((e.items - cores() as f64 / 0.00038).abs() < 1e-6, "{e:?}");
        assert!(bound(&f).unwrap().with_http.is_none(), "no HTTP figure, no bound with it");
        f.http_per_request = vec![0.00004, 0.00006, 0.00005];
        let h = bound(&f).unwrap().with_http.unwrap();
        assert!((h.http - 0.05).abs() < 1e-9, "{h:?}");
        assert!((h.items - cores() as f64 / 0.0004).abs() < 1e-6, "{h:?}");
        assert!((h.end_to_end.unwrap() - cores() as f64 / 0.00043).abs() < 1e-6, "{h:?}");
        let notes = bound(&f).unwrap().notes(cores() as f64 / 0.0004);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].ends_with(" ms) = 5714 items/s, 1.14 × pgbench"), "{notes:?}");
        assert!(
            notes[2].starts_with("with HTTP alone's 0.050 ms: 5000 items/s, 1.00 × pgbench; end to end 4651"),
            "{notes:?}"
        );
    }
}
