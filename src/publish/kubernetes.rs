//! `apphost publish --target kubernetes`: plain manifests and a
//! `kustomization.yaml` (`kubectl apply -k DIR`). A resource with data (a
//! kind with a data path: PostgreSQL, Artemis) is a StatefulSet behind a
//! headless Service, with a PersistentVolumeClaim when `persistent` and an
//! `emptyDir` otherwise; a project (or container) is a Deployment behind a
//! Service. Passwords are Secrets made by kustomize's `secretGenerator` from
//! owner-only env files, or Secrets the user provides.

use std::time::Duration;

use super::{Files, Stack, yaml::Node};
use crate::{
    plan::Instance,
    topology::{Check, Probe, Topology},
};

/// Where the Secrets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Secrets {
    /// Made by kustomize from the env files written beside the manifests.
    Generated,
    /// Provided by the user: `<resource>-env` Secrets with the keys `publish` names.
    External,
}

/// The image the start-order init containers run (`nc -z` until the dependency answers).
pub const WAIT_IMAGE: &str = "busybox:1.36";

/// What a container asks for, so a scheduler can place it: stated, not measured.
const REQUESTS_WITH_DATA: (&str, &str) = ("250m", "512Mi");
const REQUESTS: (&str, &str) = ("100m", "64Mi");

