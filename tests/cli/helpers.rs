use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{io::AsyncReadExt, process::Child};

/// One demo stack at a time: they share the app name and the machine's two cores.
pub static ONE_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The projects' images `apphost build-images` makes are tagged with their
/// binaries' digest, so each build of changed code adds new ones; the tests
/// that make them hold this while they use them, as two of them make the same.
pub static PROJECT_IMAGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `outbox-demo/*` images in the engine, as `repository:tag`.
pub fn project_images() -> std::collections::BTreeSet<String> {
    let listed = std::process::Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "outbox-demo/*"])
        .output()
        .expect("docker");
    String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect()
}

/// Removes, when dropped, the project images that were not in the engine
/// when it was made: those the test built, never one a user built before it.
pub struct RemoveNewProjectImages(std::collections::BTreeSet<String>);

impl RemoveNewProjectImages {
    pub fn since_now() -> Self {
        Self(project_images())
    }
}

impl Drop for RemoveNewProjectImages {
    fn drop(&mut self) {
        for image in project_images().difference(&self.0) {
            let _ = std::process::Command::new("docker").args(["rmi", image]).output();
        }
    }
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `apphost` with its state in `state` and the demo topology.
pub fn apphost(state: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_apphost"));
    c.env("APPHOST_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .arg("-f")
        .arg(workspace().join("apphost.yaml"))
        .kill_on_drop(true);
    c
}

/// A test's own apphost state folder under the temp dir. When the test ends,
/// passing or not, `apphost down --volumes` runs for the demo topology and
/// each topology file the test wrote there (so no container, process or kept
/// set-up outlives the test) and the folder goes.
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new() -> Self {
        Self(std::env::temp_dir().join(format!("apphost-test-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl std::ops::Deref for StateDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let written = std::fs::read_dir(&self.0).into_iter().flatten().flatten().map(|e| e.path());
            let topologies = written.filter(|p| p.extension().is_some_and(|e| e == "yaml"));
            for topology in std::iter::once(workspace().join("apphost.yaml")).chain(topologies) {
                down_now(&self.0, &topology, &["--volumes"]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `apphost down` (with `args`) for the app of `topology` whose state is in
/// `state`, waited for (from a `Drop`, where nothing async runs).
pub fn down_now(state: &Path, topology: &Path, args: &[&str]) {
    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_apphost"))
        .env("APPHOST_STATE_DIR", state)
        .arg("-f")
        .arg(topology)
        .arg("down")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `apphost ps --json` for the session in `state`; `None` when none answers within 10 s.
pub async fn ps(state: &Path) -> Option<Vec<Value>> {
    let out = tokio::time::timeout(Duration::from_secs(10), apphost(state).args(["ps", "--json"]).output())
        .await
        .ok()?
        .ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// A child process whose stdout and stderr are collected as they come.
pub struct Running {
    pub child: Child,
    output: Arc<Mutex<String>>,
}

impl Running {
    /// Takes the child's piped stdout and stderr and collects them.
    pub fn collect(mut child: Child) -> Self {
        let output = Arc::new(Mutex::new(String::new()));
        let pipes = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ];
        for mut pipe in pipes.into_iter().flatten() {
            let output = output.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Self { child, output }
    }

    /// What the child printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the child to exit; panics with its output if it does not within `limit`.
    /// The output is complete once this returns.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                // The pipes close with the child; give the collectors a moment to drain them.
                tokio::time::sleep(Duration::from_millis(200)).await;
                status.unwrap()
            }
            Err(_) => panic!("the child did not exit within {limit:?}:\n{}", self.output()),
        }
    }
}

/// A running `apphost up --headless`, its output collected.
pub struct Stack {
    // Dropped first: a stack still up when the test ends is taken down.
    pub state: StateDir,
    pub run: Running,
}

impl Stack {
    pub async fn up(runtime: &str) -> Self {
        Self::up_with(runtime, &[]).await
    }

    /// `apphost up` with extra environment for apphost (and what it passes on).
    pub async fn up_with(runtime: &str, env: &[(&str, &str)]) -> Self {
        Self::up_in(StateDir::new(), runtime, env, &[]).await
    }

    /// `apphost up` with its state in `state`, extra environment and arguments.
    pub async fn up_in(state: StateDir, runtime: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let child = apphost(&state)
            .envs(env.iter().copied())
            .args(["up", "--headless", "--no-build", "--runtime", runtime, "--teardown", "60s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting apphost up");
        Self { state, run: Running::collect(child) }
    }

    pub fn output(&self) -> String {
        self.run.output()
    }

    pub async fn ps(&self) -> Option<Vec<Value>> {
        ps(&self.state).await
    }

    /// Waits until every resource is healthy; panics with apphost's output if not.
    pub async fn wait_healthy(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(ps) = self.ps().await
                && !ps.is_empty()
                && ps.iter().all(|s| s["state"] == "healthy")
            {
                return ps;
            }
            if let Ok(Some(status)) = self.run.child.try_wait() {
                panic!("apphost up exited early ({status}):\n{}", self.output());
            }
            if tokio::time::Instant::now() > deadline {
                panic!("not healthy after {limit:?}: {:?}\n{}", self.ps().await, self.output());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.run.wait_exit(limit).await
    }

    pub fn pid(&self) -> u32 {
        self.run.child.id().expect("running")
    }
}

/// `http://127.0.0.1:PORT` of a resource's endpoint called `port`.
pub fn endpoint(ps: &[Value], name: &str, port: &str) -> String {
    let status = ps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no `{name}` in {ps:?}"));
    let raw = status["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == port)
        .and_then(|e| e["url"].as_str())
        .unwrap_or_else(|| panic!("`{name}` has no `{port}` endpoint"));
    raw.replace("tcp://", "http://")
}

/// The pids in `ps` output (`"id": "pid N"`).
pub fn pids(ps: &[Value]) -> Vec<u32> {
    ps.iter().filter_map(|s| s["id"].as_str()?.strip_prefix("pid ")?.parse().ok()).collect()
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// POSTs an item to the sender and waits until the receiver has stored it.
pub async fn item_goes_through(ps: &[Value]) {
    let sender = endpoint(ps, "sender", "http");
    let receiver = endpoint(ps, "receiver", "http");
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{sender}/api/EntityItems"))
        .json(&serde_json::json!({ "name": "through apphost", "value": 7.5 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(format!("{receiver}/api/EntityItems/{id}")).send().await.unwrap();
        if r.status() == 200 {
            let stored: Value = r.json().await.unwrap();
            assert_eq!(stored["name"], "through apphost");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the receiver never stored {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Containers, networks and volumes of the demo app left on the Docker engine.
pub async fn docker_leftovers() -> Vec<String> {
    docker_leftovers_of("outbox-demo").await
}

/// Containers, networks and volumes of app `app` left on the Docker engine;
/// not the volume that keeps a resource's set-up (`apphost.setup`), which
/// `down` keeps on purpose, as it keeps persistent data.
pub async fn docker_leftovers_of(app: &str) -> Vec<String> {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    };
    let docker = apphost::runtime::docker::connect()
        .await
        .expect("a Docker engine for the docker tests (`.ci/setup` starts one)");
    let selector = format!("apphost.app={app}");
    let label = std::collections::HashMap::from([("label", vec![selector.as_str()])]);
    let mut left: Vec<String> = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&label).build()))
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("container {:?}", c.names))
        .collect();
    left.extend(
        docker
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&label).build()))
            .await
            .unwrap()
            .into_iter()
            .map(|n| format!("network {:?}", n.name)),
    );
    left.extend(
        docker
            .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&label).build()))
            .await
            .unwrap()
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.labels.contains_key(apphost::runtime::docker::LABEL_SETUP))
            .map(|v| format!("volume {}", v.name)),
    );
    left
}
