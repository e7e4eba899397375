//! What apphost keeps under `.apphost/` next to the topology file: generated
//! secrets (owner-only, reused across runs), the running session's control
//! endpoint, and the processes it started (pid + start time, so that a later
//! `apphost down` can tell a leftover from an unrelated process that reused the pid).

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Serialize};

/// `.apphost/` beside the topology file.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    /// `.apphost/` beside `file`, or `APPHOST_STATE_DIR` when set.
    pub fn for_topology(file: &Path) -> Self {
        if let Some(dir) = std::env::var_os("APPHOST_STATE_DIR").filter(|d| !d.is_empty()) {
            return Self { root: PathBuf::from(dir) };
        }
        let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Self { root: dir.join(".apphost") }
    }

    /// Creates the folder (mode 0711: others may pass through it, as a
    /// database server running as `postgres` must to reach its data, but not
    /// list it; the secrets in it are owner-only files), or checks that the
    /// one there can be trusted with secrets and process records: a folder
    /// of ours that nobody else can write to, not a link. A folder apphost
    /// did not create keeps its mode.
    pub fn ensure(&self) -> std::io::Result<()> {
        match fs::symlink_metadata(&self.root) {
            Ok(meta) => trusted(&self.root, &meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)?;
                }
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o711).create(&self.root)?;
                // The umask may have taken some of it away; the folder is ours.
                fs::set_permissions(&self.root, fs::Permissions::from_mode(0o711))
            }
            Err(e) => Err(e),
        }
    }

    /// Data of persistent resources (process runtime).
    pub fn data_dir(&self, resource: &str) -> PathBuf {
        self.root.join("data").join(resource)
    }

    /// Files of non-persistent resources, removed at `down`.
    pub fn run_dir(&self, resource: &str) -> PathBuf {
        self.root.join("run").join(resource)
    }

    /// The session's log journals, one file per resource (see [`crate::logs`]).
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// apphost's own output when it is not on a terminal (`up --detach`, the dashboard).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("apphost.log")
    }

    pub fn secrets_file(&self) -> PathBuf {
        self.root.join("secrets.json")
    }

    pub fn session_file(&self) -> PathBuf {
        self.root.join("session.json")
    }

    pub fn pids_file(&self) -> PathBuf {
        self.root.join("pids.json")
    }

    /// Who owns what apphost starts from this folder: the host and the
    /// folder's path. Containers carry it as a label, processes as
    /// [`OWNER_VAR`] in their environment.
    pub fn owner(&self) -> String {
        crate::runtime::docker::owner_of(&self.root)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Takes the state's lock, held by the one apphost that runs the app here
    /// for its whole life; `None` if another holds it. The kernel lets go when
    /// the holder dies however it dies, so a lock is never stale. Tried for a
    /// second: a [`Self::locked`] check holds it for an instant.
    pub fn lock(&self) -> std::io::Result<Option<StateLock>> {
        self.lock_within(std::time::Duration::from_secs(1))
    }

    /// [`Self::lock`], trying for up to `limit` (a reaper cleaning up after a
    /// killed apphost holds it for a few seconds).
    pub fn lock_within(&self, limit: std::time::Duration) -> std::io::Result<Option<StateLock>> {
        self.ensure()?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.lock_file())?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(StateLock { _file: file }));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Whether an apphost holds this state's lock now (it runs or is starting).
    pub fn locked(&self) -> bool {
        let Ok(file) = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(self.lock_file()) else {
            return false;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: flock(2) on a descriptor this function owns; closing it lets go.
        unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) != 0 }
    }
}

/// The state's lock, released when dropped or when the process ends. The
/// descriptor is close-on-exec: no child inherits it.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

/// Whether a state folder that is already there can be trusted: others could
/// plant links in one they can write to (which root would then follow) or
/// forge the records of what to stop.
fn trusted(root: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    match untrusted(meta) {
        Some(why) => Err(std::io::Error::other(format!(
            "the state folder {} {why}; apphost keeps secrets and the processes it started there. \
             Use a folder of your own that only you can write to (set APPHOST_STATE_DIR, e.g. to a new folder), \
             or leave it unset for `.apphost` beside the topology file",
            root.display()
        ))),
        None => Ok(()),
    }
}

