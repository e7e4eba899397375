//! A real PostgreSQL 15 server for tests, on a free port, with trust auth on loopback.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use sqlx::{Connection, PgConnection};

use crate::process::{run_as, scratch_dir, signal, spawn_owned};

pub struct Postgres {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    owner: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
}

fn bin_dir() -> PathBuf {
    local_install::pg_bin_dir().unwrap_or_else(|missing| panic!("{missing}"))
}

impl Postgres {
    /// The server shared by every test of this test binary.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start_private)
    }

    /// A server of its own, for a test that stops and starts it.
    pub fn start_private() -> Postgres {
        let dir = scratch_dir("pg");
        let owner = run_as("postgres");
        let data = dir.join("data");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).ok();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown scratch dir");
        }
        let mut initdb = Command::new(bin_dir().join("initdb"));
        initdb
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("running initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let server =
            Postgres { port: crate::free_port(), log: dir.join("postgres.log"), data, owner, child: Mutex::new(None) };
        server.start();
        server
    }

    /// Starts (or restarts) the server on its port and data directory.
    pub fn start(&self) {
        let mut child = self.child.lock().unwrap();
        if child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid)).ok();
        }
        let mut command = Command::new(bin_dir().join("postgres"));
        command
            .args(["-D", self.data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args(["-k", self.data.to_str().unwrap(), "-c", "listen_addresses=127.0.0.1"])
            // Tests are about behaviour, not power loss: skip fsync for speed.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400", "-c", "shared_buffers=64MB"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        let offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        *child = Some(spawn_owned(command).expect("starting postgres"));
        drop(child);
        crate::process::wait_for_log(&self.log, offset, "ready to accept connections", Duration::from_secs(60));
    }

    /// Fast shutdown (SIGINT): connections are cut, the server exits cleanly.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            signal(child.id(), libc::SIGINT);
            let _ = child.wait();
        }
    }

    /// SIGKILL: the server dies as in a crash.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = crate::unique("t");
        let mut admin = PgConnection::connect(&self.url("postgres")).await.expect("connecting to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        self.url(&name)
    }

    /// Makes every commit that asks for synchronous commit wait for a
    /// synchronous standby that never comes (`synchronous_standby_names =
    /// 'nobody'`); returns once a probe's commit is seen waiting (`SyncRep`).
    /// Such a commit is durable here and never answered, until its session
    /// is ended or [`Postgres::release_synchronous_commits`]. A commit with
    /// `synchronous_commit = off` or `local` does not wait.
    pub async fn hold_synchronous_commits(&self) {
        self.standby("SET synchronous_standby_names = 'nobody'").await;
        let mut admin = PgConnection::connect(&self.url("postgres")).await.expect("connecting to postgres");
        // The checkpointer decides whether commits wait, when the reload reaches
        // it, some time after pg_reload_conf() returns: a probe's commit shows it
        // (a row, not a temporary table: dropping that at exit is a second commit,
        // which waits for the standby after the probe is terminated).
        sqlx::query("CREATE TABLE IF NOT EXISTS sync_probe (n int)").execute(&mut admin).await.unwrap();
        let url = self.url("postgres");
        crate::eventually("commits to wait for the standby", Duration::from_secs(20), || async {
            let mut probe = PgConnection::connect(&url).await.ok()?;
            sqlx::query("SET synchronous_commit = on").execute(&mut probe).await.ok()?;
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut probe).await.ok()?;
            let commit =
                tokio::spawn(async move { sqlx::query("INSERT INTO sync_probe VALUES (1)").execute(&mut probe).await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut admin = PgConnection::connect(&url).await.ok()?;
            let held: Option<bool> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep')",
            )
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .ok();
            sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut admin).await.ok()?;
            let _ = commit.await;
            held?.then_some(())
        })
        .await;
    }

    /// Undoes [`Postgres::hold_synchronous_commits`]: waiting commits return.
    pub async fn release_synchronous_commits(&self) {
        self.standby("RESET synchronous_standby_names").await;
    }

    async fn standby(&self, change: &str) {
        let mut admin = PgConnection::connect(&self.url("postgres")).await.expect("connecting to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER SYSTEM {change}"))).execute(&mut admin).await.unwrap();
        sqlx::query("SELECT pg_reload_conf()").execute(&mut admin).await.unwrap();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
