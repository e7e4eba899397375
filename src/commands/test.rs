//! `apphost test`: the stack headless, the reliability scenarios, teardown,
//! and a verdict (`N passed, M failed`, a JUnit report on request).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use miette::{IntoDiagnostic, miette};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{
    headless::Printer,
    kinds::Kind,
    logs::{LogStore, Stream},
    root::{UpOptions, claim, say_owned, start},
    scenario::{BUILT_IN, Pick},
    topology::Topology,
    view::LiveStack,
};

/// `apphost test`: the stack headless, the scenarios, teardown, a verdict.
pub async fn test(
    file: &Path,
    options: UpOptions,
    scenarios: Vec<crate::scenario::Pick>,
    junit: Option<std::path::PathBuf>,
    settings: crate::scenario::Settings,
    healthy_within: Duration,
) -> miette::Result<ExitCode> {
    use std::io::Write;

    let (topology, state, _lock) = claim(file)?;
    let roles = roles(&topology)?;
    // Scenario files are read (and their mistakes shown) before anything starts.
    let resources: Vec<String> = topology.resources.iter().map(|r| r.name.clone()).collect();
    let mut files = HashMap::new();
    for pick in &scenarios {
        if let crate::scenario::Pick::File(path) = pick {
            files.insert(path.clone(), crate::scenario::file::load(path, &resources)?);
        }
    }
    let logs = LogStore::for_session(options.log_capacity, &state.logs_dir());
    // Resources' output goes to a file; apphost's own lines to the terminal.
    let output_path = state.root.join("test-output.log");
    let mut output = crate::statedir::private_log(&output_path, true).into_diagnostic()?;
    let mut rx = logs.subscribe();
    let names: Vec<String> = topology.resources.iter().map(|r| r.name.clone()).collect();
    let stop_writing = CancellationToken::new();
    let writer = tokio::spawn({
        let stop = stop_writing.clone();
        async move {
            let printer = Printer::new(&names);
            let mut write = |line: &crate::logs::LogLine| {
                let _ = writeln!(output, "{}", printer.format(line));
                if &*line.resource == "apphost" && line.stream == Stream::System {
                    println!("{}", line.text);
                }
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    line = rx.recv() => match line {
                        Ok(line) => write(&line),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    },
                }
            }
            // What was said before the stop is still written.
            while let Ok(line) = rx.try_recv() {
                write(&line);
            }
        }
    });
    let say = say_owned(&logs);
    say(&format!("resource output: {}", output_path.display()));

    // Listened for before the start, so that a Ctrl-C while it runs is answered by the teardown.
    let mut interrupt = signal(SignalKind::interrupt()).into_diagnostic()?;
    // The benchmark times the start-up as often as its other figures: the
    // stack is started (to healthy) and stopped that many times less one,
    // then started for the scenarios; `startups` holds each time.
    let startup_runs = scenarios.iter().find_map(|p| if let Pick::Bench(o) = p { Some(o.runs) } else { None });
    let mut startups = Vec::new();
    // Each timed start is a second `up` with nothing changed: what changed since
    // the last build (a commit, another checkout sharing the target folder) is
    // compiled first, untimed, so that it is not counted as a start.
    if startup_runs.is_some() && !options.no_build {
        let packages = crate::root::packages(&topology);
        if !packages.is_empty() {
            let began = std::time::Instant::now();
            say("building the projects before the timed starts");
            let progress = crate::root::cargo_progress(&logs);
            crate::build::build(topology.root(), &packages, options.release, false, progress).await?;
            say(&format!("built in {:.1} s (not counted as a start)", began.elapsed().as_secs_f64()));
        }
    }
    for _ in 1..startup_runs.unwrap_or(1) {
        let began = std::time::Instant::now();
        let app = start(&topology, &state, &options, &logs, &LiveStack::new(logs.clone()), &say).await?;
        let ready = tokio::select! {
            r = tokio::time::timeout(healthy_within, all_healthy(&app)) => Some(r.unwrap_or(false)),
            _ = interrupt.recv() => None,
        };
        startups.push(began.elapsed());
        if ready == Some(true) {
            app.announced(Duration::from_secs(1)).await;
        }
        let not_ready = (ready == Some(false)).then(|| why_not_ready(&app, healthy_within, &say));
        // A second Ctrl-C during the teardown kills at once, as after the scenarios.
        app.teardown(
            options.teardown,
            async {
                interrupt.recv().await;
            },
            &say,
        )
        .await;
        if ready.is_none() {
            stop_writing.cancel();
            let _ = writer.await;
            return Ok(ExitCode::from(130));
        }
        if let Some(why) = not_ready {
            return Err(miette!("{why}; see {}", output_path.display()));
        }
    }
    let began_startup = std::time::Instant::now();
    let app = start(&topology, &state, &options, &logs, &LiveStack::new(logs.clone()), &say).await?;
    let mut roles = roles;
    // What the scenarios reach directly, as the planner wired it for the services.
    let connection = |resource: &str| {
        app.instances
            .iter()
            .find(|i| i.resource.name == resource)
            .and_then(|i| i.connection_string())
            .unwrap_or_default()
    };
    roles.broker_url = connection(&roles.broker);
    // The receiver's effects are counted in its own database, reached as it reaches it.
    if !roles.receiver_db.is_empty() {
        roles.receiver_db_url = connection(&roles.receiver_db);
    }
    let mut reports = Vec::new();
    let mut interrupted = false;
    let healthy = all_healthy(&app);
    let ready = tokio::select! {
        r = tokio::time::timeout(healthy_within, healthy) => r.unwrap_or(false),
        _ = interrupt.recv() => { interrupted = true; false }
    };
    startups.push(began_startup.elapsed());
    if ready {
        let ctx = crate::scenario::Ctx::new(app.supervisor.clone(), roles, settings).with_telemetry(app.telemetry());
        let runtime =
            app.instances.iter().find(|i| i.resource.kind.spec().is_broker()).map_or("process", |i| i.runtime.as_str());
        for pick in &scenarios {
            use crate::scenario::Pick;
            let name = match pick {
                Pick::BuiltIn(name) => name.clone(),
                Pick::File(path) => files[path].name.clone(),
                Pick::Soak { .. } => "soak".into(),
                Pick::Bench(_) => "bench".into(),
            };
            say(&format!("scenario {name}: running"));
            let began = chrono::Utc::now();
            let run = async {
                match pick {
                    Pick::BuiltIn(name) if name == "apphost-killed" => {
                        crate::scenario::apphost_killed(file, runtime, &topology.name).await
                    }
                    Pick::BuiltIn(name) => ctx.run(name).await,
                    Pick::File(path) => ctx.run_steps(&name, &files[path].steps).await,
                    Pick::Soak { duration, report } => crate::scenario::soak(&ctx, *duration, report).await,
                    Pick::Bench(options) => {
                        let sender_db = connection(&ctx.roles.sender_db);
                        let labels = std::collections::HashMap::from([
                            (crate::runtime::docker::LABEL_APP.to_owned(), topology.name.clone()),
                            (crate::runtime::docker::LABEL_OWNER.to_owned(), state.owner()),
                        ]);
                        crate::bench::bench(&ctx, &app.instances, &sender_db, &startups, options, &labels).await
                    }
                }
            };
            let report = tokio::select! {
                r = run => r,
                _ = interrupt.recv() => { interrupted = true; break; }
            };
            say(&format!(
                "scenario {name}: {} — acknowledged {}, refused {}, delivered {}, lost {}, duplicate effects {}, recovery {}",
                if report.passed() { "passed" } else { "FAILED" },
                report.acknowledged,
                report.refused,
                report.delivered,
                report.lost,
                report.duplicate_effects,
                report.recovery_seconds.map_or("-".into(), |s| format!("{s:.1}s")),
            ));
            for note in &report.notes {
                say(&format!("scenario {name}: {note}"));
            }
            if let Some(why) = &report.failure {
                say(&format!("scenario {name}: {why}"));
                // What the stack went through meanwhile (restarts, health flips, troubles such
                // as a broker blocking producers on a full disk): the cause is often among them.
                let events: Vec<_> = app.supervisor.history().into_iter().filter(|e| e.at >= began).collect();
                for e in &events[events.len().saturating_sub(40)..] {
                    say(&format!(
                        "scenario {name}: event {} {} {}",
                        e.at.format("%H:%M:%S%.3f"),
                        e.resource,
                        e.message
                    ));
                }
            }
            reports.push(report);
        }
    } else if !interrupted {
        let why = why_not_ready(&app, healthy_within, &say);
        reports.push(crate::scenario::Report {
            scenario: "startup".into(),
            failure: Some(format!("{why}; see {}", output_path.display())),
            ..Default::default()
        });
    }
    app.teardown(
        options.teardown,
        async move {
            interrupt.recv().await;
        },
        &say,
    )
    .await;
    stop_writing.cancel();
    let _ = writer.await;
    if let Some(path) = junit {
        std::fs::write(&path, crate::scenario::junit(&reports)).into_diagnostic()?;
        println!("JUnit report: {}", path.display());
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    println!("{passed} passed, {} failed", reports.len() - passed);
    Ok(if interrupted {
        ExitCode::from(130)
    } else if passed == reports.len() && !reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Why a started stack is not ready, said a line per resource that is not
/// healthy (with its state) and returned in one line: "failed at start-up"
/// when a resource failed for good (it need not have waited out the limit),
/// else not healthy within it. Read before a teardown changes every state.
fn why_not_ready(app: &crate::root::RunningApp, healthy_within: Duration, say: &impl Fn(&str)) -> String {
    let snapshot = app.supervisor.snapshot();
    let failed = snapshot.iter().any(|s| matches!(s.state, crate::supervisor::State::Failed(_)));
    let when = if failed { "failed at start-up".to_owned() } else { format!("not healthy after {healthy_within:?}") };
    let each: Vec<String> = snapshot
        .iter()
        .filter(|s| s.state != crate::supervisor::State::Healthy)
        .map(|s| format!("{} is {}", s.name, s.state.label()))
        .collect();
    for line in &each {
        say(&format!("{when}: {line}"));
    }
    format!("the stack {when} ({})", each.join(", "))
}

/// Whether every resource of `app` becomes healthy; false as soon as one
/// failed for good, rather than waiting out the limit.
async fn all_healthy(app: &crate::root::RunningApp) -> bool {
    let mut changes = app.supervisor.changes();
    loop {
        if app.supervisor.all_healthy() {
            return true;
        }
        if app.supervisor.snapshot().iter().any(|s| matches!(s.state, crate::supervisor::State::Failed(_))) {
            return false;
        }
        if changes.changed().await.is_err() {
            return false;
        }
    }
}

/// What `--scenario` named (all built-in ones when nothing): built-in
/// scenarios, scenario files, or `soak` (for `duration`, reported to `report`).
pub fn picks(names: Vec<String>, duration: Duration, report: PathBuf) -> miette::Result<Vec<Pick>> {
    let names = if names.is_empty() { BUILT_IN.iter().map(|s| s.to_string()).collect() } else { names };
    names
        .into_iter()
        .map(|name| {
            let path = PathBuf::from(&name);
            Ok(if name == "soak" {
                Pick::Soak { duration, report: report.clone() }
            } else if BUILT_IN.contains(&name.as_str()) {
                Pick::BuiltIn(name)
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") || path.exists() {
                Pick::File(path)
            } else {
                return Err(miette!(
                    help = format!("built in: {}, soak; or a scenario file (`.yaml`)", BUILT_IN.join(", ")),
                    "no scenario is called `{name}`"
                ));
            })
        })
        .collect()
}

/// The postgres resource that `service` references: its database.
fn database_of(t: &Topology, service: &str) -> Option<String> {
    t.resource(service)?
        .references
        .iter()
        .find(|r| t.resource(&r.name).is_some_and(|x| x.kind == Kind::Postgres))
        .map(|r| r.name.clone())
}

/// The demo's parts by name: `sender`, `receiver`, the artemis resource, and
/// the postgres resource the sender references.
fn roles(t: &Topology) -> miette::Result<crate::scenario::Roles> {
    let named = |n: &str| {
        t.resource(n)
            .map(|r| r.name.clone())
            .ok_or_else(|| miette!("`apphost test` drives a resource called `{n}`, and {} has none", t.file.display()))
    };
    let sender = named("sender")?;
    let receiver = named("receiver")?;
    let broker = t
        .resources
        .iter()
        .find(|r| r.kind.spec().is_broker())
        .map(|r| r.name.clone())
        .ok_or_else(|| miette!("no artemis resource to break"))?;
    let sender_db = database_of(t, &sender).ok_or_else(|| miette!("`sender` references no postgres resource"))?;
    let queue = t
        .resource(&receiver)
        .and_then(|r| r.env.iter().find(|(k, _)| k == "RECEIVER_ADDRESS").map(|(_, v)| v.clone()))
        .unwrap_or_else(|| "entity-items".to_owned());
    let receiver_db = database_of(t, &receiver).unwrap_or_default();
    Ok(crate::scenario::Roles {
        sender,
        receiver,
        broker,
        sender_db,
        broker_url: String::new(),
        queue,
        receiver_db_url: String::new(),
        receiver_db,
    })
}
