//! What each kind of resource is, in one file per kind, as .NET Aspire's
//! `AddPostgres`/`AddRabbitMQ` builders own theirs: defaults (image, ports,
//! health check, stop signal), the environment it gets and the one it gives
//! to whoever references it, where its data lives, the log lines that mean
//! trouble, and how to run it as a local process ([`Launch`]). The parser,
//! planner, runtimes, health checks, doctor and dashboard ask the kind
//! ([`Kind::spec`]) instead of matching on its name.

pub mod artemis;
mod container;
mod executable;
pub mod postgres;
mod project;

use std::{collections::HashMap, path::PathBuf};

use crate::{
    plan::Instance,
    runtime::StartError,
    topology::{Check, Diag, Resource},
};

/// A kind of resource, as `kind:` names it in `apphost.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Postgres,
    Artemis,
    Container,
    Executable,
    Project,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Postgres, Kind::Artemis, Kind::Container, Kind::Executable, Kind::Project];

    /// Everything apphost knows about this kind.
    pub fn spec(self) -> &'static dyn ResourceKind {
        match self {
            Kind::Postgres => &postgres::Postgres,
            Kind::Artemis => &artemis::Artemis,
            Kind::Container => &container::Container,
            Kind::Executable => &executable::Executable,
            Kind::Project => &project::Project,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name()
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Every kind's name, in [`Kind::ALL`]'s order.
    pub fn names() -> [&'static str; 5] {
        Kind::ALL.map(Kind::as_str)
    }
}

/// Where a kind's instances can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Always a local process (built or found on this machine).
    Process,
    /// Always a container: it needs the Docker engine.
    Container,
    /// A container when an engine answers (and its image is here), a local process otherwise.
    Either,
}

/// A resource field that only some kinds take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Image,
    Command,
    Package,
    Database,
    User,
    Replicas,
}

impl Field {
    pub const ALL: [Field; 6] =
        [Field::Image, Field::Command, Field::Package, Field::Database, Field::User, Field::Replicas];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Image => "image",
            Field::Command => "command",
            Field::Package => "package",
            Field::Database => "database",
            Field::User => "user",
            Field::Replicas => "replicas",
        }
    }
}

/// A log line that means trouble the health probe does not show:
/// `(text it contains, what it means and what to do)`.
pub type Trouble = (&'static str, &'static str);

/// What the environment of an instance is made from besides the instances.
pub struct EnvContext<'a> {
    /// The session's id: part of each instance's `service.instance.id`.
    pub session: &'a str,
    /// apphost's own `OTEL_EXPORTER_OTLP_*`, passed on to what it runs.
    pub telemetry: &'a [(String, String)],
    /// For a published stack (`apphost publish`), not one `apphost up` runs:
    /// processes listen on every interface of their container, and nothing
    /// of this machine or session goes in.
    pub published: bool,
}

/// What a local launch is made from besides the instance.
pub struct LaunchContext<'a> {
    /// The topology's folder: relative commands and working directories start here.
    pub root: &'a std::path::Path,
    /// Project package → the binary cargo built for it.
    pub binaries: &'a HashMap<String, PathBuf>,
    /// The instance's own folder (its data, kept or not): the kind's files go here.
    pub files: PathBuf,
}

/// How to run an instance as a local process, carried out by the process
/// runtime (the one place that touches files as another user).
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// When apphost runs as root: the OS user the server runs as (it refuses root).
    pub user: Option<&'static str>,
    /// Create [`LaunchContext::files`] (for `user`) before anything runs.
    pub uses_files: bool,
    /// Run once, before the first start: skipped while `done` exists.
    pub init: Option<Init>,
    /// Run before every start.
    pub prepare: Vec<Step>,
    /// Where health commands find their programs when `PATH` has none.
    pub tools: Option<PathBuf>,
}

impl Launch {
    /// Just `program` with `args` in `cwd`.
    pub fn command(program: PathBuf, args: Vec<String>, cwd: PathBuf) -> Self {
        Self {
            program,
            args,
            cwd: Some(cwd),
            user: None,
            uses_files: false,
            init: None,
            prepare: Vec::new(),
            tools: None,
        }
    }
}

pub struct Init {
    /// Exists once the init has run.
    pub done: PathBuf,
    /// Told in the resource's log before it runs.
    pub say: String,
    pub steps: Vec<Step>,
}

