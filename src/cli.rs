//! The command line: one subcommand per verb, each a function of its arguments.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use miette::{IntoDiagnostic, miette};

use crate::{
    app,
    control::Client,
    state::{Session, StateDir},
    supervisor::Status,
    topology::{self, RuntimeChoice},
};

#[derive(Debug, Parser)]
#[command(
    name = "apphost",
    version,
    about = "Run a message-driven microservice stack from one apphost.yaml",
    long_about = "Run a message-driven microservice stack from one apphost.yaml.\n\n\
        `apphost up` starts PostgreSQL and ActiveMQ Artemis (as containers when a Docker engine \
        answers, as local processes otherwise), builds and launches the services with their \
        connection strings injected, and shows their logs and health. `apphost down` removes \
        everything again, also after a crash."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The topology file [default: apphost.yaml].
    #[arg(short = 'f', long = "file", env = "APPHOST_FILE")]
    pub file: Option<PathBuf>,
}

/// `-f FILE` after the subcommand too, as docker compose users type it.
#[derive(Debug, Args, Default)]
pub struct FileArg {
    /// The topology file [default: apphost.yaml].
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Docker,
    Process,
}

impl RuntimeArg {
    fn choice(self) -> RuntimeChoice {
        match self {
            RuntimeArg::Auto => RuntimeChoice::Auto,
            RuntimeArg::Docker => RuntimeChoice::Docker,
            RuntimeArg::Process => RuntimeChoice::Process,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start every resource of apphost.yaml and follow their output until Ctrl-C.
    Up {
        #[command(flatten)]
        at: FileArg,
        /// Print prefixed log lines instead of the dashboard (the default when stdout is not a terminal).
        #[arg(long)]
        headless: bool,
        /// Run in the background: return once everything is healthy
        /// (`apphost dashboard` watches it, `apphost down` stops it).
        #[arg(short = 'd', long, conflicts_with = "headless")]
        detach: bool,
        /// Where resources that can run either way run: containers or local processes.
        #[arg(long, value_enum)]
        runtime: Option<RuntimeArg>,
        /// Build projects with `--release`.
        #[arg(long)]
        release: bool,
        /// Use the project binaries already built instead of running `cargo build`.
        #[arg(long)]
        no_build: bool,
        /// How long a graceful teardown may take before everything is killed.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        teardown: Duration,
        /// Log lines kept per resource.
        #[arg(long, default_value_t = crate::logs::DEFAULT_CAPACITY)]
        log_lines: usize,
    },
    /// Open the dashboard on the running app (`q` detaches; the app runs on).
    Dashboard {
        #[command(flatten)]
        at: FileArg,
    },
    /// Stop and remove everything of this app (also what a killed apphost left).
    Down {
        #[command(flatten)]
        at: FileArg,
    },
    /// Show resources, their state, health and endpoints.
    Ps {
        #[command(flatten)]
        at: FileArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a resource's output (all resources when none is named).
    Logs {
        /// The topology file (`-f` means `--follow` here).
        #[arg(long = "file")]
        file: Option<PathBuf>,
        resource: Option<String>,
        /// Keep following new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many earlier lines to show.
        #[arg(short = 'n', long, default_value_t = 200)]
        tail: usize,
        /// Show lifecycle events instead of output.
        #[arg(long)]
        events: bool,
    },
    /// Stop a resource of the running app.
    Stop {
        resource: String,
        #[command(flatten)]
        at: FileArg,
    },
    /// Start a stopped resource of the running app.
    Start {
        resource: String,
        #[command(flatten)]
        at: FileArg,
    },
    /// Restart a resource of the running app.
    Restart {
        resource: String,
        #[command(flatten)]
        at: FileArg,
    },
    /// CI smoke mode: start the stack headless, run reliability scenarios, tear down; exit 0 only if all pass.
    Test {
        #[command(flatten)]
        at: FileArg,
        /// Scenarios to run (repeatable): a built-in name, a scenario file
        /// (`.yaml`), or `soak`; all built-in ones when none is given.
        #[arg(long = "scenario", value_name = "NAME|FILE")]
        scenarios: Vec<String>,
        /// How long `soak` runs.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        duration: Duration,
        /// Where `soak` writes its report (Markdown).
        #[arg(long, default_value = "soak-report.md")]
        report: PathBuf,
        /// Write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        #[arg(long, value_enum)]
        runtime: Option<RuntimeArg>,
        /// Use the project binaries already built.
        #[arg(long)]
        no_build: bool,
        /// How long each fault lasts.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        outage: Duration,
        /// Requests per second of the steady load.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// How long full delivery may take after a fault.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        settle: Duration,
        /// How long the stack may take to become healthy.
        #[arg(long, default_value = "300s", value_parser = parse_duration)]
        healthy_within: Duration,
    },
    /// Break things on purpose to see that nothing is lost (each action is an event).
    Chaos {
        #[command(subcommand)]
        action: ChaosAction,
        #[command(flatten)]
        at: FileArg,
    },
    /// Validate apphost.yaml without starting anything.
    Check {
        #[command(flatten)]
        at: FileArg,
    },
    /// Print a JSON Schema of apphost.yaml for editors.
    Schema,
    /// Check this machine for what apphost needs, with the fix for each gap.
    Doctor {
        #[command(flatten)]
        at: FileArg,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChaosAction {
    /// Stop the broker (the app's artemis resource).
    StopBroker {
        /// Start it again after this long.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Start the broker again.
    StartBroker,
    /// SIGKILL a resource (container kill on docker): a crash, so its restart policy applies.
    Kill { resource: String },
    /// Freeze a resource (SIGSTOP / container pause).
    Pause {
        resource: String,
        /// Resume it after this long.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Restart a resource.
    Restart { resource: String },
    /// Cut a container off the network (docker runtime only).
    Partition {
        resource: String,
        /// Reconnect it after this long.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    topology::parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration such as `30s`"))
}

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    runtime.block_on(dispatch(cli))
}

fn file_of(global: Option<PathBuf>, here: Option<PathBuf>) -> PathBuf {
    here.or(global).unwrap_or_else(|| PathBuf::from("apphost.yaml"))
}

async fn dispatch(cli: Cli) -> miette::Result<ExitCode> {
    let global = cli.global.file;
    match cli.command {
        Command::Up { at, headless: _, detach: true, runtime, release, no_build, teardown, log_lines } => {
            let file = file_of(global, at.file);
            let mut args: Vec<String> = vec![
                "--teardown".into(),
                format!("{}s", teardown.as_secs()),
                "--log-lines".into(),
                log_lines.to_string(),
            ];
            if let Some(r) = runtime {
                args.extend(["--runtime".into(), format!("{r:?}").to_lowercase()]);
            }
            args.extend(release.then(|| "--release".to_owned()));
            args.extend(no_build.then(|| "--no-build".to_owned()));
            app::up_detached(&file, &args).await
        }
        Command::Dashboard { at } => attach(&file_of(global, at.file)).await,
        Command::Up { at, headless, detach: false, runtime, release, no_build, teardown, log_lines } => {
            let file = file_of(global, at.file);
            let runtime = runtime.map(RuntimeArg::choice);
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::io::IsTerminal::is_terminal(&std::io::stdin());
            let dashboard = !headless && terminal && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
            app::up(&file, app::UpOptions { runtime, release, no_build, teardown, log_capacity: log_lines, dashboard })
                .await
        }
        Command::Down { at } => app::down(&file_of(global, at.file)).await,
        Command::Ps { at, json } => ps(&file_of(global, at.file), json).await,
        Command::Logs { file, resource, follow, tail, events } => {
            logs(&file_of(global, file), resource, follow, tail, events).await
        }
        Command::Stop { resource, at } => act(&file_of(global, at.file), &resource, "stop").await,
        Command::Start { resource, at } => act(&file_of(global, at.file), &resource, "start").await,
        Command::Restart { resource, at } => act(&file_of(global, at.file), &resource, "restart").await,
        Command::Test {
            at,
            scenarios,
            duration,
            report,
            junit,
            runtime,
            no_build,
            outage,
            rate,
            settle,
            healthy_within,
        } => {
            let options = app::UpOptions {
                runtime: runtime.map(RuntimeArg::choice),
                release: false,
                no_build,
                teardown: Duration::from_secs(30),
                log_capacity: crate::logs::DEFAULT_CAPACITY,
                dashboard: false,
            };
            let names = if scenarios.is_empty() {
                crate::scenario::BUILT_IN.iter().map(|s| s.to_string()).collect()
            } else {
                scenarios
            };
            let mut scenarios = Vec::new();
            for name in names {
                use crate::scenario::Pick;
                let path = PathBuf::from(&name);
                scenarios.push(if name == "soak" {
                    Pick::Soak { duration, report: report.clone() }
                } else if crate::scenario::BUILT_IN.contains(&name.as_str()) {
                    Pick::BuiltIn(name)
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") || path.exists() {
                    Pick::File(path)
                } else {
                    return Err(miette!(
                        help = format!(
                            "built in: {}, soak; or a scenario file (`.yaml`)",
                            crate::scenario::BUILT_IN.join(", ")
                        ),
                        "no scenario is called `{name}`"
                    ));
                });
            }
            let settings = crate::scenario::Settings { outage, rate, settle };
            app::test(&file_of(global, at.file), options, scenarios, junit, settings, healthy_within).await
        }
        Command::Chaos { action, at } => chaos(&file_of(global, at.file), action).await,
        Command::Check { at } => {
            let file = file_of(global, at.file);
            let t = topology::load(&file)?;
            println!("{}: `{}` with {} resources is valid", file.display(), t.name, t.resources.len());
            for (i, wave) in topology::graph::waves(&t).iter().enumerate() {
                println!("  start wave {}: {}", i + 1, wave.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&topology::schema::json_schema()).into_diagnostic()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { at } => crate::doctor::run(&file_of(global, at.file)).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "apphost", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The running session of the app at `file`, or a clear error.
pub fn session(file: &std::path::Path) -> miette::Result<Session> {
    Session::load_live(&StateDir::for_topology(file)).ok_or_else(|| {
        miette!(help = "start it with `apphost up`", "no apphost is running the app of {}", file.display())
    })
}

async fn ps(file: &std::path::Path, json: bool) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let client = Client::new(&session);
    if json {
        let response = client.get("/v1/ps").await.map_err(|e| miette!("{e}"))?;
        let statuses: Vec<Status> = response.json().await.into_diagnostic()?;
        println!("{}", serde_json::to_string_pretty(&statuses).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    // The table shows what the dashboard shows, from the same view.
    let response = client.get("/v1/view?limit=0").await.map_err(|e| miette!("{e}"))?;
    let view: dashboard::view::Snapshot = response.json().await.into_diagnostic()?;
    println!(
        "{:<16} {:<11} {:<8} {:<14} {:<10} {:>3} {:>7} {:>6} {:>6}  ENDPOINTS",
        "NAME", "KIND", "RUNTIME", "STATE", "HEALTH", "RST", "UPTIME", "CPU", "MEM"
    );
    let now = chrono::Utc::now();
    for r in view.resources {
        let uptime = r.up_since.map_or("-".into(), |t| dashboard::panes::duration((now - t).num_seconds()));
        let health = match (r.phase, r.health) {
            (dashboard::Phase::Up, dashboard::Health::Healthy) => "healthy",
            (dashboard::Phase::Up, dashboard::Health::Unhealthy) => "unhealthy",
            (dashboard::Phase::Up, dashboard::Health::Unknown) => "checking",
            _ => "-",
        };
        let cpu = r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%"));
        let mem = r.memory_bytes.map_or("-".into(), dashboard::panes::bytes);
        println!(
            "{:<16} {:<11} {:<8} {:<14} {:<10} {:>3} {:>7} {:>6} {:>6}  {}",
            r.name,
            r.kind,
            r.runtime,
            r.state,
            health,
            r.restarts,
            uptime,
            cpu,
            mem,
            r.endpoints.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `apphost dashboard`: the dashboard of a running session, from its control API.
async fn attach(file: &std::path::Path) -> miette::Result<ExitCode> {
    let session = session(file)?;
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(miette!(
            help = "run it in a terminal; `apphost ps` and `apphost logs -f` work anywhere",
            "the dashboard needs a terminal"
        ));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stack = crate::view::RemoteStack::connect(Client::new(&session), stop.clone(), stop.clone());
    let exit = dashboard::run(stack, stop.clone(), dashboard::Options { attached: true, ..Default::default() })
        .await
        .into_diagnostic()?;
    stop.cancel();
    match exit {
        dashboard::Exit::Quit => println!("detached; `{}` keeps running (`apphost down` stops it)", session.app),
        dashboard::Exit::Stopped => println!("`{}` is no longer running", session.app),
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(
    file: &std::path::Path,
    resource: Option<String>,
    follow: bool,
    tail: usize,
    events: bool,
) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let client = Client::new(&session);
    if events {
        let response = client.get("/v1/events").await.map_err(|e| miette!("{e}"))?;
        let events: Vec<crate::supervisor::Event> = response.json().await.into_diagnostic()?;
        for e in events.iter().filter(|e| resource.as_ref().is_none_or(|r| &e.resource == r)) {
            println!("{} {:<16} {}", e.at.format("%H:%M:%S%.3f"), e.resource, e.message);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut path = format!("/v1/logs?tail={tail}&follow={follow}");
    if let Some(r) = &resource {
        path.push_str(&format!("&resource={r}"));
    }
    let response = client.get(&path).await.map_err(|e| miette!("{e}"))?;
    if !response.status().is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(miette!("{}", body["error"].as_str().unwrap_or("cannot read logs")));
    }
    let names = vec![resource.unwrap_or_default()];
    let printer = crate::headless::Printer::new(&names);
    let mut stream = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if let Ok(line) = serde_json::from_slice::<crate::logs::LogLine>(&line) {
                println!("{}", printer.format(&line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(file: &std::path::Path, resource: &str, action: &str) -> miette::Result<ExitCode> {
    let session = session(file)?;
    let answer =
        Client::new(&session).post(&format!("/v1/resources/{resource}/{action}")).await.map_err(|e| miette!("{e}"))?;
    println!("{}", answer["ok"].as_str().unwrap_or("done"));
    Ok(ExitCode::SUCCESS)
}

async fn chaos(file: &std::path::Path, action: ChaosAction) -> miette::Result<ExitCode> {
    let broker = || -> miette::Result<String> {
        let t = topology::load(file)?;
        t.resources
            .iter()
            .find(|r| r.kind == topology::Kind::Artemis)
            .map(|r| r.name.clone())
            .ok_or_else(|| miette!("{} has no artemis resource to stop", file.display()))
    };
    let (resource, verb, duration) = match action {
        ChaosAction::StopBroker { duration } => (broker()?, "stop", duration),
        ChaosAction::StartBroker => (broker()?, "start", None),
        ChaosAction::Kill { resource } => (resource, "kill", None),
        ChaosAction::Pause { resource, duration } => (resource, "pause", duration),
        ChaosAction::Restart { resource } => (resource, "restart", None),
        ChaosAction::Partition { resource, duration } => (resource, "partition", duration),
    };
    let session = session(file)?;
    let mut path = format!("/v1/resources/{resource}/{verb}?chaos=true");
    if let Some(d) = duration {
        path.push_str(&format!("&for={}ms", d.as_millis()));
    }
    let answer = Client::new(&session).post(&path).await.map_err(|e| miette!("{e}"))?;
    let lasting = duration.map(|d| format!(" (undone after {d:?})")).unwrap_or_default();
    println!("{}{lasting}", answer["ok"].as_str().unwrap_or("done"));
    Ok(ExitCode::SUCCESS)
}
