//! `apphost test --scenario soak --duration 10m`: steady load for the whole
//! duration and a random fault every 15–30 s (every kind in a random order,
//! then again), then full delivery is checked once; the report, with the
//! timeline of faults, goes to a Markdown file.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rand::{Rng, seq::SliceRandom};

use super::{Ctx, Report, steps::When};
use contracts::{Action, metrics::RECEIVER_REJECTED};

use crate::supervisor::State;

/// The part of the demo stack a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Broker,
    Receiver,
    Sender,
    SenderDb,
}

/// A kind of fault: an action on a part (a stop lasts `--outage`, then the
/// part is started again), or a poison message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Act(Action, Part),
    /// The receiver killed at a point of its batch held at its database.
    HeldKill(When),
    Poison,
}

const FAULTS: [Kind; 9] = [
    Kind::Act(Action::Stop, Part::Broker),
    Kind::Act(Action::Kill, Part::Broker),
    Kind::Act(Action::Stop, Part::Receiver),
    Kind::Act(Action::Kill, Part::Receiver),
    Kind::Act(Action::Kill, Part::Sender),
    Kind::Act(Action::Stop, Part::SenderDb),
    Kind::HeldKill(When::CommitHeld),
    Kind::HeldKill(When::StoreBlocked),
    Kind::Poison,
];

impl std::fmt::Display for Kind {
    /// As the report names it: `stop-broker`, `kill-sender`, `restart-sender-db`, `poison`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Act(Action::Stop, Part::SenderDb) => f.write_str("restart-sender-db"),
            Kind::Act(action, part) => {
                let part = match part {
                    Part::Broker => "broker",
                    Part::Receiver => "receiver",
                    Part::Sender => "sender",
                    Part::SenderDb => "sender-db",
                };
                write!(f, "{action}-{part}")
            }
            Kind::HeldKill(When::CommitHeld) => f.write_str("kill-receiver-after-commit"),
            Kind::HeldKill(_) => f.write_str("kill-receiver-before-commit"),
            Kind::Poison => f.write_str("poison"),
        }
    }
}

struct Fault {
    at: f64,
    kind: Kind,
    /// Until the stack was healthy again.
    recovered_after: Option<f64>,
    note: String,
}

pub async fn soak(ctx: &Ctx, duration: Duration, path: &Path) -> Report {
    let started = Instant::now();
    let mut report = Report { scenario: "soak".into(), ..Default::default() };
    let mut faults: Vec<Fault> = Vec::new();
    // apphost's own memory: once a minute, the one after 10 minutes (once it has settled) and the last.
    let mut memory: Vec<(f64, Memory)> = Vec::new();
    let sample = |memory: &mut Vec<(f64, Memory)>| {
        let minute = memory.last().is_none_or(|(at, _)| started.elapsed().as_secs_f64() - at >= 60.0);
        if let Some(m) = Memory::now().filter(|_| minute) {
            memory.push((started.elapsed().as_secs_f64(), m));
        }
    };
    let outcome: Result<(), String> = async {
        let load = ctx.load("soak", None)?;
        let mut burst = Vec::new();
        let mut deck: Vec<Kind> = Vec::new();
        let mut stopped = None;
        loop {
            sample(&mut memory);
            let pause = Duration::from_secs(rand::rng().random_range(15..=30));
            if started.elapsed() + pause >= duration {
                tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
                break;
            }
            tokio::time::sleep(pause).await;
            // Drawn from a shuffled deck of every kind, so that each kind strikes before any repeats.
            if deck.is_empty() {
                deck = FAULTS.to_vec();
                deck.shuffle(&mut rand::rng());
            }
            let kind = deck.pop().expect("a full deck");
            let at = started.elapsed().as_secs_f64();
            ctx.supervisor.record("apphost", format!("soak: {kind}"));
            let struck = Instant::now();
            let (note, extra) = match fault(ctx, kind).await {
                Ok(done) => done,
                Err(e) => {
                    stopped = Some(format!("`{kind}`: {e}"));
                    break;
                }
            };
            // The burst's ids join the load's ledger (on disk), not apphost's memory.
            burst.extend(load.also_acknowledged(extra));
            let recovered = ctx.wait_all_healthy(Duration::from_secs(180)).await;
            faults.push(Fault { at, kind, recovered_after: recovered.then(|| struck.elapsed().as_secs_f64()), note });
            if !recovered {
                stopped = Some(format!("the stack was not healthy 180s after `{kind}`"));
                break;
            }
        }
        memory.extend(Memory::now().map(|m| (started.elapsed().as_secs_f64(), m)));
        // Even when a fault went wrong, what was acknowledged until then is checked.
        let mut acknowledged = burst;
        ctx.collect(load, &mut acknowledged, &mut report).await;
        let delivery = ctx.verify(&acknowledged, Instant::now(), &mut report).await;
        match stopped {
            Some(why) => Err(format!("the soak stopped early at {why}")),
            None => delivery,
        }
    }
    .await;
    if let Err(e) = outcome {
        report.failure = Some(e);
    }
    judge_memory(&memory, &mut report);
    report.seconds = started.elapsed().as_secs_f64();
    // Each poison fault waited for its rejection; a fault that did not see it failed the soak.
    let rejected = faults.iter().filter(|f| f.kind == Kind::Poison).count();
    let text = markdown(&report, &faults, &memory, duration, ctx, rejected);
    if let Err(e) = std::fs::write(path, text) {
        report.notes.push(format!("cannot write the report to {}: {e}", path.display()));
    } else {
        report.notes.push(format!("report: {}", path.display()));
    }
    report
}

