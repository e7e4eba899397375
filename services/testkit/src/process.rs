//! Child processes that cannot outlive the test process.
//!
//! Linux's `PR_SET_PDEATHSIG` kills a child when the *thread* that spawned it
//! exits, and the test harness runs each test on a thread of its own. So every
//! server is spawned by one keeper thread that lives as long as the process:
//! when the process ends, however it ends, the kernel kills its servers.
//!
//! Their scratch directories go when the process exits normally (an `atexit`
//! handler kills the servers still running, through the pidfds taken when
//! they were spawned, then removes the directories): the servers a test
//! binary shares live in statics, which are never dropped. A process killed
//! outright leaves its directories to the next run's sweep.

use std::{
    io,
    os::unix::process::CommandExt,
    path::PathBuf,
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

/// What the exit handler cleans up: pidfds of the children spawned (each
/// names that process and no other, so a reaped child's pid reused by
/// another process is never signalled), and the scratch directories made.
struct Owned {
    pidfds: Vec<i32>,
    dirs: Vec<PathBuf>,
}

fn owned() -> &'static Mutex<Owned> {
    static OWNED: OnceLock<Mutex<Owned>> = OnceLock::new();
    OWNED.get_or_init(|| {
        // SAFETY: registers a plain function that takes no arguments.
        unsafe { libc::atexit(clean_up_at_exit) };
        Mutex::new(Owned { pidfds: Vec::new(), dirs: Vec::new() })
    })
}

/// Kills the children still running and removes the scratch directories.
/// Runs at `exit`, after every test: it must not panic or block on a lock.
extern "C" fn clean_up_at_exit() {
    let Ok(mut owned) = owned().try_lock() else { return };
    for pidfd in std::mem::take(&mut owned.pidfds) {
        // SAFETY: pidfd_send_signal(2) and poll(2) on a pidfd this process opened;
        // a child already gone answers ESRCH and polls readable at once.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, std::ptr::null::<u8>(), 0);
            let mut exited = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
            libc::poll(&mut exited, 1, 5_000);
            libc::close(pidfd);
        }
    }
    for dir in std::mem::take(&mut owned.dirs) {
        // A server's own children (PostgreSQL's backends) end just after it, and
        // may still write a file while the directory goes.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
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
    let child = answer.recv().expect("keeper answers")?;
    // SAFETY: pidfd_open(2) on a child not yet waited for, so its pid is still its own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    if pidfd >= 0 {
        owned().lock().expect("owned lock").pidfds.push(pidfd);
    }
    Ok(child)
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
    owned().lock().expect("owned lock").dirs.push(dir.clone());
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
