//! `apphost up` and `apphost down`: from a topology to a running app and back
//! to nothing, with leftovers of a crashed run reaped on the way in and out.

use std::{collections::HashMap, path::Path, process::ExitCode, sync::Arc, time::Duration};

use miette::{IntoDiagnostic, miette};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{
    build,
    headless::Printer,
    logs::{LogStore, Stream},
    monitor::Monitor,
    plan::{self, RuntimeKind},
    runtime::{
        Runtime,
        docker::{self, DockerRuntime},
        process::ProcessRuntime,
    },
    state::{PidFile, Secrets, Session, StateDir},
    supervisor::Supervisor,
    topology::{self, Kind, RuntimeChoice, Topology},
    view::LiveStack,
};

pub struct UpOptions {
    pub runtime: Option<RuntimeChoice>,
    pub release: bool,
    /// Use the project binaries already built.
    pub no_build: bool,
    /// Bound on a graceful teardown before everything is killed.
    pub teardown: Duration,
    pub log_capacity: usize,
    /// Show the dashboard (a terminal) rather than prefixed lines.
    pub dashboard: bool,
}

/// Exit codes of `up`: 0 after `down`, 130 after SIGINT, 143 after SIGTERM, 129 after SIGHUP.
enum Ending {
    Down,
    Interrupted,
    Terminated,
    /// The terminal went away.
    HungUp,
    /// The dashboard panicked: the stack is taken down and apphost fails.
    DashboardCrashed,
}

/// Removes what a killed apphost left of this app: processes (by pid and
/// start time) and containers and networks (by label). Returns what it removed.
pub async fn reap_leftovers(topology: &Topology, state: &StateDir) -> Vec<String> {
    let mut removed: Vec<String> =
        PidFile::new(state).reap().into_iter().map(|r| format!("process {} ({})", r.pid, r.resource)).collect();
    if let Ok(engine) = docker::connect().await
        && let Ok(runtime) = DockerRuntime::new(engine, &topology.name, "reaper").await
    {
        removed.extend(runtime.reap(false).await.into_iter().map(|c| format!("container {c}")));
    }
    removed
}

async fn choose_runtime(
    topology: &Topology,
    choice: RuntimeChoice,
    say: &impl Fn(&str),
) -> miette::Result<Result<bollard::Docker, String>> {
    let needs_docker = topology.resources.iter().any(|r| r.kind == Kind::Container);
    let engine = match choice {
        RuntimeChoice::Process => {
            say("runtime: process (as asked)");
            return Ok(Err("the process runtime was chosen".into()));
        }
        RuntimeChoice::Docker => docker::connect().await.map_err(|e| {
            miette!(help = "start it (`dockerd &`, or `systemctl start docker`), set DOCKER_HOST, or run with `--runtime process`", "{e}")
        })?,
        RuntimeChoice::Auto => match docker::connect().await {
            Ok(engine) => engine,
            Err(e) => {
                if needs_docker {
                    return Err(miette!(help = "start Docker or set DOCKER_HOST; container resources cannot run as processes", "{e}"));
                }
                say(&format!("runtime: process ({e})"));
                return Ok(Err(e));
            }
        },
    };
    // The service images must be here or pullable; in auto mode fall back if not.
    for r in topology.resources.iter().filter(|r| matches!(r.kind, Kind::Postgres | Kind::Artemis)) {
        let image = r.image_or_default().unwrap_or_default();
        if engine.inspect_image(&image).await.is_ok() {
            continue;
        }
        let pull = engine.create_image(
            Some(bollard::query_parameters::CreateImageOptionsBuilder::new().from_image(&image).build()),
            None,
            None,
        );
        let pulled = tokio::time::timeout(Duration::from_secs(120), futures::StreamExt::collect::<Vec<_>>(pull)).await;
        let failed = match pulled {
            Ok(results) => results.into_iter().find_map(|r| r.err().map(|e| e.to_string())),
            Err(_) => Some("no answer within 120s".into()),
        };
        if let Some(why) = failed {
            let reason = format!("image `{image}` is missing and cannot be pulled: {why}");
            if choice == RuntimeChoice::Docker || needs_docker {
                return Err(miette!(
                    help = "build the images locally (`.ci/images`) or run with `--runtime process`",
                    "{reason}"
                ));
            }
            say(&format!("runtime: process ({reason}; `.ci/images` builds it locally)"));
            return Ok(Err(reason));
        }
    }
    say(&format!("runtime: docker (engine at {})", docker::engine_address()));
    Ok(Ok(engine))
}

