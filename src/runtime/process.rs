//! The process runtime: everything runs as a local process in its own process
//! group. PostgreSQL comes from the local installation (initdb, then
//! `postgres`, as the `postgres` user when apphost runs as root); Artemis from
//! a local distribution; projects from the binaries cargo built.
//!
//! Each child gets `PR_SET_PDEATHSIG`, so it dies with apphost even on
//! SIGKILL, and is recorded with its start time in `.apphost/pids.json`, so
//! `apphost down` can reap it if it somehow survived.

use std::{
    collections::HashMap,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use tokio::{process::Command, sync::watch};

use super::{Exit, Output, Running, Runtime, StartError, Usage, expand_ports};
use crate::{
    logs::Stream,
    plan::{Instance, RuntimeKind},
    state::{PidFile, PidRecord, StateDir, process_start_time},
    topology::Kind,
};

pub struct ProcessRuntime {
    state: StateDir,
    pids: Arc<PidFile>,
    /// Project package → the binary cargo built for it.
    binaries: HashMap<String, PathBuf>,
    /// The topology's folder: relative commands and working directories start here.
    root: PathBuf,
}

impl ProcessRuntime {
    pub fn new(state: StateDir, binaries: HashMap<String, PathBuf>, root: PathBuf) -> Self {
        let pids = Arc::new(PidFile::new(&state));
        Self { state, pids, binaries, root }
    }

    fn files_of(&self, instance: &Instance) -> PathBuf {
        if instance.resource.persistent {
            self.state.data_dir(&instance.name)
        } else {
            self.state.run_dir(&instance.name)
        }
    }

    async fn start_postgres(&self, instance: &Instance, out: Output) -> Result<Arc<dyn Running>, StartError> {
        let bin = pg_bin_dir()?;
        let owner = run_as("postgres")?;
        let dir = self.files_of(instance);
        let data = dir.join("pgdata");
        make_dir_for(&dir, &self.state.root, owner)?;
        if owner.is_some()
            && let Some(closed) = dir.ancestors().find(|a| {
                std::fs::metadata(a)
                    .is_ok_and(|m| m.permissions().mode() & 0o001 == 0 && !a.starts_with(&self.state.root))
            })
        {
            return Err(StartError::new(format!(
                "PostgreSQL runs as the `postgres` user, which cannot reach {} ({} is closed to others)",
                dir.display(),
                closed.display()
            ))
            .help("set APPHOST_STATE_DIR to a folder others can pass through (e.g. /var/tmp/apphost), or run apphost as a regular user"));
        }
        let r = &instance.resource;
        if !data.join("PG_VERSION").exists() {
            out.system(&format!("initialising a PostgreSQL cluster in {}", data.display()));
            let pwfile = dir.join("pwfile");
            std::fs::write(&pwfile, instance.password.as_deref().unwrap_or_default())
                .and_then(|()| std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)))
                .map_err(|e| StartError::new(format!("cannot write {}: {e}", pwfile.display())))?;
            chown(&pwfile, owner);
            let mut initdb = Command::new(bin.join("initdb"));
            initdb
                .arg("-D")
                .arg(&data)
                .args(["-U", &r.user_name(), "-E", "UTF8", "--auth-host=scram-sha-256", "--auth-local=trust"])
                .arg(format!("--pwfile={}", pwfile.display()));
            let result = run_to_end(initdb, owner, None).await;
            let _ = std::fs::remove_file(&pwfile);
            result.map_err(|e| StartError::new(format!("initdb failed: {e}")))?;
            // Single-user mode creates the database before anything listens.
            let mut single = Command::new(bin.join("postgres"));
            single.args(["--single", "-D"]).arg(&data).args(["-F", "postgres"]);
            let create = format!("CREATE DATABASE \"{}\";\n", r.database_name().replace('"', "\"\""));
            run_to_end(single, owner, Some(create))
                .await
                .map_err(|e| StartError::new(format!("creating the database failed: {e}")))?;
        }
        let port = instance.port("tcp").unwrap_or(5432);
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.arg("-D").arg(&data).args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ]);
        self.spawn(instance, postgres, out, owner)
    }

    async fn start_artemis(&self, instance: &Instance, out: Output) -> Result<Arc<dyn Running>, StartError> {
        let home = artemis_home()?;
        which("java").ok_or_else(|| {
            StartError::new("Java is not installed; Artemis needs Java 17")
                .help("install it (`apt-get install openjdk-17-jre-headless`) or run the broker with `runtime: docker`")
        })?;
        let dir = self.files_of(instance);
        make_dir_for(&dir, &self.state.root, None)?;
        let broker = dir.join("broker");
        let r = &instance.resource;
        if !broker.join("bin/artemis").exists() {
            out.system(&format!("creating an Artemis broker instance in {}", broker.display()));
            let mut create = Command::new(home.join("bin/artemis"));
            create
                .arg("create")
                .arg(&broker)
                .args(["--user", &r.user_name(), "--password", instance.password.as_deref().unwrap_or_default()])
                .args(["--require-login", "--silent", "--no-web", "--nio", "--no-autotune", "--java-memory", "512M"])
                .args(["--no-hornetq-acceptor", "--no-mqtt-acceptor", "--no-stomp-acceptor"]);
            run_to_end(create, None, None)
                .await
                .map_err(|e| StartError::new(format!("`artemis create` failed: {e}")))?;
        }
        set_acceptor_ports(&broker.join("etc/broker.xml"), instance.port("core"), instance.port("amqp"))?;
        let mut run = Command::new(broker.join("bin/artemis"));
        run.arg("run");
        self.spawn(instance, run, out, None)
    }

    fn spawn(
        &self,
        instance: &Instance,
        mut command: Command,
        out: Output,
        owner: Option<(u32, u32)>,
    ) -> Result<Arc<dyn Running>, StartError> {
        command
            .envs(instance.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; it runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = command.as_std().get_program().to_string_lossy().into_owned();
        let mut child = command.spawn().map_err(|e| {
            StartError::new(format!("cannot start `{program}`: {e}")).help(
                if e.kind() == std::io::ErrorKind::NotFound {
                    "check that it is installed and on PATH, or give its full path in apphost.yaml"
                } else {
                    "check the command and its permissions"
                },
            )
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        if let Some(start_time) = process_start_time(pid) {
            self.pids.add(PidRecord { resource: instance.name.clone(), pid, start_time });
        }
        if let Some(stdout) = child.stdout.take() {
            out.pump(stdout, Stream::Stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            out.pump(stderr, Stream::Stderr);
        }
        let (tx, rx) = watch::channel(None);
        let pids = self.pids.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    _ => Exit::Unknown,
                },
                Err(_) => Exit::Unknown,
            };
            // Whatever the group still holds (postgres workers, shells) goes too.
            signal_group(pid, libc::SIGKILL);
            pids.remove(pid);
            let _ = tx.send(Some(exit));
        });
        let ports = instance.ports.iter().map(|(n, b)| (n.clone(), b.host)).collect();
        Ok(Arc::new(Process { pid, exit: rx, pg_bin: pg_bin_dir().ok(), ports }))
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn start<'a>(&'a self, instance: &'a Instance, out: Output) -> BoxFuture<'a, Result<Arc<dyn Running>, StartError>> {
        async move {
            let r = &instance.resource;
            match r.kind {
                Kind::Postgres => self.start_postgres(instance, out).await,
                Kind::Artemis => self.start_artemis(instance, out).await,
                Kind::Project => {
                    let package = r.package.clone().unwrap_or_else(|| r.name.clone());
                    let binary = self
                        .binaries
                        .get(&package)
                        .ok_or_else(|| StartError::new(format!("no binary was built for package `{package}`")))?;
                    let mut command = Command::new(binary);
                    command
                        .args(&r.args)
                        .current_dir(r.working_dir.as_ref().map_or(self.root.clone(), |d| self.root.join(d)));
                    self.spawn(instance, command, out, None)
                }
                Kind::Executable => {
                    let program = r.command.clone().unwrap_or_default();
                    let resolved =
                        if program.contains('/') { self.root.join(&program) } else { PathBuf::from(&program) };
                    let mut command = Command::new(resolved);
                    command
                        .args(&r.args)
                        .current_dir(r.working_dir.as_ref().map_or(self.root.clone(), |d| self.root.join(d)));
                    self.spawn(instance, command, out, None)
                }
                Kind::Container => {
                    Err(StartError::new(format!("`{}` is a container; the process runtime cannot run it", r.name)))
                }
            }
        }
        .boxed()
    }

    fn remove<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, ()> {
        async move {
            if !instance.resource.persistent {
                let _ = tokio::fs::remove_dir_all(self.state.run_dir(&instance.name)).await;
            }
        }
        .boxed()
    }
}

