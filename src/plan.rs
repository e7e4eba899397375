//! Turning a topology into what gets started: each instance's runtime, its
//! host ports, its password, and the environment injected into it
//! (`docs/contracts.md`, "Environment contract").

use std::{collections::BTreeMap, sync::Arc};

use contracts::Endpoint;

use crate::{
    kinds::{EnvContext, Placement},
    ports::PortHolds,
    topology::{Resource, Topology},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Process,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The loopback port on this machine.
    pub host: u16,
    /// The port inside a container, or the service's own port for a process.
    pub target: Option<u16>,
}

/// One thing to start: a resource, or one replica of it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique name: the resource's, with `-N` for replicas beyond one.
    pub name: String,
    pub resource: Arc<Resource>,
    pub replica: u32,
    pub runtime: RuntimeKind,
    pub ports: BTreeMap<String, Binding>,
    /// The host whoever references it connects to: `127.0.0.1` for what
    /// `apphost up` starts, the service's name in a published stack.
    pub address: String,
    /// postgres/artemis: the generated password of the resource's user.
    pub password: Option<String>,
    /// The full environment injected into the instance, beyond the inherited one.
    pub env: Vec<(String, String)>,
    /// The plan's ports, held by apphost while their instances do not listen.
    pub holds: Arc<PortHolds>,
}

impl Instance {
    /// Lets go of its ports: for its runtime, right before it starts listening.
    pub fn release_ports(&self) {
        self.holds.release(self.ports.values().map(|b| b.host));
    }

    /// Holds its ports again once it stopped, until its next start.
    pub fn hold_ports(&self) {
        self.holds.hold(self.ports.values().map(|b| b.host));
    }

    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.get(name).map(|b| b.host)
    }

    /// What whoever references it connects with, if its kind has one (`postgres://…`, `amqp://…`).
    pub fn connection_string(&self) -> Option<String> {
        self.resource.kind.spec().connection_string(self)
    }

    /// The user and database of its connection string (`…://user:…@…/database`;
    /// `apphost` for either it lacks), which a `pg_isready` check asks as.
    /// The server's answer does not depend on them: it asks any user to
    /// authenticate, and a wrong database is an error from a server that is up.
    pub fn pg_login(&self) -> (String, String) {
        let url = self.connection_string().and_then(|cs| url::Url::parse(&cs).ok());
        let user = url.as_ref().map(|u| u.username().to_owned()).filter(|u| !u.is_empty());
        let database = url.as_ref().map(|u| u.path().trim_start_matches('/').to_owned()).filter(|d| !d.is_empty());
        (user.unwrap_or_else(|| "apphost".into()), database.unwrap_or_else(|| "apphost".into()))
    }

    /// `pg_isready` on its port `port`, for a published stack's healthcheck:
    /// what a [`Check::PgIsReady`](crate::topology::Check::PgIsReady) does, with the program every PostgreSQL image has.
    pub fn pg_isready(&self, port: &str) -> Vec<String> {
        let (user, database) = self.pg_login();
        let port = format!("{{port:{port}}}");
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", &port, "-U", &user, "-d", &database].map(str::to_owned).to_vec()
    }

    /// Where it answers on this machine, for `ps` and the dashboard.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.ports.iter().map(|(name, b)| Endpoint::loopback(name, b.host)).collect()
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("port {port} wanted by `{resource}` ({name}) is already in use")]
    #[diagnostic(help(
        "stop what listens on {port}, or leave the host port out of `{resource}`'s ports in apphost.yaml so a free one is picked"
    ))]
    PortInUse { resource: String, name: String, port: u16 },
    #[error("`{resource}` is a container, which needs the Docker engine, but {why}")]
    #[diagnostic(help("start Docker (or set DOCKER_HOST), or remove the container resource"))]
    NeedsDocker { resource: String, why: String },
    #[error("cannot store generated passwords under `.apphost/`: {0}")]
    Secrets(std::io::Error),
}