pub async fn up(file: &Path, options: UpOptions) -> miette::Result<ExitCode> {
    let topology = topology::load(file)?;
    let state = StateDir::for_topology(file);
    state.ensure().into_diagnostic()?;
    if let Some(session) = Session::load_live(&state) {
        return Err(miette!(
            help = "`apphost down` stops it; `apphost ps` shows it",
            "apphost is already running `{}` here (pid {})",
            session.app,
            session.pid
        ));
    }
    let logs = LogStore::new(options.log_capacity);
    let own: Arc<str> = "apphost".into();
    let say = |text: &str| logs.push(&own, Stream::System, text);
    let names = display_names(&topology);
    if !options.dashboard {
        let stop_printing = CancellationToken::new();
        let printer = tokio::spawn(Printer::new(&names).run(logs.clone(), stop_printing.clone()));
        let result = run(&topology, &state, options, &logs, &say, None).await;
        stop_printing.cancel();
        let _ = printer.await;
        return result;
    }
    // The dashboard owns the screen: apphost's own lines go to a file.
    let log_path = state.root.join("apphost.log");
    let own_log = write_own_lines(&logs, &log_path).into_diagnostic()?;
    let stack = LiveStack::new(logs.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(dashboard::run(stack.clone(), stop.clone(), dashboard::Options::default()));
    let result = run(&topology, &state, options, &logs, &say, Some(Ui { stack, stop: stop.clone(), task })).await;
    // A failed start leaves the dashboard up: take it down before the error is printed.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    own_log.abort();
    if result.is_err() {
        eprintln!("apphost's own log: {}", log_path.display());
    }
    result
}

/// `apphost up --detach`: the same `up`, headless, in a session of its own
/// with its output in `.apphost/apphost.log`; returns once all is healthy.
pub async fn up_detached(file: &Path, args: &[String]) -> miette::Result<ExitCode> {
    let topology = topology::load(file)?;
    let state = StateDir::for_topology(file);
    state.ensure().into_diagnostic()?;
    if let Some(session) = Session::load_live(&state) {
        return Err(miette!(
            help = "`apphost dashboard` shows it; `apphost down` stops it",
            "apphost is already running `{}` here (pid {})",
            session.app,
            session.pid
        ));
    }
    let log_path = state.root.join("apphost.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).into_diagnostic()?;
    let exe = std::env::current_exe().into_diagnostic()?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("-f").arg(file).arg("up").arg("--headless").args(args);
    command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().into_diagnostic()?)
        .stderr(log)
        .env("NO_COLOR", "1");
    // SAFETY: setsid(2) is async-signal-safe; it detaches the child from this terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().into_diagnostic()?;
    println!("starting `{}` in the background (output: {})", topology.name, log_path.display());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(session) = Session::load_live(&state)
            && let Ok(response) = crate::control::Client::new(&session).get("/v1/ps").await
            && let Ok(statuses) = response.json::<Vec<crate::supervisor::Status>>().await
            && !statuses.is_empty()
            && statuses.iter().all(|s| s.state == crate::supervisor::State::Healthy)
        {
            println!("`{}` is running (pid {}); every resource is healthy:", topology.name, session.pid);
            for s in statuses {
                println!("  {:<14} {:<8} {}", s.name, s.runtime, s.endpoints.join("  "));
            }
            println!("`apphost dashboard` watches it, `apphost logs -f` follows it, `apphost down` stops it");
            return Ok(ExitCode::SUCCESS);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
            return Err(miette!(
                help = format!("the whole output is in {}", log_path.display()),
                "apphost exited while starting ({status})"
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(miette!(
                help = "`apphost ps` shows where it stands; `apphost down` stops it",
                "not every resource is healthy after 15 minutes"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Instance names as the log prefixes show them.
fn display_names(topology: &Topology) -> Vec<String> {
    std::iter::once("apphost".to_owned())
        .chain(topology.resources.iter().flat_map(|r| {
            (0..r.replicas).map(move |i| if r.replicas > 1 { format!("{}-{}", r.name, i + 1) } else { r.name.clone() })
        }))
        .collect()
}

/// Appends apphost's own lines (and its lines about each resource) to `path`.
fn write_own_lines(logs: &LogStore, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
    let mut rx = logs.subscribe();
    Ok(tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(line) if &*line.resource == "apphost" || line.stream == Stream::System => {
                    let _ = writeln!(
                        file,
                        "{} {:<12} {}",
                        line.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                        line.resource,
                        line.text
                    );
                    if rx.is_empty() {
                        let _ = file.flush();
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let _ = writeln!(file, "… {n} lines of output went by too fast to sort through");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        let _ = file.flush();
    }))
}

/// The dashboard of an `up` in a terminal.
struct Ui {
    stack: Arc<LiveStack>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<dashboard::Exit>>,
}

/// A started app: what `up` and `test` run, and how it goes away again.
pub struct RunningApp {
    pub supervisor: Arc<Supervisor>,
    pub instances: Vec<plan::Instance>,
    /// Cancelled by `POST /v1/down` (`apphost down`).
    pub down: CancellationToken,
    state: StateDir,
    runtimes: HashMap<&'static str, Arc<dyn Runtime>>,
    docker: Option<Arc<DockerRuntime>>,
    stop_api: CancellationToken,
    api: tokio::task::JoinHandle<()>,
    name: String,
}

/// Reaps leftovers, picks the runtime, plans, builds, and starts every job
/// and the control API. Returns once jobs run; they become healthy later.
pub async fn start(
    topology: &Topology,
    state: &StateDir,
    options: &UpOptions,
    logs: &LogStore,
    view: &Arc<LiveStack>,
    say: &impl Fn(&str),
) -> miette::Result<RunningApp> {
    for leftover in reap_leftovers(topology, state).await {
        say(&format!("removed a leftover of an earlier run: {leftover}"));
    }
    let choice = options.runtime.unwrap_or(topology.runtime);
    let engine = choose_runtime(topology, choice, say).await?;
    let session_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let mut secrets = Secrets::load(state).into_diagnostic()?;
    let telemetry: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with("OTEL_EXPORTER_OTLP_")).collect();
    let instances = plan::plan(
        topology,
        engine.as_ref().map(|_| ()).map_err(Clone::clone),
        &session_id,
        |r| secrets.password(state, r),
        &telemetry,
    )?;
    let masked: Arc<Vec<String>> = Arc::new(secrets.all().map(str::to_owned).collect());

    let mut packages: Vec<String> = topology
        .resources
        .iter()
        .filter(|r| r.kind == Kind::Project)
        .map(|r| r.package.clone().unwrap_or_else(|| r.name.clone()))
        .collect();
    packages.dedup();
    let binaries = if packages.is_empty() {
        HashMap::new()
    } else {
        if !options.no_build {
            say(&format!("building {} with cargo", packages.join(", ")));
        }
        let build_log: Arc<str> = "apphost".into();
        let binaries = build::build(topology.root(), &packages, options.release, options.no_build, |line| {
            logs.push(&build_log, Stream::Stderr, format!("cargo: {}", line.trim_start()))
        })
        .await?;
        if !options.no_build {
            say("build finished");
        }
        binaries
    };

    let mut runtimes: HashMap<&'static str, Arc<dyn Runtime>> = HashMap::new();
    runtimes.insert("process", Arc::new(ProcessRuntime::new(state.clone(), binaries, topology.root().to_path_buf())));
    let docker = match engine {
        Ok(engine) => {
            let rt = Arc::new(
                DockerRuntime::new(engine, &topology.name, &session_id).await.map_err(|e| miette!("{}", e.message))?,
            );
            runtimes.insert("docker", rt.clone());
            Some(rt)
        }
        Err(_) => None,
    };

    let supervisor = Arc::new(Supervisor::start(topology, instances.clone(), &runtimes, logs.clone(), masked));
    let down = CancellationToken::new();
    let stop_api = CancellationToken::new();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let sources = instances.iter().filter(|i| topology.metrics_from.contains(&i.resource.name)).cloned().collect();
    let monitor = Monitor::spawn(supervisor.clone(), sources, stop_api.clone());
    view.started(supervisor.clone(), monitor.clone());
    let (port, api) =
        crate::control::serve(supervisor.clone(), view.clone(), token.clone(), down.clone(), stop_api.clone())
            .await
            .into_diagnostic()?;
    let api = tokio::spawn(api);
    Session {
        id: session_id,
        pid: std::process::id(),
        port,
        token,
        app: topology.name.clone(),
        runtime: if docker.is_some() { "docker" } else { "process" }.into(),
        started_at: chrono::Utc::now(),
    }
    .save(state)
    .into_diagnostic()?;
    say(&format!(
        "`{}` is starting ({} resources); `apphost ps` shows them, Ctrl-C stops them",
        topology.name,
        instances.len()
    ));
    Ok(RunningApp {
        supervisor,
        instances,
        down,
        state: state.clone(),
        runtimes,
        docker,
        stop_api,
        api,
        name: topology.name.clone(),
    })
}

impl RunningApp {
    /// Stops everything in reverse dependency order within `deadline`
    /// (`force` resolving first kills everything at once), then removes what
    /// is not persistent and the session.
    pub async fn teardown(self, deadline: Duration, force: impl Future<Output = ()>, say: &impl Fn(&str)) {
        say(&format!("stopping `{}` in reverse dependency order (Ctrl-C again to kill at once)", self.name));
        {
            let shutdown = self.supervisor.shutdown(deadline);
            tokio::pin!(shutdown);
            tokio::select! {
                _ = &mut shutdown => {}
                _ = force => {
                    say("second Ctrl-C: killing everything");
                    self.supervisor.kill_all().await;
                }
            }
        }
        self.supervisor.abort();
        // Whatever is left (a forced stop, a stuck child) goes by pid and label.
        PidFile::new(&self.state).reap();
        for instance in &self.instances {
            match (instance.runtime, &self.docker) {
                (RuntimeKind::Docker, Some(rt)) => rt.remove(instance).await,
                _ => self.runtimes["process"].remove(instance).await,
            }
        }
        if let Some(rt) = &self.docker {
            rt.reap(false).await;
        }
        self.stop_api.cancel();
        let _ = self.api.await;
        Session::remove(&self.state);
        let _ = std::fs::remove_dir(self.state.root.join("run"));
        say(&format!("`{}` is down", self.name));
    }
}

async fn run(
    topology: &Topology,
    state: &StateDir,
    options: UpOptions,
    logs: &LogStore,
    say: &impl Fn(&str),
    ui: Option<Ui>,
) -> miette::Result<ExitCode> {
    // One view of the app: the dashboard (shown from before the build) and the control API read it.
    let view = ui.as_ref().map_or_else(|| LiveStack::new(logs.clone()), |ui| ui.stack.clone());
    let app = start(topology, state, &options, logs, &view, say).await?;
    announce_when_healthy(app.supervisor.clone(), say_owned(logs));
    let mut interrupt = signal(SignalKind::interrupt()).into_diagnostic()?;
    let mut terminate = signal(SignalKind::terminate()).into_diagnostic()?;
    let mut hangup = signal(SignalKind::hangup()).into_diagnostic()?;
    let (stop_ui, mut ui_task) = match ui {
        Some(ui) => (Some(ui.stop), Some(ui.task)),
        None => (None, None),
    };
    let ui_ended = async {
        match &mut ui_task {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        _ = app.down.cancelled() => Ending::Down,
        _ = interrupt.recv() => Ending::Interrupted,
        _ = terminate.recv() => Ending::Terminated,
        _ = hangup.recv() => Ending::HungUp,
        ended = ui_ended => {
            ui_task = None;
            match ended {
                Ok(Ok(_)) => Ending::Down,
                Ok(Err(e)) => {
                    say(&format!("the dashboard lost the terminal: {e}"));
                    Ending::Down
                }
                Err(e) => {
                    say(&format!("the dashboard crashed ({e}); taking the stack down"));
                    Ending::DashboardCrashed
                }
            }
        }
    };
    // The screen is the terminal's again; the teardown is told in plain lines.
    let printing = stop_ui.map(|stop| {
        stop.cancel();
        let stop_printing = CancellationToken::new();
        let logs = logs.clone();
        let names = display_names(topology);
        let ui_task = ui_task.take();
        let printer = tokio::spawn({
            let stop_printing = stop_printing.clone();
            async move {
                if let Some(task) = ui_task {
                    let _ = task.await;
                }
                Printer::new(&names).run(logs, stop_printing).await
            }
        });
        (stop_printing, printer)
    });
    if printing.is_some() {
        // Let the dashboard give the screen back before the first line is printed.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    app.teardown(
        options.teardown,
        async move {
            interrupt.recv().await;
        },
        say,
    )
    .await;
    if let Some((stop_printing, printer)) = printing {
        stop_printing.cancel();
        let _ = printer.await;
    }
    if matches!(ending, Ending::DashboardCrashed) {
        eprintln!("apphost: the dashboard crashed (its panic is above); the stack was taken down");
    }
    Ok(match ending {
        Ending::Down => ExitCode::SUCCESS,
        Ending::Interrupted => ExitCode::from(130),
        Ending::Terminated => ExitCode::from(143),
        Ending::HungUp => ExitCode::from(129),
        Ending::DashboardCrashed => ExitCode::FAILURE,
    })
}

fn say_owned(logs: &LogStore) -> impl Fn(&str) + Send + 'static {
    let logs = logs.clone();
    let own: Arc<str> = "apphost".into();
    move |text: &str| logs.push(&own, Stream::System, text)
}

/// Prints the endpoints once everything is healthy (once per run).
fn announce_when_healthy(supervisor: Arc<Supervisor>, say: impl Fn(&str) + Send + 'static) {
    tokio::spawn(async move {
        let mut changes = supervisor.changes();
        loop {
            if supervisor.all_healthy() {
                say("all resources are healthy:");
                for s in supervisor.snapshot() {
                    say(&format!("  {:<14} {:<8} {}", s.name, s.runtime, s.endpoints.join("  ")));
                }
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// `apphost down`: asks a running session to stop and waits for it; without
/// one, removes whatever a crashed run left.
pub async fn down(file: &Path) -> miette::Result<ExitCode> {
    let topology = topology::load(file)?;
    let state = StateDir::for_topology(file);
    if let Some(session) = Session::load_live(&state) {
        let client = crate::control::Client::new(&session);
        client
            .post("/v1/down")
            .await
            .map_err(|e| miette!("the running apphost (pid {}) did not answer: {e}", session.pid))?;
        // Done when the session is gone: its file removed, or the process dead
        // (a zombie counts: its parent may simply not have reaped it yet).
        for _ in 0..1200 {
            if !state.session_file().exists() || !crate::state::process_running(session.pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("`{}` is down", session.app);
    } else {
        Session::remove(&state);
        let removed = reap_leftovers(&topology, &state).await;
        let _ = std::fs::remove_dir_all(state.root.join("run"));
        if removed.is_empty() {
            println!("nothing of `{}` is running", topology.name);
        } else {
            for r in removed {
                println!("removed {r}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

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

    let topology = topology::load(file)?;
    let state = StateDir::for_topology(file);
    state.ensure().into_diagnostic()?;
    if let Some(session) = Session::load_live(&state) {
        return Err(miette!(
            help = "`apphost down` stops it",
            "apphost is already running `{}` here (pid {})",
            session.app,
            session.pid
        ));
    }
    let roles = roles(&topology)?;
    // Scenario files are read (and their mistakes shown) before anything starts.
    let resources: Vec<String> = topology.resources.iter().map(|r| r.name.clone()).collect();
    let mut files = HashMap::new();
    for pick in &scenarios {
        if let crate::scenario::Pick::File(path) = pick {
            files.insert(path.clone(), crate::scenario::file::load(path, &resources)?);
        }
    }
    let logs = LogStore::new(options.log_capacity);
    // Resources' output goes to a file; apphost's own lines to the terminal.
    let output_path = state.root.join("test-output.log");
    let mut output = std::fs::File::create(&output_path).into_diagnostic()?;
    let mut rx = logs.subscribe();
    let names: Vec<String> = topology.resources.iter().map(|r| r.name.clone()).collect();
    let writer = tokio::spawn(async move {
        let printer = Printer::new(&names);
        while let Ok(line) = rx.recv().await {
            let text = printer.format(&line);
            let _ = writeln!(output, "{text}");
            if &*line.resource == "apphost" && line.stream == Stream::System {
                println!("{}", line.text);
            }
        }
    });
    let say = say_owned(&logs);
    say(&format!("resource output: {}", output_path.display()));

    let app = start(&topology, &state, &options, &logs, &LiveStack::new(logs.clone()), &say).await?;
    let mut roles = roles;
    if let Some(broker) = app.instances.iter().find(|i| i.resource.name == roles.broker) {
        let env = |k: &str| broker.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        roles.broker_url = format!(
            "amqp://{}:{}@127.0.0.1:{}",
            env("ARTEMIS_USER"),
            env("ARTEMIS_PASSWORD"),
            broker.port("amqp").unwrap_or_default()
        );
    }
    // The receiver's effects are counted in its own database, reached as it reaches it.
    let receiver_db = database_of(&topology, &roles.receiver).map(|db| format!("ConnectionStrings__{db}"));
    if let (Some(receiver), Some(key)) = (app.instances.iter().find(|i| i.resource.name == roles.receiver), receiver_db)
    {
        roles.receiver_db_url =
            receiver.env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    }
    let mut interrupt = signal(SignalKind::interrupt()).into_diagnostic()?;
    let mut reports = Vec::new();
    let mut interrupted = false;
    let healthy = async {
        let mut changes = app.supervisor.changes();
        while !app.supervisor.all_healthy() {
            if changes.changed().await.is_err() {
                break;
            }
        }
    };
    let ready = tokio::select! {
        r = tokio::time::timeout(healthy_within, healthy) => r.is_ok(),
        _ = interrupt.recv() => { interrupted = true; false }
    };
    if ready {
        let ctx = crate::scenario::Ctx::new(app.supervisor.clone(), roles, settings);
        let runtime =
            app.instances.iter().find(|i| i.resource.kind == Kind::Artemis).map_or("process", |i| i.runtime.as_str());
        for pick in &scenarios {
            use crate::scenario::Pick;
            let name = match pick {
                Pick::BuiltIn(name) => name.clone(),
                Pick::File(path) => files[path].name.clone(),
                Pick::Soak { .. } => "soak".into(),
            };
            say(&format!("scenario {name}: running"));
            let run = async {
                match pick {
                    Pick::BuiltIn(name) if name == "apphost-killed" => {
                        crate::scenario::apphost_killed(file, runtime, &topology.name).await
                    }
                    Pick::BuiltIn(name) => ctx.run(name).await,
                    Pick::File(path) => ctx.run_steps(&name, &files[path].steps).await,
                    Pick::Soak { duration, report } => crate::scenario::soak(&ctx, *duration, report).await,
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
            }
            reports.push(report);
        }
    } else if !interrupted {
        for s in app.supervisor.snapshot().iter().filter(|s| s.state != crate::supervisor::State::Healthy) {
            say(&format!("not healthy after {healthy_within:?}: {} is {}", s.name, s.state.label()));
        }
        reports.push(crate::scenario::Report {
            scenario: "startup".into(),
            failure: Some(format!(
                "the stack was not healthy within {healthy_within:?}; see {}",
                output_path.display()
            )),
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.abort();
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
        .find(|r| r.kind == Kind::Artemis)
        .map(|r| r.name.clone())
        .ok_or_else(|| miette!("no artemis resource to break"))?;
    let sender_db = database_of(t, &sender).ok_or_else(|| miette!("`sender` references no postgres resource"))?;
    let queue = t
        .resource(&receiver)
        .and_then(|r| r.env.iter().find(|(k, _)| k == "RECEIVER_ADDRESS").map(|(_, v)| v.clone()))
        .unwrap_or_else(|| "entity-items".to_owned());
    Ok(crate::scenario::Roles {
        sender,
        receiver,
        broker,
        sender_db,
        broker_url: String::new(),
        queue,
        receiver_db_url: String::new(),
    })
}