/// A running child process (the leader of its own process group).
struct Process {
    pid: u32,
    exit: watch::Receiver<Option<Exit>>,
    pg_bin: Option<PathBuf>,
    /// Port name → host port, for `{port:NAME}` in health commands.
    ports: HashMap<String, u16>,
}

impl Running for Process {
    fn exited(&self) -> BoxFuture<'_, Exit> {
        super::wait_exit(&self.exit)
    }

    fn stop(&self, signal: i32, grace: Duration) -> BoxFuture<'_, ()> {
        async move {
            if self.exit.borrow().is_some() {
                return;
            }
            signal_group(self.pid, libc::SIGCONT); // a paused child cannot act on SIGTERM
            signal_group(self.pid, signal);
            if tokio::time::timeout(grace, self.exited()).await.is_err() {
                signal_group(self.pid, libc::SIGKILL);
                self.exited().await;
            }
        }
        .boxed()
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        async move {
            signal_group(self.pid, libc::SIGKILL);
            self.exited().await;
        }
        .boxed()
    }

    fn exec(&self, command: Vec<String>, timeout: Duration) -> BoxFuture<'_, Result<i32, String>> {
        async move {
            let command = expand_ports(&command, |name| self.ports.get(name).copied());
            let Some((program, args)) = command.split_first() else { return Err("empty command".into()) };
            let program = match (which(program), &self.pg_bin) {
                (Some(p), _) => p,
                (None, Some(bin)) if bin.join(program).exists() => bin.join(program),
                _ => PathBuf::from(program),
            };
            let mut c = Command::new(program);
            c.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
            match tokio::time::timeout(timeout, c.status()).await {
                Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        }
        .boxed()
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), String>> {
        signal_group(self.pid, libc::SIGSTOP);
        async { Ok(()) }.boxed()
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), String>> {
        signal_group(self.pid, libc::SIGCONT);
        async { Ok(()) }.boxed()
    }

    fn partition(&self, _cut: bool) -> BoxFuture<'_, Result<(), String>> {
        async {
            Err("partition is not supported on the process runtime: local processes share the host's network; \
                 run the resource with `runtime: docker`, or use `chaos pause` to make it unresponsive"
                .to_owned())
        }
        .boxed()
    }

    fn id(&self) -> String {
        format!("pid {}", self.pid)
    }

    fn usage(&self) -> BoxFuture<'_, Option<Usage>> {
        let pid = self.pid;
        async move { tokio::task::spawn_blocking(move || group_usage(pid)).await.ok().flatten() }.boxed()
    }
}

