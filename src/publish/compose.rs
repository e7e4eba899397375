//! `apphost publish --target compose`: a compose file in the Compose
//! Specification's form (no `version:` key; Debian's docker-compose 1.29 and
//! the compose plugin both read it) and one owner-only env file per service
//! that has a secret.

use std::time::Duration;

use super::{Files, Stack, yaml::Node};
use crate::{
    plan::Instance,
    runtime::docker::signal_name,
    topology::{Check, Condition, Probe, RestartPolicy, Topology},
};

/// Where the first project without a host port of its own is published;
/// the next get the ports after it, in file order.
const FIRST_HOST_PORT: u16 = 8080;

/// The compose file and env files of `stack`; `image` names a project's image.
pub fn render(t: &Topology, stack: &Stack, image: &dyn Fn(&Instance) -> String) -> Files {
    let mut files = Files::new();
    let mut services = Node::map();
    let mut volumes = Node::map();
    let mut next_host_port = FIRST_HOST_PORT;
    for i in &stack.instances {
        let r = &i.resource;
        let spec = r.kind.spec();
        // Anything that carries a password goes to the env file, the rest stays readable inline.
        let (secret, plain) = super::split_secrets(stack, i);
        let mut service = Node::map().with("image", Node::str(super::image_of(i, image)));
        if !r.args.is_empty() {
            service = service.with("command", Node::strs(r.args.iter().cloned()));
        }
        if !secret.is_empty() {
            let name = format!("{}.env", i.name);
            files.insert(name.clone(), (super::env_file(&secret), true));
            service = service.with("env_file", Node::strs([name]));
        }
        if !plain.is_empty() {
            let env = plain.into_iter().map(|(k, v)| (k.clone(), Node::str(v))).collect();
            service = service.with("environment", Node::Map(env));
        }
        // A project's HTTP port on this machine's loopback, as `apphost up` gives it; a
        // replicated one has none (its replicas would want the same port).
        if spec.package(r).is_some()
            && r.replicas == 1
            && let Some(port) = r.port("http")
        {
            let host = port.host.filter(|h| *h != 0).unwrap_or_else(|| {
                next_host_port += 1;
                next_host_port - 1
            });
            let target = i.ports.get("http").map_or(super::PROJECT_PORT, |b| b.host);
            service = service.with("ports", Node::strs([format!("127.0.0.1:{host}:{target}")]));
        }
        if let (true, Some(path)) = (r.persistent, spec.data_path()) {
            let volume = format!("{}-data", i.name);
            service = service.with("volumes", Node::strs([format!("{volume}:{path}")]));
            volumes = volumes.with(&volume, Node::map());
        }
        if let Some(bytes) = spec.shm_bytes() {
            service = service.with("shm_size", Node::str(format!("{}m", bytes >> 20)));
        }
        service = service.with_some("healthcheck", r.health.as_ref().map(|p| healthcheck(i, p)));
        if !r.wait_for.is_empty() {
            let mut depends = Node::map();
            for w in &r.wait_for {
                let condition = match w.condition {
                    Condition::Started => "service_started",
                    Condition::Healthy => "service_healthy",
                    Condition::Completed => "service_completed_successfully",
                };
                depends = depends.with(&w.name, Node::map().with("condition", Node::str(condition)));
            }
            service = service.with("depends_on", depends);
        }
        let restart = match r.restart.policy {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            // `docker stop` (or a `compose stop`) is not undone when the engine restarts.
            RestartPolicy::Always => "unless-stopped",
        };
        service = service
            .with("restart", Node::str(restart))
            .with("stop_signal", Node::str(signal_name(r.shutdown.signal)))
            .with("stop_grace_period", Node::str(seconds(r.shutdown.grace)));
        if r.replicas > 1 {
            service = service.with("deploy", Node::map().with("replicas", Node::Int(r.replicas.into())));
        }
        service = service.with("networks", Node::strs([t.name.clone()]));
        services = services.with(&i.name, service);
    }
    let mut doc = Node::map().with("services", services).with("networks", Node::map().with(&t.name, Node::map()));
    if let Node::Map(entries) = &volumes
        && !entries.is_empty()
    {
        doc = doc.with("volumes", volumes);
    }
    let header = format!(
        "`{}` as docker compose runs it, written by `apphost publish --target compose` from {}.\n\
         Start: docker compose -p {0} up -d    Stop and remove, volumes too: docker compose -p {0} down -v\n\
         The *.env files hold the generated passwords (owner-only): keep them out of version control.",
        t.name,
        t.file.file_name().map_or("apphost.yaml".into(), |f| f.to_string_lossy().into_owned()),
    );
    files.insert("compose.yaml".into(), (doc.document(&super::with_notes(header, stack)), false));
    files
}

/// A compose healthcheck from apphost's probe, run inside the container.
fn healthcheck(i: &Instance, probe: &Probe) -> Node {
    let r = &i.resource;
    let port = |name: &str| i.ports.get(name).map(|b| b.host);
    // `bash`'s /dev/tcp: the official postgres and Artemis images have bash, and no curl.
    let tcp = |port: Option<u16>| {
        Node::strs(["CMD", "bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{}", port.unwrap_or_default())])
    };
    let exec = |command: &[String]| {
        Node::List(
            std::iter::once(Node::str("CMD"))
                .chain(crate::runtime::expand_ports(command, port).into_iter().map(Node::Str))
                .collect(),
        )
    };
    let test = match &probe.check {
        Check::Exec { command } => exec(command),
        Check::PgIsReady { port: name } => exec(&i.pg_isready(name)),
        // The services answer their own readiness: slim images have no curl.
        Check::Http { .. } if r.kind.spec().package(r).is_some() => Node::strs([
            "CMD".to_owned(),
            format!("/usr/local/bin/{}", r.kind.spec().package(r).unwrap_or_default()),
            "--health-check".into(),
        ]),
        Check::Http { port: name, .. } | Check::Tcp { port: name } | Check::Amqp { port: name } => tcp(port(name)),
        Check::Log { .. } => tcp(i.ports.values().next().map(|b| b.host)),
    };
    Node::map()
        .with("test", test)
        .with("interval", Node::str(seconds(probe.interval)))
        .with("timeout", Node::str(seconds(probe.timeout)))
        .with("retries", Node::Int(probe.retries.into()))
        .with("start_period", Node::str(seconds(probe.start_period.max(MIN_START_PERIOD))))
}

/// The shortest start period a published healthcheck gets. compose gives up on
/// a stack whose dependency turns unhealthy (where apphost keeps waiting), and
/// a first start (PostgreSQL's initdb, the JVM) takes longer than a few
/// failed probes; a start period ends at the first success anyway.
const MIN_START_PERIOD: Duration = Duration::from_secs(60);

/// A duration as compose writes one: `5s`, `250ms`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