/// Why a folder (its `symlink_metadata`) cannot be trusted with secrets, if
/// it cannot: a link, not a folder, another user's, or writable by others.
pub fn untrusted(meta: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if !meta.is_dir() {
        Some("is not a folder".into())
    } else if meta.uid() != me {
        Some(format!("belongs to another user (uid {}, not {me})", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("can be written by others (mode {:o})", meta.mode() & 0o7777))
    } else {
        None
    }
}

/// Opens a log under the state folder for appending (`truncate`: from
/// empty), readable by the owner only: what the services print may hold
/// anything, and a file an older apphost left 0644 is narrowed too.
pub fn private_log(path: &Path, truncate: bool) -> std::io::Result<fs::File> {
    let file =
        fs::OpenOptions::new().create(true).append(!truncate).write(true).truncate(truncate).mode(0o600).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `contents` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(tmp, path)
}

/// Generated passwords, one per resource that needs one, kept across runs so
/// that persistent data stays usable.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Secrets {
    passwords: BTreeMap<String, String>,
}

impl Secrets {
    pub fn load(dir: &StateDir) -> std::io::Result<Self> {
        match fs::read(dir.secrets_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// The password of `resource`, generated and saved on first use.
    pub fn password(&mut self, dir: &StateDir, resource: &str) -> std::io::Result<String> {
        if let Some(p) = self.passwords.get(resource) {
            return Ok(p.clone());
        }
        let password: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
        self.passwords.insert(resource.to_owned(), password.clone());
        dir.ensure()?;
        write_private(&dir.secrets_file(), &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        Ok(password)
    }

    /// The password of `resource`, if one was generated.
    pub fn get(&self, resource: &str) -> Option<&str> {
        self.passwords.get(resource).map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.passwords.values().map(String::as_str)
    }
}

/// Where a running `apphost up` listens for the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub pid: u32,
    pub port: u16,
    pub token: String,
    pub app: String,
    pub runtime: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

impl Session {
    pub fn save(&self, dir: &StateDir) -> std::io::Result<()> {
        dir.ensure()?;
        write_private(&dir.session_file(), &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)
    }

    /// The session file, if one exists and its apphost still holds the state's
    /// lock: a pid alone could have been reused by another process since.
    pub fn load_live(dir: &StateDir) -> Option<Self> {
        let session = Self::load(dir)?;
        dir.locked().then_some(session)
    }

    /// The session file as it is, live or not.
    pub fn load(dir: &StateDir) -> Option<Self> {
        serde_json::from_slice(&fs::read(dir.session_file()).ok()?).ok()
    }

    pub fn remove(dir: &StateDir) {
        let _ = fs::remove_file(dir.session_file());
    }
}

/// A process apphost started, recognisable after a crash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PidRecord {
    pub resource: String,
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks since boot when it started.
    pub start_time: u64,
}

/// Whether `pid` exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next().map(|s| s != "Z")))
        .unwrap_or(false)
}

/// The start time of `pid` from `/proc`, if it runs.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a record may be acted on at all: never init or the kernel's own
/// (a record of pid 1 would make `kill(-1)`, every process there is), never
/// apphost itself.
fn may_signal(record: &PidRecord) -> bool {
    record.pid > 1 && record.pid <= i32::MAX as u32 && record.pid != std::process::id()
}

/// Set in the environment of every process apphost starts on the process
/// runtime (and inherited by theirs): what a reaper may kill, even a
/// grandchild that left its process group or outlived its parent.
pub const OWNER_VAR: &str = "APPHOST_OWNER";

/// Kills every process whose environment carries `OWNER_VAR=owner`, proving
/// each is that process (a pidfd pins it while its environment is read).
/// Returns their pids.
pub fn kill_marked(owner: &str) -> Vec<u32> {
    let marker = format!("{OWNER_VAR}={owner}");
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return killed };
    for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        if pid <= 1 || pid == me || pid > i32::MAX as u32 {
            continue;
        }
        // SAFETY: pidfd_open(2) with no flags; the descriptor is closed below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
        if pidfd < 0 {
            continue;
        }
        let marked = carries(pid, &marker);
        // SAFETY: pidfd_send_signal(2) on the pidfd opened above: signal 0 proves the
        // process read above is still the one the pidfd names (so the pid was not reused).
        let same = || unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, 0, std::ptr::null::<u8>(), 0) } == 0;
        if marked && same() {
            // SAFETY: as above, with SIGKILL.
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, std::ptr::null::<u8>(), 0) };
            killed.push(pid);
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(pidfd) };
    }
    killed
}