/// The plan for every instance of `t`. `docker` says whether resources that
/// may run on either runtime run in containers; `password` yields a resource's
/// generated password; `telemetry` is apphost's own `OTEL_*` to pass on.
pub fn plan(
    t: &Topology,
    docker: Result<(), String>,
    session: &str,
    mut password: impl FnMut(&str) -> std::io::Result<String>,
    telemetry: &[(String, String)],
) -> Result<Vec<Instance>, PlanError> {
    let mut instances = Vec::new();
    // Held from here on, so that nothing else is handed them while the
    // services build (`ports`).
    let holds = Arc::new(PortHolds::default());
    for r in &t.resources {
        let runtime = match r.kind.spec().placement() {
            Placement::Process => RuntimeKind::Process,
            Placement::Container => match &docker {
                Ok(()) => RuntimeKind::Docker,
                Err(why) => return Err(PlanError::NeedsDocker { resource: r.name.clone(), why: why.clone() }),
            },
            Placement::Either if docker.is_ok() => RuntimeKind::Docker,
            Placement::Either => RuntimeKind::Process,
        };
        let password =
            if r.kind.spec().has_password() { Some(password(&r.name).map_err(PlanError::Secrets)?) } else { None };
        let resource = Arc::new(r.clone());
        for replica in 0..r.replicas {
            let mut ports = BTreeMap::new();
            for p in &r.ports {
                let host = match p.host.filter(|h| *h != 0) {
                    Some(h) if holds.take(h) => h,
                    Some(h) => {
                        return Err(PlanError::PortInUse { resource: r.name.clone(), name: p.name.clone(), port: h });
                    }
                    None => holds.pick().unwrap_or(0),
                };
                ports.insert(p.name.clone(), Binding { host, target: p.target });
            }
            let name = if r.replicas > 1 { format!("{}-{}", r.name, replica + 1) } else { r.name.clone() };
            instances.push(Instance {
                name,
                resource: resource.clone(),
                replica,
                runtime,
                ports,
                address: crate::loopback::ADDRESS.to_owned(),
                password: password.clone(),
                env: Vec::new(),
                holds: holds.clone(),
            });
        }
    }
    let snapshot = instances.clone();
    for instance in &mut instances {
        let ctx = EnvContext { session, telemetry, published: false };
        instance.env = inject(&snapshot, instance, &ctx);
    }
    Ok(instances)
}

