//! Where this machine keeps what a local server needs, found one way for
//! apphost's process runtime and for the tests' servers alike:
//! - [`pg_bin_dir`]: PostgreSQL's server binaries;
//! - [`artemis_home`]: an ActiveMQ Artemis distribution;
//! - [`run_as`]: the user a server that refuses root runs as;
//! - [`which`]: a program on `PATH`.
//!
//! Each miss is a [`Missing`] that says how to install the thing.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// The Artemis version `.ci/setup` fetches and apphost expects.
pub const ARTEMIS_VERSION: &str = "2.40.0";

/// Something is not installed; `help` says how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub message: String,
    pub help: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.help)
    }
}

impl std::error::Error for Missing {}

/// `program` on `PATH` (or the path itself when it has a `/`).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH")?.to_string_lossy().split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// PostgreSQL's server binaries: `PG_BIN`, Debian's 15, or `pg_config --bindir`.
pub fn pg_bin_dir() -> Result<PathBuf, Missing> {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
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
        .ok_or_else(|| Missing {
            message: "the PostgreSQL server binaries are not installed".into(),
            help:
                "install them (`apt-get install postgresql-15`), set PG_BIN to their folder, or use the docker runtime"
                    .into(),
        })
}

/// Where `.ci/setup` caches downloads: `APPHOST_CACHE`, or `~/.cache/apphost`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("APPHOST_CACHE").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/apphost")
    })
}

/// The Artemis distribution: `ARTEMIS_HOME`, or the one `.ci/setup` caches.
pub fn artemis_home() -> Result<PathBuf, Missing> {
    if let Some(home) = std::env::var_os("ARTEMIS_HOME").filter(|d| !d.is_empty()) {
        return Ok(home.into());
    }
    let cache = cache_dir();
    let home = cache.join(format!("apache-artemis-{ARTEMIS_VERSION}"));
    if home.join("bin/artemis").exists() {
        Ok(home)
    } else {
        Err(Missing {
            message: "no ActiveMQ Artemis distribution found".into(),
            help: format!(
                "run `.ci/setup` (it puts Artemis {ARTEMIS_VERSION} in {}), or set ARTEMIS_HOME",
                cache.display()
            ),
        })
    }
}

/// The uid and gid a server that refuses root runs as: `user` when this
/// process is root, `None` (ourselves) otherwise.
pub fn run_as(user: &str) -> Result<Option<(u32, u32)>, Missing> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let missing = || Missing {
        message: format!("this runs as root, the server refuses root, and there is no `{user}` user"),
        help: "install Debian's postgresql-15 (it creates the user), or run as another user".into(),
    };
    let name = std::ffi::CString::new(user).map_err(|_| missing())?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(missing());
    }
    // SAFETY: checked non-null.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

/// The free disk below which the brokers apphost (and the services' tests) start
/// block producers: an absolute floor (`min-disk-free`, which overrides Artemis's
/// default share of 90 % of the disk, `max-disk-usage`).
pub const ARTEMIS_MIN_DISK_FREE: u64 = 1 << 30;

/// How long Artemis's journal gathers writes before one sync, in ns. Its
/// NIO default (3.3 ms, what `--no-autotune` and the official image leave)
/// is added to every durable send's accept; a sync here takes about 0.25 ms
/// (`dd bs=4k oflag=dsync`), so 0.1 ms costs little and gathers what
/// arrives while the previous sync runs. Longer does not make the broker
/// cheaper: at 4,000 POST/s (`apphost bench --no-build --only closed,open
/// --rates 4000`, 0.1, 0.5 and 1 ms alternated twice at 5d1cb81) the broker
/// took 50–55, 50–59 and 52–57 % of a core and the machine 172–185, 171–181
/// and 169–179 %, while the outbox lag's p50 (median of 3 runs) went from
/// 10.0 and 22.3 ms to 12.1 and 20.7, then 20.2 and 31.8.
pub const ARTEMIS_JOURNAL_BUFFER_TIMEOUT_NS: u64 = 100_000;

/// The broker's garbage collector (G1) works on one thread, in its pauses
/// and beside them. By default it takes a thread per core, so each young
/// pause (about 20 in a 3-minute bench part here, the longest 36–180 ms)
/// held every core of a 2-core machine: a 1 ms sleep beside the broker and
/// `artemis perf producer` (two JVMs) at 480 durable sends a second overslept
/// by up to 51 ms, 8.6 ms with both idle; the services, their databases and
/// the load generator stalled with the broker. On one thread
/// a pause stalls only the broker. At 480 POST/s the outbox lag's p99
/// (median of 3 runs) was 29.5 and 21.1 ms with it, 45.5 and 45.1 ms
/// without (`apphost bench --only closed,open,floor`, twice each,
/// alternating); the broker alone (`artemis perf producer --rate 480`)
/// 9.4 and 9.4 ms against 15.8 and 19.1 ms.
pub const ARTEMIS_GC_THREADS: u32 = 1;

/// `JAVA_ARGS_APPEND` for such a broker: `bin/artemis` appends it to the JVM's
/// arguments, and `brokerconfig.*` system properties override broker.xml.
pub fn artemis_java_args() -> String {
    format!(
        "-Dbrokerconfig.minDiskFree={ARTEMIS_MIN_DISK_FREE} \
         -Dbrokerconfig.journalBufferTimeout={ARTEMIS_JOURNAL_BUFFER_TIMEOUT_NS} \
         -XX:ParallelGCThreads={ARTEMIS_GC_THREADS} -XX:ConcGCThreads={ARTEMIS_GC_THREADS}"
    )
}
