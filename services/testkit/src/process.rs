//! Child processes that cannot outlive the test process.
//!
//! Linux's `PR_SET_PDEATHSIG` kills a child when the *thread* that spawned it
//! exits, and the test harness runs each test on a thread of its own. So every
//! server is spawned by one keeper thread that lives as long as the process:
//! when the process ends, however it ends, the kernel kills its servers.

use std::{
    io,
    os::unix::process::CommandExt,
    process::{Child, Command},
    sync::{
        Mutex, OnceLock,
        mpsc::{self, Sender},
    },
};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

fn keeper() -> &'static Mutex<Sender<Request>> {
    static KEEPER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel never closes (the sender is static): park forever.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the keeper thread");
        Mutex::new(tx)
    })
}

/// Spawns `command` so that it receives SIGKILL when this process dies.
pub fn spawn_owned(mut command: Command) -> io::Result<Child> {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    keeper().lock().expect("keeper lock").send((command, reply)).expect("keeper alive");
    answer.recv().expect("keeper answers")
}

/// Sends `signal` to the process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The uid and gid to run a server as: `user` when we are root (PostgreSQL
/// refuses to run as root), else ourselves.
pub fn run_as(user: &str) -> Option<(u32, u32)> {
    local_install::run_as(user).unwrap_or_else(|missing| panic!("{missing}"))
}

/// A directory for a server's files under the temp dir, named after this
/// process so that a later run can tell it is stale and remove it.
pub fn scratch_dir(kind: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join("apphost-testkit");
    std::fs::create_dir_all(&root).expect("creating the testkit directory");
    sweep_stale(&root);
    let dir = root.join(format!("{}-{kind}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// Removes the directories of test processes that no longer run.
fn sweep_stale(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Waits until `needle` appears in `log` past byte `offset`; panics with the
/// log's tail after `limit`. Blocking: servers start before a test's work.
pub fn wait_for_log(log: &std::path::Path, offset: u64, needle: &str, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let fresh = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
        if fresh.contains(needle) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let tail: String =
                fresh.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!("gave up after {limit:?} waiting for `{needle}` in {}:\n{tail}", log.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