/// The manifests, kustomization and env files of `stack`; `image` names a
/// project's image. With [`Secrets::External`], what each Secret must hold
/// goes to `expected` instead of an env file.
pub fn render(
    t: &Topology,
    stack: &Stack,
    image: &dyn Fn(&Instance) -> String,
    secrets: Secrets,
    expected: &mut Vec<String>,
) -> Files {
    let mut files = Files::new();
    let mut resources = Vec::new();
    let mut generators = Vec::new();
    for i in &stack.instances {
        let r = &i.resource;
        let spec = r.kind.spec();
        let (secret, plain) = super::split_secrets(stack, i);
        let secret_name = format!("{}-env", i.name);
        if !secret.is_empty() {
            match secrets {
                Secrets::Generated => {
                    let env_file = format!("{}.env", i.name);
                    files.insert(env_file.clone(), (super::env_file(&secret), true));
                    generators
                        .push(Node::map().with("name", Node::str(&secret_name)).with("envs", Node::strs([env_file])));
                }
                Secrets::External => {
                    let keys: Vec<&str> = secret.iter().map(|(k, _)| k.as_str()).collect();
                    expected.push(format!("Secret `{secret_name}` with the keys {}", keys.join(", ")));
                }
            }
        }
        let labels = labels(t, &i.name);
        let selector = Node::map()
            .with("app.kubernetes.io/name", Node::str(&i.name))
            .with("app.kubernetes.io/part-of", Node::str(&t.name));
        let is_project = spec.package(r).is_some();
        let data = spec.data_path();
        let ports: Vec<(&String, u16)> = i.ports.iter().map(|(name, b)| (name, b.host)).collect();

        let mut container =
            Node::map().with("name", Node::str(&i.name)).with("image", Node::str(super::image_of(i, image)));
        if !r.args.is_empty() {
            container = container.with("args", Node::strs(r.args.iter().cloned()));
        }
        if !secret.is_empty() {
            container = container.with(
                "envFrom",
                Node::List(vec![Node::map().with("secretRef", Node::map().with("name", Node::str(&secret_name)))]),
            );
        }
        if !plain.is_empty() {
            let env =
                plain.iter().map(|(k, v)| Node::map().with("name", Node::str(k)).with("value", Node::str(v))).collect();
            container = container.with("env", Node::List(env));
        }
        if !ports.is_empty() {
            let list = ports
                .iter()
                .map(|(name, port)| {
                    Node::map().with("name", Node::str(*name)).with("containerPort", Node::Int((*port).into()))
                })
                .collect();
            container = container.with("ports", Node::List(list));
        }
        if let Some(probe) = &r.health {
            if probe.start_period > Duration::ZERO {
                // Docker's start period: failures do not count until the first success.
                let tries = probe.start_period.as_secs_f64() / probe.interval.as_secs_f64().max(1.0);
                container = container.with("startupProbe", k8s_probe(i, probe, (tries.ceil() as i64).max(1)));
            }
            container = container.with("readinessProbe", k8s_probe(i, probe, probe.retries.into()));
        }
        if is_project && i.ports.contains_key("http") {
            let live = Node::map()
                .with("httpGet", Node::map().with("path", Node::str("/health/live")).with("port", Node::str("http")))
                .with("periodSeconds", Node::Int(10))
                .with("failureThreshold", Node::Int(3));
            container = container.with("livenessProbe", live);
        }
        let (cpu, memory) = if data.is_some() { REQUESTS_WITH_DATA } else { REQUESTS };
        container = container.with(
            "resources",
            Node::map().with("requests", Node::map().with("cpu", Node::str(cpu)).with("memory", Node::str(memory))),
        );
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        if let Some(path) = data {
            mounts.push(Node::map().with("name", Node::str("data")).with("mountPath", Node::str(path)));
            if !r.persistent {
                volumes.push(Node::map().with("name", Node::str("data")).with("emptyDir", Node::map()));
            }
        }
        // A pod's /dev/shm is the runtime's 64 MB unless a memory volume replaces it.
        if let Some(bytes) = spec.shm_bytes() {
            mounts.push(Node::map().with("name", Node::str("shm")).with("mountPath", Node::str("/dev/shm")));
            let memory = Node::map()
                .with("medium", Node::str("Memory"))
                .with("sizeLimit", Node::str(format!("{}Mi", bytes >> 20)));
            volumes.push(Node::map().with("name", Node::str("shm")).with("emptyDir", memory));
        }
        if !mounts.is_empty() {
            container = container.with("volumeMounts", Node::List(mounts));
        }

        let mut pod = Node::map();
        let waits: Vec<Node> = r.wait_for.iter().filter_map(|w| wait_container(stack, &w.name)).collect();
        if !waits.is_empty() {
            pod = pod.with("initContainers", Node::List(waits));
        }
        pod = pod
            .with("containers", Node::List(vec![container]))
            .with("terminationGracePeriodSeconds", Node::Int(r.shutdown.grace.as_secs().max(1) as i64));
        if !volumes.is_empty() {
            pod = pod.with("volumes", Node::List(volumes));
        }
        let template = Node::map().with("metadata", Node::map().with("labels", labels.clone())).with("spec", pod);

        let mut service_spec = Node::map();
        if data.is_some() {
            service_spec = service_spec.with("clusterIP", Node::str("None"));
        }
        service_spec = service_spec.with("selector", selector.clone()).with(
            "ports",
            Node::List(
                ports
                    .iter()
                    .map(|(name, port)| {
                        Node::map()
                            .with("name", Node::str(*name))
                            .with("port", Node::Int((*port).into()))
                            .with("targetPort", Node::str(*name))
                    })
                    .collect(),
            ),
        );
        let service = object("v1", "Service", &i.name, &labels).with("spec", service_spec);

        let workload = if data.is_some() {
            let mut spec = Node::map()
                .with("serviceName", Node::str(&i.name))
                .with("replicas", Node::Int(1))
                .with("selector", Node::map().with("matchLabels", selector))
                .with("template", template);
            if r.persistent {
                let claim = Node::map().with("metadata", Node::map().with("name", Node::str("data"))).with(
                    "spec",
                    Node::map()
                        .with("accessModes", Node::strs(["ReadWriteOnce"]))
                        .with("resources", Node::map().with("requests", Node::map().with("storage", Node::str("1Gi")))),
                );
                spec = spec.with("volumeClaimTemplates", Node::List(vec![claim]));
            }
            object("apps/v1", "StatefulSet", &i.name, &labels).with("spec", spec)
        } else {
            let spec = Node::map()
                .with("replicas", Node::Int(r.replicas.into()))
                .with("selector", Node::map().with("matchLabels", selector))
                .with("template", template);
            object("apps/v1", "Deployment", &i.name, &labels).with("spec", spec)
        };
        let name = format!("{}.yaml", i.name);
        let text = format!("{}---\n{}", service.document(&format!("`{}` of `{}`", i.name, t.name)), workload.body());
        files.insert(name.clone(), (text, false));
        resources.push(name);
    }
    let mut kustomization = Node::map()
        .with("apiVersion", Node::str("kustomize.config.k8s.io/v1beta1"))
        .with("kind", Node::str("Kustomization"))
        .with("resources", Node::strs(resources));
    if !generators.is_empty() {
        kustomization = kustomization
            .with("secretGenerator", Node::List(generators))
            // The manifests name the Secrets as they are; the env files change only with the passwords.
            .with("generatorOptions", Node::map().with("disableNameSuffixHash", Node::Bool(true)));
    }
    let mut header = format!(
        "`{}` for Kubernetes, written by `apphost publish --target kubernetes`.\n\
         Apply: kubectl apply -k .    Remove: kubectl delete -k .",
        t.name
    );
    if secrets == Secrets::Generated {
        header
            .push_str("\nThe *.env files hold the generated passwords (owner-only): keep them out of version control.");
    }
    files.insert("kustomization.yaml".into(), (kustomization.document(&super::with_notes(header, stack)), false));
    files
}

