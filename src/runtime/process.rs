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
    kinds::{Launch, LaunchContext, Step},
    logs::Stream,
    plan::{Instance, RuntimeKind},
    statedir::{OWNER_VAR, PidFile, PidRecord, StateDir, process_start_time},
};

pub struct ProcessRuntime {
    state: StateDir,
    pids: Arc<PidFile>,
    /// Project package → the binary cargo built for it, once the build is
    /// done (it runs while the rest starts); closed if it failed.
    binaries: Binaries,
    /// The topology's folder: relative commands and working directories start here.
    root: PathBuf,
}

/// The build's outcome, once there is one.
pub type Binaries = tokio::sync::watch::Receiver<Option<Arc<HashMap<String, PathBuf>>>>;

impl ProcessRuntime {
    pub fn new(state: StateDir, binaries: Binaries, root: PathBuf) -> Self {
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

    /// Everything before the launch itself, as the kind planned it: its
    /// folder (for the user it runs as), its one-time init and what is
    /// prepared before every start. Returns the uid and gid it runs as.
    async fn prepare(
        &self,
        instance: &Instance,
        launch: &Launch,
        files: &Path,
        out: &Output,
    ) -> Result<Option<(u32, u32)>, StartError> {
        let owner = match launch.user {
            Some(user) => local_install::run_as(user).map_err(|m| StartError::new(m.message).help(m.help))?,
            None => None,
        };
        if launch.uses_files {
            make_dir_for(files, &self.state.root, owner)?;
            if owner.is_some()
                && let Some(closed) = files.ancestors().find(|a| {
                    std::fs::metadata(a)
                        // Below the state folder apphost made them passable; the state folder itself
                        // and what is above it are the user's (an existing folder is never re-moded).
                        .is_ok_and(|m| {
                            m.permissions().mode() & 0o001 == 0
                                && (!a.starts_with(&self.state.root) || *a == self.state.root.as_path())
                        })
                })
            {
                return Err(StartError::new(format!(
                    "`{}` runs as the `{}` user, which cannot reach {} ({} is closed to others)",
                    instance.name,
                    launch.user.unwrap_or_default(),
                    files.display(),
                    closed.display()
                ))
                .help("set APPHOST_STATE_DIR to a folder others can pass through (e.g. /var/tmp/apphost), or run apphost as a regular user"));
            }
        }
        if let Some(init) = launch.init.as_ref().filter(|init| !init.done.exists()) {
            out.system(&init.say);
            let result = run_steps(&init.steps, owner, &self.state.owner()).await;
            for step in &init.steps {
                if let Step::Secret { path, .. } = step {
                    let _ = std::fs::remove_file(path);
                }
            }
            result?;
        }
        run_steps(&launch.prepare, owner, &self.state.owner()).await?;
        Ok(owner)
    }

    fn spawn(
        &self,
        instance: &Instance,
        mut command: Command,
        out: Output,
        owner: Option<(u32, u32)>,
        tools: Option<PathBuf>,
    ) -> Result<Arc<dyn Running>, StartError> {
        command
            .envs(instance.env.iter().map(|(k, v)| (k, v)))
            .env(OWNER_VAR, self.state.owner())
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
        instance.release_ports();
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
        Ok(Arc::new(Process { pid, exit: rx, tools, ports }))
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn start<'a>(&'a self, instance: &'a Instance, out: Output) -> BoxFuture<'a, Result<Arc<dyn Running>, StartError>> {
        async move {
            let files = self.files_of(instance);
            let built = match instance.resource.kind.spec().package(&instance.resource) {
                None => Arc::default(),
                Some(_) => {
                    let mut binaries = self.binaries.clone();
                    let built = binaries.wait_for(Option::is_some).await.map(|b| b.clone());
                    built.ok().flatten().ok_or_else(|| StartError::new("the build failed: nothing to start"))?
                }
            };
            let at = LaunchContext { root: &self.root, binaries: &built, files: files.clone() };
            let launch = instance.resource.kind.spec().launch(instance, &at)?;
            let owner = self.prepare(instance, &launch, &files, &out).await?;
            let mut command = Command::new(&launch.program);
            command.args(&launch.args);
            if let Some(cwd) = &launch.cwd {
                command.current_dir(cwd);
            }
            self.spawn(instance, command, out, owner, launch.tools)
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
    /// Where health commands find programs `PATH` lacks (PostgreSQL's `pg_isready`).
    tools: Option<PathBuf>,
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
            let program = match (local_install::which(program), &self.tools) {
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

/// The summed CPU time and resident memory of process group `pgid` and of
/// every descendant of its leader, from `/proc`. Artemis is one process of
/// many threads; PostgreSQL's children each call `setsid()`, so its backends
/// are in groups of their own and only the process tree finds them.
fn group_usage(pgid: u32) -> Option<Usage> {
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as u64) };
    // pid → (ppid, pgrp, cpu ticks, resident pages)
    let mut table = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may contain spaces: count fields after it.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = after.split(' ').collect();
        // After `)`: state(0) ppid(1) pgrp(2) … utime(11) stime(12) … rss(21)
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        table.insert(pid, (number(1) as u32, number(2) as u32, number(11) + number(12), number(21)));
    }
    let belongs = |mut pid: u32| {
        // Up the tree to init: in the group, or below its leader.
        for _ in 0..64 {
            let Some(&(ppid, pgrp, ..)) = table.get(&pid) else { return false };
            if pgrp == pgid || pid == pgid {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            pid = ppid;
        }
        false
    };
    let mut usage = Usage { cpu_seconds: 0.0, memory_bytes: 0 };
    let mut found = false;
    for (&pid, &(_, _, cpu, rss)) in &table {
        if belongs(pid) {
            usage.cpu_seconds += cpu as f64 / ticks;
            usage.memory_bytes += rss * page;
            found = true;
        }
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
    // An abandoned start (a stop during `initdb`) ends its setup command too.
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
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
        // Below the state folder only: it is ours and passable already (`StateDir::ensure`).
        while let Some(p) = parent.filter(|p| p.starts_with(top) && *p != top) {
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

/// Writes `contents` to a new file at `path`, readable by `owner` (or us)
/// alone from the moment it exists. The folder may belong to the server's
/// user, who could have planted a link there: whatever is at `path` is
/// unlinked (which never follows a link), and the file is created
/// exclusively and without following links (a link planted again in
/// between makes the start fail, never a write elsewhere); it is handed to
/// `owner` through its descriptor, not its path.
fn write_secret(path: &Path, contents: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all(contents.as_bytes())
}

/// Carries out `steps` as `owner` (ourselves when `None`).
async fn run_steps(steps: &[Step], owner: Option<(u32, u32)>, marker: &str) -> Result<(), StartError> {
    for step in steps {
        match step {
            Step::Secret { path, contents } => write_secret(path, contents, owner)
                .map_err(|e| StartError::new(format!("cannot write {}: {e}", path.display())))?,
            Step::Run { what, program, args, stdin } => {
                let mut command = Command::new(program);
                // A reaper finds it by this if apphost dies while it runs.
                command.args(args).env(OWNER_VAR, marker);
                run_to_end(command, owner, stdin.clone())
                    .await
                    .map_err(|e| StartError::new(format!("{what} failed: {e}")))?;
            }
            Step::Rewrite { path, edit, private } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| StartError::new(format!("cannot read {}: {e}", path.display())))?;
                let written =
                    if *private { write_secret(path, &edit(&text), owner) } else { std::fs::write(path, edit(&text)) };
                written.map_err(|e| StartError::new(format!("cannot write {}: {e}", path.display())))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A child that leaves the group with `setsid()`, as every PostgreSQL
    /// backend does, still counts toward its tree's usage.
    #[test]
    fn usage_counts_children_that_left_the_group() {
        use std::os::unix::process::CommandExt;
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "setsid sh -c 'while :; do :; done' & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // The busy child, found by its parent, and the CPU it has used by itself.
        let child_cpu = || -> Option<(u32, f64)> {
            for entry in std::fs::read_dir("/proc").ok()?.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
                let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
                if fields[1].parse::<u32>().ok() == Some(pgid) {
                    let cpu = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
                    return Some((fields[2].parse().ok()?, cpu / ticks));
                }
            }
            None
        };
        let (child_group, used) = loop {
            if let Some((group, cpu)) = child_cpu().filter(|(_, cpu)| *cpu >= 0.05) {
                break (group, cpu);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let counted = group_usage(pgid).unwrap().cpu_seconds;
        let _ = std::process::Command::new("kill").args(["-9", &child_group.to_string()]).status();
        let _ = leader.kill();
        let _ = leader.wait();
        assert_ne!(child_group, pgid, "the child is in a group of its own");
        assert!(counted >= used, "counted {counted} s, the child alone used {used} s");
    }

    /// A link planted where a secret goes (as the server's user could, in a
    /// folder it owns) is replaced, never followed: the file it points at
    /// keeps its contents and mode.
    #[tokio::test]
    async fn a_planted_link_where_a_secret_goes_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("apphost-secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("ld.so.preload");
        std::fs::write(&target, "keep").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let pwfile = dir.join("pwfile");
        std::os::unix::fs::symlink(&target, &pwfile).unwrap();

        let steps = [Step::Secret { path: pwfile.clone(), contents: "s3cret".into() }];
        run_steps(&steps, None, "test").await.unwrap();

        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep", "the link's target is untouched");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
        let written = std::fs::symlink_metadata(&pwfile).unwrap();
        assert!(written.file_type().is_file(), "the secret is a file of its own");
        assert_eq!(written.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&pwfile).unwrap(), "s3cret");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn data_dirs_open_the_way_down_from_the_state_folder_and_nothing_above() {
        let base = std::env::temp_dir().join(format!("apphost-mkdir-{}", uuid::Uuid::new_v4().simple()));
        let top = base.join("state");
        std::fs::create_dir_all(&top).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o750)).unwrap();
        let me = std::fs::metadata(&base).unwrap();
        let dir = top.join("run").join("db");
        make_dir_for(&dir, &top, Some((me.uid(), me.gid()))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&top.join("run")), 0o711);
        assert_eq!(mode(&top), 0o711, "the state folder as StateDir::ensure made it");
        assert_eq!(mode(&base), 0o750, "nothing above the state folder changes");
        std::fs::remove_dir_all(base).unwrap();
    }
}