/// The environment of `me`: its own settings, its port, telemetry, and one
/// variable per endpoint of every resource it references.
pub fn inject(all: &[Instance], me: &Instance, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
    let r = &me.resource;
    let mut env = r.kind.spec().own_env(me, ctx);
    for reference in &r.references {
        // References go to the first replica.
        let Some(target) = all.iter().find(|i| i.resource.name == reference.name) else { continue };
        let name = &reference.name;
        for (key, value) in target.resource.kind.spec().reference_env(target, name) {
            // Also with underscores, for tools that cannot read a `-` in a variable's name.
            if name.contains('-') {
                let underscored = key.replace(name.as_str(), &name.replace('-', "_"));
                env.push((key, value.clone()));
                env.push((underscored, value));
            } else {
                env.push((key, value));
            }
        }
    }
    // The file's own `env` wins over everything injected.
    for (k, v) in &r.env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::topology;

    /// The demo topology; `web` has the fixed port `web_port` (a port free
    /// now: a fixed number such as 8080 may be taken by something else here).
    fn demo(web_port: u16) -> Topology {
        topology::parse_str(
            Path::new("apphost.yaml"),
            &format!(
                r#"
name: demo
resources:
  sender-db: {{ kind: postgres, database: sender }}
  broker: {{ kind: artemis }}
  api: {{ kind: project, package: sender, references: [sender-db, broker], env: {{ RUST_LOG: debug }} }}
  web: {{ kind: executable, command: web, ports: [{web_port}], references: [api] }}
"#
            ),
        )
        .unwrap()
    }

    fn env_of<'a>(instances: &'a [Instance], name: &str) -> BTreeMap<&'a str, &'a str> {
        instances.iter().find(|i| i.name == name).unwrap().env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn references_inject_connection_strings_and_service_urls() {
        let web_port = testkit::free_port();
        let t = demo(web_port);
        let instances = plan(&t, Err("no engine".into()), "s1", |r| Ok(format!("pw-{r}")), &[]).unwrap();
        assert!(instances.iter().all(|i| i.runtime == RuntimeKind::Process));
        let db = instances.iter().find(|i| i.name == "sender-db").unwrap();
        let broker = instances.iter().find(|i| i.name == "broker").unwrap();
        let api = instances.iter().find(|i| i.name == "api").unwrap();
        let env = env_of(&instances, "api");
        let db_url = format!("postgres://apphost:pw-sender-db@127.0.0.1:{}/sender", db.port("tcp").unwrap());
        assert_eq!(env["ConnectionStrings__sender-db"], db_url);
        assert_eq!(env["ConnectionStrings__sender_db"], db_url, "also with underscores");
        assert_eq!(
            env["ConnectionStrings__broker"],
            format!("amqp://apphost:pw-broker@127.0.0.1:{}", broker.port("amqp").unwrap())
        );
        assert_eq!(env["PORT"], api.port("http").unwrap().to_string());
        assert_eq!(env["OTEL_SERVICE_NAME"], "api");
        assert_eq!(env["OTEL_RESOURCE_ATTRIBUTES"], "service.instance.id=api-s1");
        assert_eq!(env["RUST_LOG"], "debug");

        let web = env_of(&instances, "web");
        assert_eq!(web["services__api__http__0"], format!("http://127.0.0.1:{}", api.port("http").unwrap()));
        assert_eq!(web["PORT"], web_port.to_string(), "a fixed port is kept");

        let db_env = env_of(&instances, "sender-db");
        assert_eq!(db_env["POSTGRES_USER"], "apphost");
        assert_eq!(db_env["POSTGRES_PASSWORD"], "pw-sender-db");
        assert_eq!(db_env["POSTGRES_DB"], "sender");
    }

    #[test]
    fn docker_when_an_engine_answers_for_service_kinds_only() {
        let t = demo(testkit::free_port());
        let instances = plan(&t, Ok(()), "s1", |r| Ok(r.to_owned()), &[]).unwrap();
        let runtime = |n: &str| instances.iter().find(|i| i.name == n).unwrap().runtime;
        assert_eq!(runtime("sender-db"), RuntimeKind::Docker);
        assert_eq!(runtime("broker"), RuntimeKind::Docker);
        assert_eq!(runtime("api"), RuntimeKind::Process);
    }

    #[test]
    fn a_taken_fixed_port_is_reported_with_the_resource() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let t = topology::parse_str(
            Path::new("apphost.yaml"),
            &format!("resources:\n  web: {{ kind: executable, command: x, ports: [{port}] }}\n"),
        )
        .unwrap();
        let err = plan(&t, Err(String::new()), "s", |_| Ok(String::new()), &[]).unwrap_err();
        assert!(matches!(err, PlanError::PortInUse { port: p, .. } if p == port), "{err}");
    }

    #[test]
    fn the_plans_ports_are_held_until_their_instance_starts() {
        let t = demo(testkit::free_port());
        let instances = plan(&t, Err(String::new()), "s", |_| Ok(String::new()), &[]).unwrap();
        let api = instances.iter().find(|i| i.name == "api").unwrap();
        let port = api.port("http").unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "a planned port was free to take");
        api.release_ports();
        let listening = std::net::TcpListener::bind(("127.0.0.1", port)).expect("released for its instance");
        drop(listening);
        api.hold_ports();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "held again while it is down");
    }

    #[test]
    fn replicas_get_their_own_names_and_ports() {
        let t = topology::parse_str(Path::new("apphost.yaml"), "resources:\n  api: { kind: project, replicas: 2 }\n")
            .unwrap();
        let instances = plan(&t, Err(String::new()), "s", |_| Ok(String::new()), &[]).unwrap();
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["api-1", "api-2"]);
        assert_ne!(instances[0].port("http"), instances[1].port("http"));
    }
}