/// The `app.kubernetes.io/*` labels of one resource of `t`.
fn labels(t: &Topology, name: &str) -> Node {
    Node::map()
        .with("app.kubernetes.io/name", Node::str(name))
        .with("app.kubernetes.io/part-of", Node::str(&t.name))
        .with("app.kubernetes.io/managed-by", Node::str("apphost"))
}

fn object(api_version: &str, kind: &str, name: &str, labels: &Node) -> Node {
    Node::map()
        .with("apiVersion", Node::str(api_version))
        .with("kind", Node::str(kind))
        .with("metadata", Node::map().with("name", Node::str(name)).with("labels", labels.clone()))
}

/// A probe of apphost's as Kubernetes runs it, failing after `failures`.
fn k8s_probe(i: &Instance, probe: &Probe, failures: i64) -> Node {
    let port = |name: &str| i.ports.get(name).map(|b| b.host);
    let first_port = || i.ports.keys().next().cloned().unwrap_or_default();
    let exec = |command: &[String]| {
        ("exec", Node::map().with("command", Node::strs(crate::runtime::expand_ports(command, port))))
    };
    let how = match &probe.check {
        Check::Http { path, port } => {
            ("httpGet", Node::map().with("path", Node::str(path)).with("port", Node::str(port)))
        }
        Check::Exec { command } => exec(command),
        Check::PgIsReady { port: name } => exec(&i.pg_isready(name)),
        // An AMQP handshake has no Kubernetes probe: the closest is a TCP connect.
        Check::Tcp { port } | Check::Amqp { port } => ("tcpSocket", Node::map().with("port", Node::str(port))),
        Check::Log { .. } => ("tcpSocket", Node::map().with("port", Node::str(first_port()))),
    };
    Node::map()
        .with(how.0, how.1)
        .with("periodSeconds", Node::Int(probe.interval.as_secs().max(1) as i64))
        .with("timeoutSeconds", Node::Int(probe.timeout.as_secs().max(1) as i64))
        .with("failureThreshold", Node::Int(failures))
}

/// An init container that waits until `name` answers on its first port
/// (its Service resolves once it is ready, for a headless one).
fn wait_container(stack: &Stack, name: &str) -> Option<Node> {
    let target = stack.instances.iter().find(|i| i.resource.name == name)?;
    let port = target.ports.values().next()?.host;
    let script = format!("until nc -z {name} {port}; do echo waiting for {name}; sleep 1; done");
    Some(
        Node::map()
            .with("name", Node::str(format!("wait-for-{name}")))
            .with("image", Node::str(WAIT_IMAGE))
            .with("command", Node::strs(["sh".to_owned(), "-c".to_owned(), script]))
            .with(
                "resources",
                Node::map()
                    .with("requests", Node::map().with("cpu", Node::str("10m")).with("memory", Node::str("16Mi"))),
            ),
    )
}
