//! The composition root: from a topology to a running app ([`start`]) and
//! back to nothing ([`RunningApp::teardown`]). It owns the app's one root
//! cancellation and the set of its tasks (metrics monitor, control API, the
//! announcement), which teardown cancels and then awaits, so nothing of the
//! app outlives it. `up` and `test` both run an app through here.

use std::{collections::HashMap, sync::Arc, time::Duration};

use miette::{IntoDiagnostic, miette};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    build,
    kinds::Placement,
    logs::{LogStore, Stream},
    monitor::Monitor,
    plan::{self, RuntimeKind},
    runtime::{
        Runtime,
        docker::{self, DockerRuntime},
        process::ProcessRuntime,
    },
    statedir::{PidFile, Secrets, Session, StateDir, StateLock},
    supervisor::Supervisor,
    topology::{RuntimeChoice, Topology},
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
    pub telemetry: TelemetryOptions,
}

/// What becomes of the stack's telemetry.
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// No receiver: the services are told nothing of OTLP (apphost's own
    /// `OTEL_EXPORTER_OTLP_*` pass through to them, as without apphost).
    pub off: bool,
    /// Journal it under `.apphost/telemetry/` and read it back at the next start.
    pub keep: bool,
    /// Forward everything to this collector (else to apphost's own `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub forward: Option<String>,
}

/// Reads the topology at `file` and takes its state folder's lock for a new
/// session (held until the returned lock is dropped); refuses when another
/// apphost holds it.
pub fn claim(file: &std::path::Path) -> miette::Result<(Topology, StateDir, StateLock)> {
    let topology = crate::topology::load(file)?;
    let state = StateDir::for_topology(file);
    state.ensure().into_diagnostic()?;
    let mut lock = state.lock().into_diagnostic()?;
    // Held, but not by a live apphost: a reaper cleaning up after a killed one, or
    // an apphost starting; either lets go soon.
    if lock.is_none() && !Session::load(&state).is_some_and(|s| crate::statedir::process_running(s.pid)) {
        lock = state.lock_within(Duration::from_secs(30)).into_diagnostic()?;
    }
    match lock {
        Some(lock) => Ok((topology, state, lock)),
        None => Err(match Session::load(&state) {
            Some(session) => miette!(
                help = "`apphost ps` shows it, `apphost dashboard` watches it, `apphost down` stops it",
                "apphost is already running `{}` here (pid {})",
                session.app,
                session.pid
            ),
            None => miette!(
                help = "wait for it (`apphost ps`), or stop it with `apphost down`",
                "another apphost is starting `{}` here ({} is locked)",
                topology.name,
                state.lock_file().display()
            ),
        }),
    }
}

/// Removes what a killed apphost left of this app: processes (by pid and
/// start time) and containers and networks (by label). Returns what it removed.
pub async fn reap_leftovers(topology: &Topology, state: &StateDir) -> Vec<String> {
    let mut removed: Vec<String> =
        PidFile::new(state).reap().into_iter().map(|r| format!("process {} ({})", r.pid, r.resource)).collect();
    if let Ok(engine) = docker::connect().await {
        let runtime = DockerRuntime::reaper(engine, &topology.name, &docker::owner_of(&state.root));
        removed.extend(runtime.reap(false).await.into_iter().map(|c| format!("container {c}")));
    }
    removed
}

/// What `down --volumes` removes besides: this app's data and kept set-ups,
/// owned here. Persistent resources' containers (which `down` stops) and their
/// data volumes, the set-up volumes and images (docker runtime), and the
/// state's `data` folder (process runtime). Returns what it removed.
pub async fn remove_kept(topology: &Topology, state: &StateDir) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(engine) = docker::connect().await {
        let runtime = DockerRuntime::reaper(engine, &topology.name, &docker::owner_of(&state.root));
        removed.extend(runtime.reap(true).await.into_iter().map(|c| format!("container {c}")));
        removed.extend(runtime.remove_setups().await);
    }
    // `ensure` checked the folder is ours; removal does not follow links.
    let data = state.root.join("data");
    if data.is_dir() && std::fs::remove_dir_all(&data).is_ok() {
        removed.push(format!("folder {}", data.display()));
    }
    removed
}

