//! `kind: postgres`: a PostgreSQL 15 server (the official `postgres` image's
//! interface on docker; `initdb` and `postgres` from the local installation
//! otherwise, as the `postgres` user when apphost is root).

use super::{Field, Init, Launch, LaunchContext, Need, Placement, ResourceKind, Step, Trouble, user};
use crate::{plan::Instance, runtime::StartError, topology::Check, topology::Resource};

pub struct Postgres;

/// `/dev/shm` for a PostgreSQL container: 256 MiB, as docs/contracts.md says.
pub const SHM_BYTES: u64 = 256 << 20;

/// The database created at first start: `database:`, or the resource's name with `_` for `-`.
pub fn database(resource: &Resource) -> String {
    resource.database.clone().unwrap_or_else(|| resource.name.replace('-', "_"))
}

impl ResourceKind for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn placement(&self) -> Placement {
        Placement::Either
    }

    fn default_image(&self) -> Option<&'static str> {
        Some("postgres:15")
    }

    fn default_ports(&self) -> &'static [(&'static str, Option<u16>)] {
        &[("tcp", Some(5432))]
    }

    /// apphost's own handshake rather than `pg_isready` in the container:
    /// a `docker exec` costs about 75 ms of CPU (runc, containerd, dockerd),
    /// so two databases probed every second took 15 % of a core here, idle
    /// or under load (measured with `/proc/stat` over 20 s, with and
    /// without two more such execs a second).
    fn default_check(&self, _: &Resource) -> Option<Check> {
        Some(Check::PgIsReady { port: "tcp".into() })
    }

    /// SIGTERM is a "smart" shutdown that waits for every client to leave.
    fn stop_signal(&self) -> i32 {
        libc::SIGINT
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Image, Field::Database, Field::User]
    }

    fn has_password(&self) -> bool {
        true
    }

    fn own_env(&self, me: &Instance, ctx: &super::EnvContext<'_>) -> Vec<(String, String)> {
        let r = &me.resource;
        let mut env = vec![
            ("POSTGRES_USER".into(), user(r)),
            ("POSTGRES_PASSWORD".into(), me.password.clone().unwrap_or_default()),
            ("POSTGRES_DB".into(), database(r)),
        ];
        if ctx.published {
            // A volume's root may hold `lost+found` (a PersistentVolume does), which initdb refuses.
            env.push(("PGDATA".into(), format!("{}/pgdata", self.data_path().unwrap_or_default())));
        }
        env
    }

    fn connection_string(&self, target: &Instance) -> Option<String> {
        let r = &target.resource;
        Some(format!(
            "postgres://{}:{}@{}:{}/{}",
            user(r),
            target.password.clone().unwrap_or_default(),
            target.address,
            target.port("tcp").unwrap_or_default(),
            database(r)
        ))
    }

    fn data_path(&self) -> Option<&'static str> {
        Some("/var/lib/postgresql/data")
    }

    /// Parallel queries and hash joins share their memory through
    /// `/dev/shm`; docker's 64 MB runs out on a join of a million rows (the
    /// official image's documentation warns of it and suggests more).
    /// `initdb` and the database's creation (0.8 CPU-seconds each, beside
    /// the broker's start on 2 cores: a second of it), done once.
    fn snapshot_setup(&self) -> Option<super::Snapshot> {
        Some(super::Snapshot {
            inputs: &["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_INITDB_ARGS", "PGDATA"],
            env: &[("PGDATA", "/var/lib/postgresql/apphost")],
            folder: ("PGDATA", "postgres"),
            // The set-up's own server stops before the first line; the second is
            // the server the image then starts, which stops cleanly on SIGINT.
            done: &["PostgreSQL init process complete; ready for start up.", "ready to accept connections"],
        })
    }

    fn shm_bytes(&self) -> Option<u64> {
        Some(SHM_BYTES)
    }

    fn troubles(&self) -> &'static [Trouble] {
        &[("No space left on device", "disk full: PostgreSQL cannot write; free disk space")]
    }

    fn launch(&self, instance: &Instance, at: &LaunchContext<'_>) -> Result<Launch, StartError> {
        let bin = local_install::pg_bin_dir().map_err(super::missing)?;
        let r = &instance.resource;
        let data = at.files.join("pgdata");
        let data_arg = data.display().to_string();
        let pwfile = at.files.join("pwfile");
        let create = format!("CREATE DATABASE \"{}\";\n", database(r).replace('"', "\"\""));
        let port = instance.port("tcp").unwrap_or(5432).to_string();
        Ok(Launch {
            program: bin.join("postgres"),
            args: ["-D", &data_arg, "-p", &port, "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
                .map(str::to_owned)
                .to_vec(),
            cwd: None,
            user: Some("postgres"),
            uses_files: true,
            init: Some(Init {
                done: data.join("PG_VERSION"),
                say: format!("initialising a PostgreSQL cluster in {}", data.display()),
                steps: vec![
                    Step::Secret { path: pwfile.clone(), contents: instance.password.clone().unwrap_or_default() },
                    Step::Run {
                        what: "initdb",
                        program: bin.join("initdb"),
                        args: vec![
                            "-D".into(),
                            data_arg.clone(),
                            "-U".into(),
                            user(r),
                            "-E".into(),
                            "UTF8".into(),
                            "--auth-host=scram-sha-256".into(),
                            "--auth-local=trust".into(),
                            format!("--pwfile={}", pwfile.display()),
                        ],
                        stdin: None,
                    },
                    // Single-user mode creates the database before anything listens.
                    Step::Run {
                        what: "creating the database",
                        program: bin.join("postgres"),
                        args: ["--single", "-D", &data_arg, "-F", "postgres"].map(str::to_owned).to_vec(),
                        stdin: Some(create),
                    },
                ],
            }),
            prepare: Vec::new(),
            tools: Some(bin),
        })
    }

    fn local_needs(&self) -> Vec<Need> {
        vec![Need {
            what: "PostgreSQL server",
            found: local_install::pg_bin_dir().map(|p| p.display().to_string()).map_err(|m| m.message),
            fix: "apt-get install postgresql-15 (or set PG_BIN)",
        }]
    }
}
