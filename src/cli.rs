//! The command line: clap's types and the dispatch to [`crate::commands`],
//! one function per verb.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use contracts::Action;
use miette::IntoDiagnostic;

use crate::{
    commands::{self, remote},
    root::UpOptions,
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
        #[command(flatten)]
        telemetry: TelemetryArgs,
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
        /// Also remove what `down` keeps: persistent resources' data and the
        /// kept set-ups (as `docker compose down --volumes`).
        #[arg(short = 'v', long)]
        volumes: bool,
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
        #[arg(long, conflicts_with = "structured")]
        events: bool,
        /// Show the log records the services sent over OTLP (with their
        /// attributes and trace ids) instead of their output.
        #[arg(long)]
        structured: bool,
        /// Structured: only records at this level or above (trace, debug, info, warn, error).
        #[arg(long, requires = "structured", value_parser = parse_level)]
        level: Option<dashboard::telemetry::Level>,
        /// Structured: only records with this attribute (`key=value`, or `key` to be present); repeatable.
        #[arg(long = "attr", requires = "structured", value_name = "KEY[=VALUE]")]
        attributes: Vec<String>,
        /// Structured: only records of this trace.
        #[arg(long = "trace", requires = "structured", value_name = "TRACE_ID")]
        trace_id: Option<String>,
        /// Structured: one JSON object a line.
        #[arg(long, requires = "structured")]
        json: bool,
    },
    /// List the traces the app's services sent (newest first): root operation,
    /// resources touched, duration, errors.
    Traces {
        #[command(flatten)]
        at: FileArg,
        /// Only traces that touched this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Only traces at least this long (`50ms`, `1s`).
        #[arg(long, value_parser = parse_duration)]
        min_duration: Option<Duration>,
        /// Only traces with an error.
        #[arg(long)]
        errors: bool,
        /// How many at most.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one trace as a waterfall: each span, and the named waits between
    /// them (in the outbox, in the broker), then its log records.
    Trace {
        /// The trace id (32 hex digits, or a unique prefix of at least 4).
        id: String,
        #[command(flatten)]
        at: FileArg,
        #[arg(long)]
        json: bool,
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
    /// Measure the outbox pipeline against references taken in the same run
    /// (`pgbench` for the write path) and write the figures (Markdown).
    /// Not a test: it asserts no time.
    Bench {
        #[command(flatten)]
        at: FileArg,
        /// Where the figures go.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// A run of seconds instead of minutes, to see that the benchmark still works (CI).
        #[arg(long)]
        quick: bool,
        #[arg(long, value_enum)]
        runtime: Option<RuntimeArg>,
        /// Measure debug builds of the services (release by default).
        #[arg(long)]
        debug: bool,
        /// Use the project binaries already built.
        #[arg(long)]
        no_build: bool,
        /// Run only these parts (comma-separated) and print their figures
        /// instead of writing the report: for trying a change.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<crate::bench::Part>,
        /// The open loop's offered rates (POSTs a second, comma-separated),
        /// instead of 480/s and a share of the `pgbench` figure.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
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
    /// Write the app for another engine: a compose file (and owner-only env
    /// files with the generated passwords) for docker compose.
    Publish {
        #[command(flatten)]
        at: FileArg,
        /// The engine to write for.
        #[arg(long, value_enum)]
        target: commands::publish::Target,
        /// The folder to write into (created if missing).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The base of the projects' images, as `build-images` was given it.
        #[arg(long, default_value = crate::publish::images::DEFAULT_BASE)]
        base: String,
        /// The registry `build-images --push` pushed the projects' images to.
        #[arg(long)]
        registry: Option<String>,
        /// The images `build-images --debug` made.
        #[arg(long)]
        debug: bool,
        /// Kubernetes: Secrets generated by kustomize from owner-only env files, or
        /// ones you create (`<resource>-env`, with the keys `publish` prints).
        #[arg(long, value_enum, default_value = "generated")]
        secrets: crate::publish::kubernetes::Secrets,
    },
    /// Build each project's release binary and an image of it
    /// (`<app>/<resource>:<content digest>`) in the local Docker engine.
    BuildImages {
        #[command(flatten)]
        at: FileArg,
        /// The image the binaries go on (it must be in the local engine).
        #[arg(long, default_value = crate::publish::images::DEFAULT_BASE)]
        base: String,
        /// Also push them to this registry (`HOST:PORT`), as `REGISTRY/<app>/<resource>:<digest>`.
        #[arg(long)]
        push: Option<String>,
        /// Debug binaries instead of release ones: a quicker build, for trying it out and for tests.
        #[arg(long)]
        debug: bool,
    },
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
    /// (Internal) started by `up`: waits until that apphost ends, however it
    /// ends, then removes every process, container and network it left.
    #[command(hide = true)]
    Reaper {
        #[command(flatten)]
        at: FileArg,
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

impl ChaosAction {
    /// The resource (the broker when `None`), the action, and how long it lasts.
    fn split(self) -> (Option<String>, Action, Option<Duration>) {
        match self {
            ChaosAction::StopBroker { duration } => (None, Action::Stop, duration),
            ChaosAction::StartBroker => (None, Action::Start, None),
            ChaosAction::Kill { resource } => (Some(resource), Action::Kill, None),
            ChaosAction::Pause { resource, duration } => (Some(resource), Action::Pause, duration),
            ChaosAction::Restart { resource } => (Some(resource), Action::Restart, None),
            ChaosAction::Partition { resource, duration } => (Some(resource), Action::Partition, duration),
        }
    }
}

fn parse_level(s: &str) -> Result<dashboard::telemetry::Level, String> {
    dashboard::telemetry::Level::parse(s).ok_or_else(|| format!("`{s}` is not one of trace, debug, info, warn, error"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    topology::parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration such as `30s`"))
}

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    if prints_only(&cli.command) {
        // SAFETY: restoring a signal's default disposition, before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    runtime.block_on(dispatch(cli))
}

/// A command that only prints ends quietly when its reader goes away
/// (`apphost ps --json | head`), as Unix tools do. The others keep Rust's
/// default (a closed pipe is an error to handle), so that a closed pipe never
/// ends a running stack without its teardown.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Ps { .. }
            | Command::Logs { .. }
            | Command::Traces { .. }
            | Command::Trace { .. }
            | Command::Check { .. }
            | Command::Schema
            | Command::Doctor { .. }
            | Command::Completions { .. }
    )
}

/// What `up` does with the stack's telemetry.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Keep the stack's traces and logs under `.apphost/telemetry/` (bounded,
    /// owner-only) and read them back at the next `up`.
    #[arg(long, conflicts_with = "no_telemetry")]
    keep_telemetry: bool,
    /// Also send everything received to this OTLP collector (default: apphost's
    /// own `OTEL_EXPORTER_OTLP_ENDPOINT`, with its `_PROTOCOL` and `_HEADERS`).
    #[arg(long, value_name = "URL", env = "APPHOST_OTLP_FORWARD", conflicts_with = "no_telemetry")]
    otlp_forward: Option<String>,
    /// Run no OTLP receiver; apphost's own `OTEL_EXPORTER_OTLP_*` go to the services as they are.
    #[arg(long)]
    no_telemetry: bool,
}

impl TelemetryArgs {
    fn options(self) -> crate::root::TelemetryOptions {
        crate::root::TelemetryOptions { off: self.no_telemetry, keep: self.keep_telemetry, forward: self.otlp_forward }
    }

    /// The same, for the `up` a detached start runs: flags, and the forward
    /// target in its environment (a URL may hold credentials: never on a command line).
    fn args(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut args = Vec::new();
        args.extend(self.keep_telemetry.then(|| "--keep-telemetry".to_owned()));
        args.extend(self.no_telemetry.then(|| "--no-telemetry".to_owned()));
        let env = self.otlp_forward.iter().map(|url| ("APPHOST_OTLP_FORWARD".to_owned(), url.clone())).collect();
        (args, env)
    }
}

fn file_of(global: Option<PathBuf>, here: Option<PathBuf>) -> PathBuf {
    here.or(global).unwrap_or_else(|| PathBuf::from("apphost.yaml"))
}

async fn dispatch(cli: Cli) -> miette::Result<ExitCode> {
    let global = cli.global.file;
    match cli.command {
        Command::Up { at, headless: _, detach: true, runtime, release, no_build, teardown, log_lines, telemetry } => {
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
            let (flags, env) = telemetry.args();
            args.extend(flags);
            commands::detach::up_detached(&file, &args, &env).await
        }
        Command::Dashboard { at } => remote::attach(&file_of(global, at.file)).await,
        Command::Up { at, headless, detach: false, runtime, release, no_build, teardown, log_lines, telemetry } => {
            let file = file_of(global, at.file);
            let runtime = runtime.map(RuntimeArg::choice);
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::io::IsTerminal::is_terminal(&std::io::stdin());
            let dashboard = !headless && terminal && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
            let options = UpOptions {
                runtime,
                release,
                no_build,
                teardown,
                log_capacity: log_lines,
                dashboard,
                telemetry: telemetry.options(),
            };
            commands::up::up(&file, options).await
        }
        Command::Down { at, volumes } => commands::down::down(&file_of(global, at.file), volumes).await,
        Command::Ps { at, json } => remote::ps(&file_of(global, at.file), json).await,
        Command::Logs { file, resource, structured: true, level, attributes, trace_id, json, tail, .. } => {
            let filter = dashboard::telemetry::LogFilter { resource, level, attributes, trace_id, text: None };
            commands::traces::records(&file_of(global, file), filter, tail, json).await
        }
        Command::Logs { file, resource, follow, tail, events, .. } => {
            remote::logs(&file_of(global, file), resource, follow, tail, events).await
        }
        Command::Traces { at, resource, min_duration, errors, limit, json } => {
            let filter = dashboard::telemetry::TraceFilter {
                resource,
                min_duration_nanos: min_duration.map_or(0, |d| d.as_nanos() as u64),
                errors,
                text: None,
            };
            commands::traces::traces(&file_of(global, at.file), filter, limit, json).await
        }
        Command::Trace { id, at, json } => commands::traces::trace(&file_of(global, at.file), &id, json).await,
        Command::Stop { resource, at } => remote::act(&file_of(global, at.file), &resource, Action::Stop).await,
        Command::Start { resource, at } => remote::act(&file_of(global, at.file), &resource, Action::Start).await,
        Command::Restart { resource, at } => remote::act(&file_of(global, at.file), &resource, Action::Restart).await,
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
            let options = UpOptions {
                runtime: runtime.map(RuntimeArg::choice),
                release: false,
                no_build,
                teardown: Duration::from_secs(30),
                log_capacity: crate::logs::DEFAULT_CAPACITY,
                dashboard: false,
                telemetry: Default::default(),
            };
            let scenarios = commands::test::picks(scenarios, duration, report)?;
            let settings = crate::scenario::Settings { outage, rate, settle };
            commands::test::test(&file_of(global, at.file), options, scenarios, junit, settings, healthy_within).await
        }
        Command::Bench { at, out, quick, runtime, debug, no_build, only, rates } => {
            let options = UpOptions {
                runtime: runtime.map(RuntimeArg::choice),
                release: !debug,
                no_build,
                teardown: Duration::from_secs(30),
                log_capacity: crate::logs::DEFAULT_CAPACITY,
                dashboard: false,
                telemetry: Default::default(),
            };
            let command =
                std::iter::once("apphost".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
            let mut bench = crate::bench::Options::new(quick, out, command, if debug { "debug" } else { "release" });
            bench.only = only;
            if !rates.is_empty() {
                bench.rates = rates;
                bench.fractions.clear();
            }
            let settings = crate::scenario::Settings {
                outage: Duration::from_secs(10),
                rate: 20,
                settle: Duration::from_secs(120),
            };
            let picks = vec![crate::scenario::Pick::Bench(Box::new(bench))];
            commands::test::test(&file_of(global, at.file), options, picks, None, settings, Duration::from_secs(600))
                .await
        }
        Command::Chaos { action, at } => {
            let (resource, action, lasting) = action.split();
            remote::chaos(&file_of(global, at.file), resource, action, lasting).await
        }
        Command::Check { at } => commands::check::check(&file_of(global, at.file)),
        Command::Schema => commands::check::schema(),
        Command::Publish { at, target, output, base, registry, debug, secrets } => {
            let file = file_of(global, at.file);
            commands::publish::publish(&file, target, &output, &base, registry.as_deref(), debug, secrets).await
        }
        Command::BuildImages { at, base, push, debug } => {
            commands::publish::build_images(&file_of(global, at.file), &base, push.as_deref(), debug).await
        }
        Command::Doctor { at } => commands::doctor::run(&file_of(global, at.file)).await,
        Command::Reaper { at } => commands::reaper::run(&file_of(global, at.file)).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "apphost", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