/// Whether `pid`'s environment has the variable `marker` (`NAME=value`) exactly.
fn carries(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
}

/// The processes (not zombies) whose environment carries `OWNER_VAR=owner`, for checks.
pub fn marked(owner: &str) -> Vec<u32> {
    let marker = format!("{OWNER_VAR}={owner}");
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_running(*pid) && carries(*pid, &marker))
        .collect()
}

/// One read-modify-write of `pids.json` at a time: jobs start processes
/// concurrently, and two interleaved updates would lose a record. (Only the
/// holder of the state's lock writes it.)
static PIDS_WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The processes of this app, as `pids.json` lists them.
pub struct PidFile {
    path: PathBuf,
    owner: String,
}

impl PidFile {
    pub fn new(dir: &StateDir) -> Self {
        Self { path: dir.pids_file(), owner: dir.owner() }
    }

    pub fn read(&self) -> Vec<PidRecord> {
        fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn write(&self, records: &[PidRecord]) {
        if let Some(parent) = self.path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = write_private(&self.path, &serde_json::to_vec_pretty(records).unwrap_or_default());
    }

    pub fn add(&self, record: PidRecord) {
        let _one = PIDS_WRITER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut records = self.read();
        records.retain(|r| r.pid != record.pid);
        records.push(record);
        self.write(&records);
    }

    pub fn remove(&self, pid: u32) {
        let _one = PIDS_WRITER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut records = self.read();
        records.retain(|r| r.pid != pid);
        self.write(&records);
    }

    /// Kills every recorded process group that is still the process we
    /// started, then every process that carries this folder's [`OWNER_VAR`]
    /// (grandchildren that left the group, `initdb` runs). Returns the
    /// recorded ones it killed.
    pub fn reap(&self) -> Vec<PidRecord> {
        let mut killed = Vec::new();
        for record in self.read().into_iter().filter(may_signal) {
            if process_start_time(record.pid) == Some(record.start_time) {
                // SAFETY: kill(2) on a process group we created (pgid = pid).
                unsafe {
                    libc::kill(-(record.pid as i32), libc::SIGKILL);
                    libc::kill(record.pid as i32, libc::SIGKILL);
                }
                killed.push(record);
            }
        }
        kill_marked(&self.owner);
        let _ = fs::remove_file(&self.path);
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_under_the_state_folder_are_owner_only_even_when_an_older_one_was_not() {
        let base = temp_folder();
        let path = base.path().join("apphost.log");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        private_log(&path, false).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n", "appended to, not emptied");
        let fresh = base.path().join("test-output.log");
        private_log(&fresh, true).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn secrets_are_owner_only_and_reused() {
        let tmp = std::env::temp_dir().join(format!("apphost-secrets-{}", uuid::Uuid::new_v4()));
        let dir = StateDir { root: tmp.join(".apphost") };
        let mut secrets = Secrets::load(&dir).unwrap();
        let first = secrets.password(&dir, "db").unwrap();
        assert_eq!(first.len(), 24);
        let mode = fs::metadata(dir.secrets_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut again = Secrets::load(&dir).unwrap();
        assert_eq!(again.password(&dir, "db").unwrap(), first, "reused across runs");
        assert_ne!(again.password(&dir, "other").unwrap(), first);
        fs::remove_dir_all(tmp).unwrap();
    }

    fn session(pid: u32) -> Session {
        Session {
            id: "s".into(),
            pid,
            port: 1,
            token: "t".into(),
            app: "a".into(),
            runtime: "process".into(),
            started_at: chrono::Utc::now(),
        }
    }

    /// A session file whose pid now belongs to a live process that is not an
    /// apphost (here: this test) is stale: only the state's lock makes it live.
    #[test]
    fn a_session_is_live_while_its_lock_is_held_not_while_its_pid_runs() {
        let base = temp_folder();
        let dir = StateDir { root: base.path().join("state") };
        session(std::process::id()).save(&dir).unwrap();
        assert!(Session::load_live(&dir).is_none(), "a pid that runs proves nothing");
        let lock = dir.lock().unwrap().expect("nobody holds it");
        assert!(Session::load_live(&dir).is_some(), "held: live");
        assert!(dir.lock().unwrap().is_none(), "a second claim is refused");
        drop(lock);
        assert!(Session::load_live(&dir).is_none(), "released with its holder");
        assert!(dir.lock().unwrap().is_some(), "and can be taken again");
    }

    /// Jobs record their processes concurrently; none is lost.
    #[test]
    fn concurrent_pid_records_are_all_kept() {
        let base = temp_folder();
        let dir = StateDir { root: base.path().join("state") };
        dir.ensure().unwrap();
        std::thread::scope(|scope| {
            for t in 0..8u32 {
                let dir = &dir;
                scope.spawn(move || {
                    for i in 0..25 {
                        PidFile::new(dir).add(PidRecord {
                            resource: format!("r{t}"),
                            pid: 1000 + t * 100 + i,
                            start_time: 1,
                        });
                    }
                });
            }
        });
        assert_eq!(PidFile::new(&dir).read().len(), 200);
    }

    /// A folder of its own, removed when the returned guard drops (a failed test's too).
    fn temp_folder() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("apphost-state-").tempdir().unwrap()
    }

    #[test]
    fn a_new_state_folder_is_made_passable_but_not_listable() {
        let base = temp_folder();
        let dir = StateDir { root: base.path().join("deeper").join(".apphost") };
        dir.ensure().unwrap();
        assert_eq!(fs::metadata(&dir.root).unwrap().permissions().mode() & 0o7777, 0o711);
        dir.ensure().unwrap();
    }

    #[test]
    fn a_state_folder_others_can_write_is_refused_and_keeps_its_mode() {
        let base = temp_folder();
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let err = StateDir { root: base.path().to_path_buf() }.ensure().unwrap_err().to_string();
        assert!(err.contains("can be written by others (mode 1777)") && err.contains("APPHOST_STATE_DIR"), "{err}");
        assert_eq!(fs::metadata(base.path()).unwrap().permissions().mode() & 0o7777, 0o1777, "its mode is left alone");
    }

    #[test]
    fn a_state_folder_of_another_user_or_a_link_is_refused() {
        let base = temp_folder();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path(), &link).unwrap();
        let err = StateDir { root: link }.ensure().unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        // As root (CI), hand a folder to `nobody`; as anyone else the chown cannot be done, nor needed.
        let theirs = base.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_ok() {
            let err = StateDir { root: theirs }.ensure().unwrap_err().to_string();
            assert!(err.contains("belongs to another user (uid 65534"), "{err}");
        }
    }

    #[test]
    fn no_record_can_make_apphost_signal_init_everything_or_itself() {
        let record = |pid| PidRecord { resource: "forged".into(), pid, start_time: 0 };
        assert!(!may_signal(&record(0)));
        assert!(!may_signal(&record(1)), "pid 1 would mean kill(-1)");
        assert!(!may_signal(&record(u32::MAX)), "as pid_t this is -1");
        assert!(!may_signal(&record(std::process::id())));
        assert!(may_signal(&record(std::process::id() + 1)));
    }

    #[test]
    fn this_process_runs_and_a_reaped_child_does_not() {
        assert!(process_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!process_running(pid), "an exited, unreaped child is a zombie: not running");
        child.wait().unwrap();
        assert!(!process_running(pid));
    }

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(me), process_start_time(me));
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }
}