/// Refuses to start when another apphost (another state folder, another
/// host on a shared engine) runs an app of the same name: its containers and
/// network have the names this one would take, and are never touched.
pub async fn refuse_foreign(topology: &Topology, state: &StateDir) -> miette::Result<()> {
    let Ok(engine) = docker::connect().await else { return Ok(()) };
    let Some((other, what)) = docker::foreign_stack(&engine, &topology.name, &docker::owner_of(&state.root)).await
    else {
        return Ok(());
    };
    let folder = other.split_once(':').map(|(_, path)| path).unwrap_or(&other);
    let gone = !std::path::Path::new(folder).exists();
    Err(miette!(
        help = if gone {
            format!(
                "that folder is gone; remove its leftovers with `docker rm -f $(docker ps -aq --filter label={}={other})` \
                 and `docker network rm {}`, or give this app another `name:` in {}",
                docker::LABEL_OWNER,
                topology.name,
                topology.file.display()
            )
        } else {
            format!(
                "stop it with `apphost down` where it runs (its state folder is {folder}), or give this app another \
                 `name:` in {}",
                topology.file.display()
            )
        },
        "another apphost runs an app called `{}` on this Docker engine (state folder {other}): {}",
        topology.name,
        what.join(", ")
    ))
}

async fn choose_runtime(
    topology: &Topology,
    choice: RuntimeChoice,
    say: &impl Fn(&str),
) -> miette::Result<Result<bollard::Docker, String>> {
    let needs_docker = topology.resources.iter().any(|r| r.kind.spec().placement() == Placement::Container);
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
    for r in topology.resources.iter().filter(|r| r.kind.spec().placement() == Placement::Either) {
        let image = r.image().unwrap_or_default();
        if engine.inspect_image(&image).await.is_ok() {
            continue;
        }
        let failed = match tokio::time::timeout(Duration::from_secs(120), docker::pull(&engine, &image, |_| {})).await {
            Ok(result) => result.err(),
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

/// A started app: what `up` and `test` run, and how it goes away again.
pub struct RunningApp {
    pub supervisor: Arc<Supervisor>,
    pub instances: Vec<plan::Instance>,
    /// Cancelled by `POST /v1/down` (`apphost down`): a request to go down.
    pub down: CancellationToken,
    state: StateDir,
    runtimes: HashMap<&'static str, Arc<dyn Runtime>>,
    docker: Option<Arc<DockerRuntime>>,
    /// Ends every task of the app at teardown.
    root: CancellationToken,
    tasks: JoinSet<()>,
    name: String,
    otlp: Option<Arc<crate::otlp::Receiver>>,
    /// Cancelled once "all resources are healthy" and where the time went are said.
    announced: CancellationToken,
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
    let began = chrono::Utc::now();
    for leftover in reap_leftovers(topology, state).await {
        say(&format!("removed a leftover of an earlier run: {leftover}"));
    }
    // Whatever ends this process, what it starts from here on is removed.
    if let Err(e) = crate::commands::reaper::spawn(&topology.file) {
        say(&format!("cannot start the reaper ({e}): if apphost is killed, `apphost down` removes what it left"));
    }
    let choice = options.runtime.unwrap_or(topology.runtime);
    let engine = choose_runtime(topology, choice, say).await?;
    // Only a stack on the engine takes the app's container and network names there.
    if engine.is_ok() {
        refuse_foreign(topology, state).await?;
    }
    let session_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let mut secrets = Secrets::load(state).into_diagnostic()?;
    let own: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("OTEL_EXPORTER_OTLP_")).collect();
    let root = CancellationToken::new();
    let (otlp, telemetry) = if options.telemetry.off {
        (None, own)
    } else {
        let forward =
            crate::otlp::forward::Target::choose(options.telemetry.forward.as_deref(), &own).map_err(|e| {
                miette!(help = "give --otlp-forward an http:// URL, or unset OTEL_EXPORTER_OTLP_ENDPOINT", "{e}")
            })?;
        let keep = options.telemetry.keep;
        let receiver = crate::otlp::Receiver::start(
            &state.root,
            crate::otlp::Options { keep, forward, budget: None },
            root.clone(),
            Arc::new(say_owned(logs)),
        )
        .await
        .map_err(|e| miette!("cannot start the OTLP receiver on loopback: {e}"))?;
        view.receiving(receiver.clone());
        let env = receiver.env();
        (Some(receiver), env)
    };
    let instances = plan::plan(
        topology,
        engine.as_ref().map(|_| ()).map_err(Clone::clone),
        &session_id,
        |r| secrets.password(state, r),
        &telemetry,
    )?;
    let masked: Arc<Vec<String>> = Arc::new(secrets.all().map(str::to_owned).collect());

    let packages = packages(topology);
    // The build runs while the infrastructure starts: a project's launch waits for its binary.
    let (binaries_tx, binaries) = tokio::sync::watch::channel(None);
    let build = if packages.is_empty() {
        let _ = binaries_tx.send(Some(Arc::new(HashMap::new())));
        None
    } else {
        if !options.no_build {
            say(&format!("building {} with cargo while the rest starts", packages.join(", ")));
        }
        let (root, progress, release, skip) =
            (topology.root().to_path_buf(), cargo_progress(logs), options.release, options.no_build);
        Some(tokio::spawn(async move { build::build(&root, &packages, release, skip, progress).await }))
    };

    let mut runtimes: HashMap<&'static str, Arc<dyn Runtime>> = HashMap::new();
    runtimes.insert("process", Arc::new(ProcessRuntime::new(state.clone(), binaries, topology.root().to_path_buf())));
    let docker = match engine {
        Ok(engine) => {
            let first = instances
                .iter()
                .filter(|i| i.runtime == crate::plan::RuntimeKind::Docker && i.resource.kind.spec().starts_first())
                .count();
            let rt = Arc::new(
                DockerRuntime::new(engine, &topology.name, &session_id, &docker::owner_of(&state.root), first)
                    .await
                    .map_err(|e| miette!("{}", e.message))?,
            );
            runtimes.insert("docker", rt.clone());
            Some(rt)
        }
        Err(_) => None,
    };

    let supervisor = Arc::new(Supervisor::start(topology, instances.clone(), &runtimes, logs.clone(), masked));
    let down = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let sources = instances.iter().filter(|i| topology.metrics_from.contains(&i.resource.name)).cloned().collect();
    let monitor = Monitor::spawn(supervisor.clone(), sources, root.clone(), &mut tasks);
    view.started(supervisor.clone(), monitor.clone());
    let (port, api) =
        crate::control::serve(supervisor.clone(), view.clone(), token.clone(), down.clone(), root.clone())
            .await
            .into_diagnostic()?;
    tasks.spawn(api);
    let built_at = Arc::new(std::sync::OnceLock::new());
    let announced = CancellationToken::new();
    tasks.spawn(announce_when_healthy(
        supervisor.clone(),
        instances.clone(),
        (began, built_at.clone()),
        say_owned(logs),
        (root.clone(), announced.clone()),
    ));
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
    let app = RunningApp {
        supervisor,
        instances,
        down,
        state: state.clone(),
        runtimes,
        docker,
        root,
        tasks,
        name: topology.name.clone(),
        otlp,
        announced,
    };
    if let Some(build) = build {
        match build.await {
            Ok(Ok(built)) => {
                let _ = built_at.set(chrono::Utc::now());
                let _ = binaries_tx.send(Some(Arc::new(built)));
                if !options.no_build {
                    say("build finished");
                }
            }
            failed => {
                // What started meanwhile goes again before the compiler's error is shown.
                drop(binaries_tx);
                app.teardown(Duration::from_secs(30), std::future::pending(), say).await;
                return Err(match failed {
                    Ok(Err(e)) => e.into(),
                    Err(e) => miette!("the build task failed: {e}"),
                    Ok(Ok(_)) => unreachable!(),
                });
            }
        }
    }
    Ok(app)
}

impl RunningApp {
    /// Resolves once the start's healthy announcement (with its critical chain)
    /// has been said, or after `within`: a teardown right after all became
    /// healthy would otherwise end the announcement's task before it speaks.
    pub async fn announced(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.announced.cancelled()).await;
    }

    /// The OTLP receiver's store, when one runs.
    pub fn telemetry(&self) -> Option<Arc<crate::otlp::Store>> {
        self.otlp.as_ref().map(|r| r.store.clone())
    }

    /// Stops everything in reverse dependency order within `deadline`
    /// (`force` resolving first kills everything at once), removes what is
    /// not persistent, ends the app's tasks and waits for them, and removes
    /// the session.
    pub async fn teardown(mut self, deadline: Duration, force: impl Future<Output = ()>, say: &impl Fn(&str)) {
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
        self.root.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Some(otlp) = &self.otlp {
            otlp.close();
        }
        Session::remove(&self.state);
        let _ = std::fs::remove_dir(self.state.root.join("run"));
        say(&format!("`{}` is down", self.name));
    }
}

/// Instance names as the log prefixes show them.
pub fn display_names(topology: &Topology) -> Vec<String> {
    std::iter::once("apphost".to_owned())
        .chain(topology.resources.iter().flat_map(|r| {
            (0..r.replicas).map(move |i| if r.replicas > 1 { format!("{}-{}", r.name, i + 1) } else { r.name.clone() })
        }))
        .collect()
}

/// The cargo packages the topology's projects are built from, each once, in the topology's order.
pub fn packages(topology: &Topology) -> Vec<String> {
    let mut packages: Vec<String> = Vec::new();
    for package in topology.resources.iter().filter_map(|r| r.kind.spec().package(r)) {
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

/// Where cargo's output goes while apphost builds the projects: apphost's lines in the log store.
pub fn cargo_progress(logs: &LogStore) -> impl Fn(&str) + Send + 'static {
    let logs = logs.clone();
    let own: Arc<str> = "apphost".into();
    move |line: &str| logs.push(&own, Stream::Stderr, format!("cargo: {}", line.trim_start()))
}

/// A `say` that outlives the caller: apphost's own line in the log store.
pub fn say_owned(logs: &LogStore) -> impl Fn(&str) + Send + 'static {
    let logs = logs.clone();
    let own: Arc<str> = "apphost".into();
    move |text: &str| logs.push(&own, Stream::System, text)
}

/// Prints the endpoints once everything is healthy (once per run).
async fn announce_when_healthy(
    supervisor: Arc<Supervisor>,
    instances: Vec<plan::Instance>,
    (began, built_at): (chrono::DateTime<chrono::Utc>, Arc<std::sync::OnceLock<chrono::DateTime<chrono::Utc>>>),
    say: impl Fn(&str) + Send + 'static,
    (stop, announced): (CancellationToken, CancellationToken),
) {
    let mut changes = supervisor.changes();
    loop {
        if supervisor.all_healthy() {
            say("all resources are healthy:");
            for s in supervisor.snapshot() {
                let endpoints: Vec<String> = s.endpoints.iter().map(ToString::to_string).collect();
                say(&format!("  {:<14} {:<8} {}", s.name, s.runtime, endpoints.join("  ")));
            }
            // Where the time went, from the instance ready last back through what it waited for.
            let waits_for = |name: &str| -> Vec<String> {
                let Some(me) = instances.iter().find(|i| i.name == name) else { return Vec::new() };
                let waited: Vec<&str> = me.resource.wait_for.iter().map(|w| w.name.as_str()).collect();
                instances
                    .iter()
                    .filter(|i| waited.contains(&i.resource.name.as_str()))
                    .map(|i| i.name.clone())
                    .collect()
            };
            let total = (chrono::Utc::now() - began).num_milliseconds() as f64 / 1000.0;
            let chain = crate::supervisor::chain::critical_chain(&supervisor.history(), began, waits_for);
            for line in crate::supervisor::chain::describe(total, &chain) {
                say(&line);
            }
            if let Some(at) = built_at.get() {
                let seconds = (*at - began).num_milliseconds() as f64 / 1000.0;
                say(&format!(
                    "  the build of the projects finished at +{seconds:.1} s (it ran while the rest started)"
                ));
            }
            announced.cancel();
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