/// The summed CPU time and resident memory of process group `pgid`, from
/// `/proc` (PostgreSQL and Artemis are many processes or threads; one group).
fn group_usage(pgid: u32) -> Option<Usage> {
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as u64) };
    let mut usage = Usage { cpu_seconds: 0.0, memory_bytes: 0 };
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may contain spaces: count fields after it.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = after.split(' ').collect();
        // After `)`: state(0) ppid(1) pgrp(2) … utime(11) stime(12) … rss(21)
        if fields.get(2).and_then(|f| f.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        usage.cpu_seconds += (number(11) + number(12)) as f64 / ticks;
        usage.memory_bytes += number(21) * page;
        found = true;
    }
    found.then_some(usage)
}

pub fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process group this process created (pgid == pid).
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// Runs a setup command to its end; `Err` carries the tail of its output.
async fn run_to_end(mut command: Command, owner: Option<(u32, u32)>, stdin: Option<String>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        Err(tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

/// Creates `dir` below the state folder `top` (owned by `owner` when given).
/// The folders between them are made traversable (0711) so a server running
/// as another user reaches its data; nothing above `top` is touched.
fn make_dir_for(dir: &Path, top: &Path, owner: Option<(u32, u32)>) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|e| StartError::new(format!("cannot create {}: {e}", dir.display())))?;
    if owner.is_some() {
        let mut parent = dir.parent();
        while let Some(p) = parent.filter(|p| p.starts_with(top)) {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711));
            parent = p.parent();
        }
        chown(dir, owner);
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn chown(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
}