pub enum Step {
    /// A file only the server's user can read, for the next steps; removed once they ran.
    Secret { path: PathBuf, contents: String },
    /// A command run to its end; `what` names it in an error.
    Run { what: &'static str, program: PathBuf, args: Vec<String>, stdin: Option<String> },
    /// A text file changed in place; a `private` one is left readable by its owner only.
    Rewrite { path: PathBuf, edit: Box<dyn Fn(&str) -> String + Send + Sync>, private: bool },
}

/// Something a kind needs on this machine to run as a local process, for `apphost doctor`.
pub struct Need {
    pub what: &'static str,
    /// Where it was found, or why not.
    pub found: Result<String, String>,
    pub fix: &'static str,
}

/// A set-up an image does on a container's first start, from a few
/// variables alone, and slowly (Artemis's `artemis create`, a JVM run of
/// its own before the broker's): kept in a volume, it is done once per app,
/// resource and inputs instead of at every `up` (docs/contracts.md).
pub struct Setup {
    /// The folder it fills.
    pub path: &'static str,
    /// The variables it reads; the volume is named after their values and the image.
    pub inputs: &'static [&'static str],
    /// Files a finished set-up has, under `path`: a volume that misses one
    /// was cut short, and is made again.
    pub complete: &'static [&'static str],
    /// Appended (after a space) to the container's variables so that what
    /// it writes at run time (a broker's journal) stays in the container's
    /// own layer, not in the kept folder: each `up` starts empty.
    pub data_apart: &'static [(&'static str, &'static str)],
    /// What makes the next start faster, written by a clean stop.
    pub warm: Option<Warm>,
}

/// A set-up kept as an image (the docker runtime's): the image's first start
/// (PostgreSQL's `initdb`) is made once, in a container of its own that is
/// stopped cleanly when it prints `done`, and committed. Each `up` then runs
/// a new container of that image: set up, and empty of any earlier `up`'s data.
pub struct Snapshot {
    /// The variables it reads; the image is named after their values and the base image.
    pub inputs: &'static [&'static str],
    /// Set on the set-up and every container of the image, unless the
    /// resource sets them: a data folder outside the base image's volumes,
    /// so that the commit holds it.
    pub env: &'static [(&'static str, &'static str)],
    /// The variable that names the folder the set-up fills, and the user it belongs to.
    pub folder: (&'static str, &'static str),
    /// The lines, in this order, the base image prints once its set-up is
    /// done and its program is ready to be stopped cleanly.
    pub done: &'static [&'static str],
}

/// A file a set-up's program writes when it stops cleanly, under
/// [`Setup::path`], that makes its next start cheaper: a JVM's class-data
/// archive. A start that finds it appends `use_it` to `var`; one that does
/// not, `make_it`, so that its clean stop writes the file. A kill leaves no
/// file (the next start makes one) or a torn one, which the program checks
/// and ignores, starting as it would without.
pub struct Warm {
    pub file: &'static str,
    pub var: &'static str,
    pub use_it: &'static str,
    pub make_it: &'static str,
}

/// One kind of resource. Every method but [`ResourceKind::name`],
/// [`ResourceKind::placement`] and [`ResourceKind::launch`] has the default
/// of a kind with nothing special about it.
pub trait ResourceKind: Sync {
    fn name(&self) -> &'static str;

    fn placement(&self) -> Placement;