/// Breaks one thing; returns a note on what was done and the ids of any
/// writes it made itself (they must be delivered too).
async fn fault(ctx: &Ctx, kind: Kind) -> Result<(String, Vec<String>), String> {
    let r = &ctx.roles;
    let outage = ctx.settings.outage;
    let mut extra = Vec::new();
    let target = |part| match part {
        Part::Broker => &r.broker,
        Part::Receiver => &r.receiver,
        Part::Sender => &r.sender,
        Part::SenderDb => &r.sender_db,
    };
    let note = match kind {
        Kind::Act(action, part) if action.undo().is_some() => {
            let target = target(part);
            ctx.act(target, action).await?;
            tokio::time::sleep(outage).await;
            ctx.act(target, action.undo().expect("checked")).await?;
            format!("`{target}` stopped for {outage:?}")
        }
        Kind::Act(action, part) => {
            let target = target(part);
            // The services are struck mid-batch: the relay publishing, the receiver processing.
            let when = if part == Part::Broker { When::Now } else { When::BatchInFlight };
            let (note, burst) = kill(ctx, target, action, when).await?;
            extra = burst;
            note
        }
        Kind::HeldKill(when) => {
            let (note, burst) = kill(ctx, &r.receiver, Action::Kill, when).await?;
            extra = burst;
            note
        }
        Kind::Poison => {
            // Counted at the receiver while it lives: a later crash resets its counters.
            let before = ctx.receiver_metric(RECEIVER_REJECTED.series).await;
            super::demo::send_poison(&r.broker_url, &r.queue).await?;
            let sent = Instant::now();
            while ctx.receiver_metric(RECEIVER_REJECTED.series).await < before + 1.0 {
                if sent.elapsed() > ctx.settings.settle {
                    return Err("the poison message was not rejected to the DLQ".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            format!(
                "a malformed message put on the queue; rejected to the DLQ after {:.1} s",
                sent.elapsed().as_secs_f64()
            )
        }
    };
    Ok((note, extra))
}

fn markdown(
    report: &Report,
    faults: &[Fault],
    memory: &[(f64, Memory)],
    duration: Duration,
    ctx: &Ctx,
    rejected: usize,
) -> String {
    let mut text = format!(
        "# Soak: {} of steady load with a random fault every 15–30 s\n\n\
         Reproduce: `apphost test --scenario soak --duration {} --outage {}s --rate {} --report FILE`.\n\
         Measured {} with apphost {}.\n\n\
         | verdict | acknowledged | refused (503 of them) | delivered | **lost** | **duplicate effects** | poison to DLQ | faults |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} ({}) | {} | **{}** | **{}** | {} | {} |\n\n",
        format_args!("{:?}", duration),
        format_args!("{:?}", duration),
        ctx.settings.outage.as_secs(),
        ctx.settings.rate,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        env!("CARGO_PKG_VERSION"),
        if report.passed() { "passed" } else { "FAILED" },
        report.acknowledged,
        report.refused,
        report.unavailable,
        report.delivered,
        report.lost,
        report.duplicate_effects,
        rejected,
        faults.len(),
    );
    text.push_str(
        "How it is counted:\n\
         - *acknowledged*: POSTs answered 201 (a refusal promised nothing);\n\
         - *lost*: acknowledged ids missing from the receiver's `GET /api/EntityItems` once the load stopped;\n\
         - *duplicate effects*: applications of acknowledged items beyond the first, as the receiver's \
           projection counts them (`entity_items.applied`, raised in the same transaction as every application).\n\n",
    );
    for note in &report.notes {
        text.push_str(&format!("- {note}\n"));
    }
    if !report.notes.is_empty() {
        text.push('\n');
    }
    if let Some(why) = &report.failure {
        text.push_str(&format!("Failure: {why}\n\n"));
    }
    let mut kinds: Vec<String> =
        FAULTS.iter().map(|k| format!("{k} × {}", faults.iter().filter(|f| f.kind == *k).count())).collect();
    kinds.sort();
    text.push_str(&format!("Faults by kind: {}.\n\n", kinds.join(", ")));
    // apphost's memory every 5 minutes (and the last sample), so its shape shows, not only two points.
    text.push_str(
        "## apphost's memory\n\n| at | RssAnon (allocated) | RssFile (mapped files) | VmRSS | in use by the allocator | threads |\n|---|---|---|---|---|---|\n",
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut next = 0.0;
    for (i, (at, m)) in memory.iter().enumerate() {
        if *at >= next || i + 1 == memory.len() {
            text.push_str(&format!(
                "| {:.0} min | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} MiB | {} |\n",
                at / 60.0,
                mib(m.anon),
                mib(m.file),
                mib(m.rss),
                mib(m.in_use),
                m.threads
            ));
            next = (at / 300.0).floor() * 300.0 + 300.0;
        }
    }
    text.push('\n');
    text.push_str(&format!(
        "Full delivery {} after the load stopped.\n\n## Faults\n\n| at | fault | what | all healthy again (from the fault's start) |\n|---|---|---|---|\n",
        report.recovery_seconds.map_or("never".into(), |s| format!("{s:.1} s")),
    ));
    for f in faults {
        text.push_str(&format!(
            "| {:.0} s | {} | {} | {} |\n",
            f.at,
            f.kind,
            f.note,
            f.recovered_after.map_or("-".into(), |s| format!("{s:.1} s"))
        ));
    }
    text
}

/// Kills `target` at moment `when` and waits until the supervisor brings it
/// back (or starts it, if its policy does not). A note and the ids of the
/// writes made to catch it there.
async fn kill(ctx: &Ctx, target: &str, action: Action, when: When) -> Result<(String, Vec<String>), String> {
    // Not running and not on its way back.
    let gone = |s: &State| matches!(s, State::Exited(_) | State::Failed(_) | State::Stopped);
    let (mut note, mut burst, mut held) = (format!("`{target}` SIGKILLed"), Vec::new(), None);
    if when == When::BatchInFlight {
        let (how, extra) = ctx.mid_batch(target).await?;
        (note, burst) = (format!("`{target}` SIGKILLed {how}"), extra);
    } else if when.holds_the_database() {
        let (hold, how, extra) = ctx.hold_receiver(target, when).await?;
        (note, burst, held) = (format!("`{target}` SIGKILLed {how}"), extra, Some(hold));
    }
    let started_at =
        || ctx.supervisor.snapshot().into_iter().find(|s| s.resource == *target).and_then(|s| s.started_at);
    let before = started_at();
    let killed = Instant::now();
    let acted = ctx.act(target, action).await;
    if let Some(hold) = held {
        hold.release().await?;
    }
    acted?;
    // The fault lasts (and its recovery is timed) from here until the stack is healthy
    // again; wait until the supervisor has seen the kill, so that is not measured too early.
    while started_at() == before && killed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restart policy brings it back; when it does not within 2 s (policy `no`), start it.
    let all_gone = || ctx.supervisor.snapshot().iter().filter(|s| s.resource == *target).all(|s| gone(&s.state));
    let seen = Instant::now();
    while all_gone() && seen.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if all_gone() {
        ctx.act(target, Action::Start).await?;
    }
    Ok((note, burst))
}

/// This process's resident memory, from `/proc/self/status`: all of it
/// (`VmRSS`), what it allocated (`RssAnon`: heap, stacks) and the pages of
/// files mapped in (`RssFile`: above all its own executable's code, paged in
/// as code paths run for the first time; bounded by the file's size, shared
/// and given back under pressure). Sampled after jemalloc (apphost's
/// allocator, see `main.rs`) has given back its unused pages.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    /// What the allocator has handed out and not had back (jemalloc's
    /// `stats.allocated`): beside `anon` it tells held memory from
    /// fragmentation. Diagnostic only; the verdict is on `anon`.
    in_use: u64,
    /// The process's threads (each has a stack in `anon`).
    threads: u64,
}

impl Memory {
    fn now() -> Option<Memory> {
        // What the allocator keeps of freed memory (a burst's buffers, long freed) is given back
        // first, so the figure is what apphost holds, not the high-water mark of its allocator.
        // `arena.<MALLCTL_ARENAS_ALL>.purge` takes and returns nothing.
        // SAFETY: a valid, NUL-terminated name and no values; purging only releases unused pages.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        // The statistics are a snapshot taken at each epoch.
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        let in_use = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let value = |name: &str| -> Option<u64> {
            status.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()
        };
        Some(Memory {
            rss: value("VmRSS:")? * 1024,
            anon: value("RssAnon:")? * 1024,
            file: value("RssFile:")? * 1024,
            in_use,
            threads: value("Threads:")?,
        })
    }
}

/// Fails the soak when the memory apphost allocated (`RssAnon`) grew more
/// than 10 % from the first sample after 10 minutes to the last; all three
/// figures go into the notes.
fn judge_memory(memory: &[(f64, Memory)], report: &mut Report) {
    let (Some((_, at_10)), Some((_, end))) = (memory.iter().find(|(at, _)| *at >= 600.0), memory.last()) else {
        return;
    };
    let mib = |b: u64| b as f64 / 1048576.0;
    let growth = |a: u64, b: u64| (b as f64 / a as f64 - 1.0) * 100.0;
    report.notes.push(format!(
        "apphost's allocated memory (RssAnon, after jemalloc's purge): {:.1} MiB after 10 min, {:.1} MiB at the end ({:+.1} %; at most +10 % passes)",
        mib(at_10.anon),
        mib(end.anon),
        growth(at_10.anon, end.anon)
    ));
    report.notes.push(format!(
        "apphost's whole RSS (VmRSS, with its executable's pages, RssFile {:.1} → {:.1} MiB): {:.1} MiB after 10 min, {:.1} MiB at the end ({:+.1} %)",
        mib(at_10.file),
        mib(end.file),
        mib(at_10.rss),
        mib(end.rss),
        growth(at_10.rss, end.rss)
    ));
    report.notes.push(format!(
        "in use by the allocator (jemalloc's stats.allocated): {:.2} MiB after 10 min, {:.2} MiB at the end; the rest of RssAnon is \
         free memory it keeps in partly used pages",
        mib(at_10.in_use),
        mib(end.in_use)
    ));
    if growth(at_10.anon, end.anon) > 10.0 && report.failure.is_none() {
        report.failure =
            Some(format!("apphost's memory grew {:.1} % after its first 10 minutes", growth(at_10.anon, end.anon)));
    }
}

#[cfg(test)]
mod tests {
    use super::{Memory, Report, judge_memory};

    fn at(minutes: f64, anon_mib: u64, file_mib: u64) -> (f64, Memory) {
        let (anon, file) = (anon_mib << 20, file_mib << 20);
        (minutes * 60.0, Memory { rss: anon + file, anon, file, in_use: anon / 2, threads: 8 })
    }

    #[test]
    fn allocated_memory_growing_past_ten_percent_after_ten_minutes_fails() {
        // The first sample at or after 10 minutes is the reference, the last the end.
        let grew = [at(5.0, 5, 10), at(10.5, 20, 10), at(30.0, 21, 30), at(60.0, 23, 30)];
        let mut report = Report::default();
        judge_memory(&grew, &mut report);
        assert!(report.failure.as_deref().is_some_and(|f| f.contains("grew 15.0 %")), "{report:?}");

        // Pages of the executable coming in (RssFile) do not count; the allocated memory held.
        let held = [at(10.0, 20, 10), at(60.0, 21, 30)];
        let mut report = Report::default();
        judge_memory(&held, &mut report);
        assert_eq!(report.failure, None, "{report:?}");
        assert!(report.notes.iter().any(|n| n.contains("+5.0 %")), "{:?}", report.notes);

        // Shorter than 10 minutes: nothing to judge.
        let mut report = Report::default();
        judge_memory(&[at(1.0, 5, 5), at(9.0, 50, 5)], &mut report);
        assert_eq!((report.failure, report.notes.len()), (None, 0));
    }
}