/// As root, servers that refuse root run as `user`; otherwise as ourselves.
fn run_as(user: &str) -> Result<Option<(u32, u32)>, StartError> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new(user).expect("no NUL");
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(StartError::new(format!(
            "apphost runs as root, and PostgreSQL refuses root, but there is no `{user}` user"
        ))
        .help("install Debian's postgresql-15 (it creates the user), or run apphost as another user"));
    }
    // SAFETY: checked non-null.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH")?.to_string_lossy().split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// PostgreSQL's server binaries: `PG_BIN`, Debian's 15, or `pg_config --bindir`.
pub fn pg_bin_dir() -> Result<PathBuf, StartError> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(dir.into());
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("postgres").exists() {
        return Ok(debian);
    }
    std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.join("postgres").exists())
        .ok_or_else(|| {
            StartError::new("the PostgreSQL server binaries are not installed").help(
                "install them (`apt-get install postgresql-15`), set PG_BIN to their folder, or use the docker runtime",
            )
        })
}

/// The Artemis distribution: `ARTEMIS_HOME`, or the one `.ci/setup` caches.
pub fn artemis_home() -> Result<PathBuf, StartError> {
    if let Some(home) = std::env::var_os("ARTEMIS_HOME") {
        return Ok(home.into());
    }
    let cache = std::env::var_os("APPHOST_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/apphost")
    });
    let home = cache.join("apache-artemis-2.40.0");
    if home.join("bin/artemis").exists() {
        Ok(home)
    } else {
        Err(StartError::new("no ActiveMQ Artemis distribution found")
            .help(format!("run `.ci/setup` (it puts Artemis 2.40.0 in {}), or set ARTEMIS_HOME", cache.display())))
    }
}

/// Points the `artemis` (CORE) and `amqp` acceptors at loopback ports.
fn set_acceptor_ports(broker_xml: &Path, core: Option<u16>, amqp: Option<u16>) -> Result<(), StartError> {
    let xml = std::fs::read_to_string(broker_xml)
        .map_err(|e| StartError::new(format!("cannot read {}: {e}", broker_xml.display())))?;
    let mut xml = xml;
    for (name, port) in [("artemis", core), ("amqp", amqp)] {
        let Some(port) = port else { continue };
        let re = regex::Regex::new(&format!(r#"(<acceptor name="{name}">tcp://)[^:/?]+:\d+"#)).expect("valid regex");
        xml = re.replace(&xml, format!("${{1}}127.0.0.1:{port}")).into_owned();
    }
    std::fs::write(broker_xml, xml).map_err(|e| StartError::new(format!("cannot write {}: {e}", broker_xml.display())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn data_dirs_open_the_way_down_from_the_state_folder_and_nothing_above() {
        let base = std::env::temp_dir().join(format!("apphost-mkdir-{}", uuid::Uuid::new_v4().simple()));
        let top = base.join("state");
        std::fs::create_dir_all(&top).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o750)).unwrap();
        let me = std::fs::metadata(&base).unwrap();
        let dir = top.join("run").join("db");
        make_dir_for(&dir, &top, Some((me.uid(), me.gid()))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&top.join("run")), 0o711);
        assert_eq!(mode(&top), 0o711);
        assert_eq!(mode(&base), 0o750, "nothing above the state folder changes");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn acceptors_move_to_loopback_ports() {
        let file = std::env::temp_dir().join(format!("broker-{}.xml", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &file,
            r#"<acceptor name="artemis">tcp://0.0.0.0:61616?protocols=CORE</acceptor>
<acceptor name="amqp">tcp://0.0.0.0:5672?protocols=AMQP</acceptor>"#,
        )
        .unwrap();
        set_acceptor_ports(&file, Some(1111), Some(2222)).unwrap();
        let xml = std::fs::read_to_string(&file).unwrap();
        assert!(xml.contains("tcp://127.0.0.1:1111?protocols=CORE"), "{xml}");
        assert!(xml.contains("tcp://127.0.0.1:2222?protocols=AMQP"), "{xml}");
        std::fs::remove_file(file).unwrap();
    }
}