    /// The image it runs on the docker runtime when `image:` is not given.
    fn default_image(&self) -> Option<&'static str> {
        None
    }

    /// Ports every resource of the kind has: `(name, target)`.
    fn default_ports(&self) -> &'static [(&'static str, Option<u16>)] {
        &[]
    }

    /// Whether a bare port number in the file is the port the process itself
    /// listens on (else it is a container's target port).
    fn listens_on_host(&self) -> bool {
        false
    }

    /// What "healthy" means when the file does not say.
    fn default_check(&self, _resource: &Resource) -> Option<Check> {
        None
    }

    /// The signal a graceful stop sends.
    fn stop_signal(&self) -> i32 {
        libc::SIGTERM
    }

    /// Which of the kind-specific fields it takes.
    fn fields(&self) -> &'static [Field] {
        &[]
    }

    /// A problem with `resource` that only its kind can see (a missing field).
    fn check(&self, _resource: &Resource) -> Option<Diag> {
        None
    }

    /// Whether it gets a generated password (of the user apphost creates in it).
    fn has_password(&self) -> bool {
        false
    }

    /// The environment of the instance itself.
    fn own_env(&self, _me: &Instance, _ctx: &EnvContext<'_>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The connection string of an instance of this kind, if it has one
    /// (`ConnectionStrings__NAME` for whoever references it).
    fn connection_string(&self, _target: &Instance) -> Option<String> {
        None
    }

    /// What a resource that references `target` (named `name` in the file)
    /// gets: its connection string, or a URL per port (`services__NAME__PORT__0`).
    fn reference_env(&self, target: &Instance, name: &str) -> Vec<(String, String)> {
        if let Some(url) = self.connection_string(target) {
            return vec![(format!("ConnectionStrings__{name}"), url)];
        }
        target
            .ports
            .iter()
            .map(|(port, binding)| {
                (
                    format!("services__{name}__{port}__0"),
                    contracts::Endpoint::at(&target.address, port, binding.host).url,
                )
            })
            .collect()
    }

    /// The cargo package `apphost up` builds for it.
    fn package(&self, _resource: &Resource) -> Option<String> {
        None
    }

    /// Where its image keeps data worth a volume.
    fn data_path(&self) -> Option<&'static str> {
        None
    }

    /// What its image sets up in a container's first start and never changes
    /// after, for the docker runtime to keep across `up`s (a non-persistent
    /// resource only; a persistent one keeps it in its data volume).
    fn reusable_setup(&self) -> Option<Setup> {
        None
    }

    /// Whether its start is the longest of a stack's (a JVM's), so the
    /// docker runtime creates and starts its container before the others:
    /// three containers started at once each take the engine 0.8 s, one alone 0.3 s.
    fn starts_first(&self) -> bool {
        false
    }

    /// The same, for an image whose set-up and data share a folder: kept
    /// as an image made from a container's first start (non-persistent only).
    fn snapshot_setup(&self) -> Option<Snapshot> {
        None
    }

    /// How much shared memory (`/dev/shm`) its container needs, where the
    /// engine's default (64 MB for docker) is too little.
    fn shm_bytes(&self) -> Option<u64> {
        None
    }

    fn troubles(&self) -> &'static [Trouble] {
        &[]
    }

    /// A message broker: what `chaos stop-broker` stops and the dashboard asks about before stopping.
    fn is_broker(&self) -> bool {
        false
    }

    /// How to run `instance` as a local process.
    fn launch(&self, instance: &Instance, at: &LaunchContext<'_>) -> Result<Launch, StartError>;

    /// What the local launch needs on this machine.
    fn local_needs(&self) -> Vec<Need> {
        Vec::new()
    }
}

/// The user apphost creates in a server: `user:`, or `apphost`.
pub fn user(resource: &Resource) -> String {
    resource.user.clone().unwrap_or_else(|| "apphost".to_owned())
}

/// The environment of a process apphost launches: its port, and telemetry.
fn process_env(me: &Instance, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(http) = me.port("http") {
        env.push(("PORT".into(), http.to_string()));
        env.push(("HTTP_PORTS".into(), http.to_string()));
        env.push(("HOST".into(), if ctx.published { "0.0.0.0" } else { crate::loopback::ADDRESS }.into()));
    }
    if ctx.published {
        env.push(("OTEL_SERVICE_NAME".into(), me.resource.name.clone()));
        return env;
    }
    // Loopback calls never go through a proxy apphost's environment may name.
    let no_proxy = crate::loopback::no_proxy();
    env.push(("NO_PROXY".into(), no_proxy.clone()));
    env.push(("no_proxy".into(), no_proxy));
    env.push(("OTEL_SERVICE_NAME".into(), me.resource.name.clone()));
    env.push(("OTEL_RESOURCE_ATTRIBUTES".into(), format!("service.instance.id={}-{}", me.name, ctx.session)));
    env.extend(ctx.telemetry.iter().cloned());
    env
}

/// The folder a process resource runs in: `working_dir:` below the topology's folder, or that folder.
fn working_dir(resource: &Resource, root: &std::path::Path) -> PathBuf {
    resource.working_dir.as_ref().map_or(root.to_path_buf(), |d| root.join(d))
}

fn missing(m: local_install::Missing) -> StartError {
    StartError::new(m.message).help(m.help)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// A kind's knowledge stays in its file: nothing else in apphost or the
    /// dashboard names a service kind (tests may, to describe a topology).
    #[test]
    fn no_kind_is_named_outside_the_kinds_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        rust_files(&root.join("dashboard/src"), &mut files);
        let kinds = root.join("src/kinds");
        let named: Vec<String> = files
            .iter()
            .filter(|f| !f.starts_with(&kinds) && f.file_name().is_some_and(|n| n != "tests.rs"))
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                // Unit tests at the end of a file may name kinds too.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                code.lines()
                    .enumerate()
                    .filter(|(_, line)| line.contains("\"postgres\"") || line.contains("\"artemis\""))
                    .map(|(i, line)| format!("{}:{}: {}", f.display(), i + 1, line.trim()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(named.is_empty(), "kinds named outside src/kinds:\n{}", named.join("\n"));
    }

    #[test]
    fn every_kind_is_found_by_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("postgress"), None);
    }
}
