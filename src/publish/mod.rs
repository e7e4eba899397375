//! `apphost publish`: the app model of `apphost.yaml` onto engines that
//! already exist, as .NET Aspire's publishers do: a docker compose file
//! ([`compose`]). Each resource becomes one service reached at its own name
//! on the stack's network, on its container port, with the same environment
//! contract as under `apphost up` (`docs/contracts.md`) and the generated
//! passwords of `.apphost/secrets.json` in owner-only env files.
//!
//! The output is a function of the file and the passwords alone: the same
//! input gives byte-identical files.

pub mod compose;
pub mod images;
pub mod kubernetes;
mod yaml;

use std::{collections::BTreeMap, path::Path, sync::Arc};

use miette::NamedSource;

use crate::{
    kinds::EnvContext,
    plan::{Binding, Instance, RuntimeKind},
    topology::{Check, Diag, InvalidTopology, Resource, Topology},
};

/// The port a project listens on inside its container (`PORT`).
pub const PROJECT_PORT: u16 = 8080;

/// The image of a `project` resource: `<app>/<resource>:<tag>`.
pub fn project_image(app: &str, resource: &str, tag: &str) -> String {
    format!("{app}/{resource}:{tag}")
}

/// A published stack: one instance per resource (replicas are the engine's),
/// named as its resource, with its environment for that stack.
pub struct Stack {
    pub instances: Vec<Instance>,
    /// Something the target has no exact equivalent for, said once per resource.
    pub notes: Vec<String>,
}

/// The instances of `t` as published: each is reached at its resource's name
/// (`address`) on its container port, the ports `Binding::host` holds here.
/// `password` gives a resource's generated password.
pub fn stack(t: &Topology, password: &dyn Fn(&str) -> Option<String>) -> Result<Stack, Box<InvalidTopology>> {
    let problems: Vec<Diag> = t.resources.iter().filter_map(unmappable).collect();
    if !problems.is_empty() {
        let text = std::fs::read_to_string(&t.file).unwrap_or_default();
        let file = t.file.display().to_string();
        return Err(Box::new(InvalidTopology {
            source_code: NamedSource::new(&file, text).with_language("yaml"),
            file,
            problems,
        }));
    }
    let mut instances: Vec<Instance> = t
        .resources
        .iter()
        .map(|r| Instance {
            name: r.name.clone(),
            resource: Arc::new(r.clone()),
            replica: 0,
            runtime: RuntimeKind::Docker,
            ports: r
                .ports
                .iter()
                .map(|p| (p.name.clone(), Binding { host: container_port(r, p), target: Some(container_port(r, p)) }))
                .collect::<BTreeMap<_, _>>(),
            address: r.name.clone(),
            password: if r.kind.spec().has_password() { password(&r.name) } else { None },
            env: Vec::new(),
            holds: Default::default(),
        })
        .collect();
    let snapshot = instances.clone();
    let ctx = EnvContext { session: "", telemetry: &[], published: true };
    for instance in &mut instances {
        instance.env = crate::plan::inject(&snapshot, instance, &ctx);
    }
    let notes = t.resources.iter().filter_map(note).collect();
    Ok(Stack { instances, notes })
}

/// The port `p` of `r` inside its container: the target, or for a process
/// kind (a project) the one port it is told to listen on.
fn container_port(r: &Resource, p: &crate::topology::Port) -> u16 {
    if r.kind.spec().listens_on_host() { PROJECT_PORT } else { p.target.or(p.host).unwrap_or(PROJECT_PORT) }
}

/// Why `r` cannot be published, if it cannot: a program of this machine
/// (`executable`) has no image.
fn unmappable(r: &Resource) -> Option<Diag> {
    let spec = r.kind.spec();
    if r.image().is_some() || spec.package(r).is_some() {
        return None;
    }
    Some(
        Diag::new(
            format!("`{}` is an `{}`: a program of this machine, which has no image to publish", r.name, spec.name()),
            r.span,
            "cannot be published",
        )
        .help("give it an `image:` as a `container` resource, or make it a `project` of this workspace"),
    )
}

/// What the published stack does differently for `r`.
fn note(r: &Resource) -> Option<String> {
    match &r.health.as_ref()?.check {
        Check::Amqp { port } => Some(format!(
            "`{}`: its AMQP handshake probe has no compose or Kubernetes equivalent; the published check is a TCP connect to `{port}`",
            r.name
        )),
        Check::Log { .. } => Some(format!(
            "`{}`: a log-line probe has no compose or Kubernetes equivalent; the published check is a TCP connect to its first port",
            r.name
        )),
        _ => None,
    }
}

/// Creates the output folder `dir`, or checks that the one there can be
/// trusted with the env files' passwords: ours, not a link, not writable by
/// others (a folder another user can write could swap a file for a link).
pub fn output_dir(dir: &Path) -> miette::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => match crate::statedir::untrusted(&meta) {
            Some(why) => Err(miette::miette!(
                help = "publish into a new folder, or one of your own that only you can write to",
                "the output folder {} {why}; it would hold the stack's passwords",
                dir.display()
            )),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| miette::miette!("cannot create {}: {e}", dir.display()))
        }
        Err(e) => Err(miette::miette!("cannot read {}: {e}", dir.display())),
    }
}

/// The image `i` runs: a project's from `project` (its built image), any other its own or its kind's.
pub fn image_of(i: &Instance, project: &dyn Fn(&Instance) -> String) -> String {
    let r = &i.resource;
    if r.kind.spec().package(r).is_some() { project(i) } else { r.image().unwrap_or_default() }
}

/// Some of an instance's environment variables.
pub type Vars<'a> = Vec<&'a (String, String)>;

/// `i`'s environment split into what holds one of the stack's passwords (for
/// an owner-only env file or a Secret) and the rest.
pub fn split_secrets<'a>(stack: &Stack, i: &'a Instance) -> (Vars<'a>, Vars<'a>) {
    let passwords: Vec<&str> = stack.instances.iter().filter_map(|i| i.password.as_deref()).collect();
    i.env.iter().partition(|(_, v)| passwords.iter().any(|p| v.contains(p)))
}

/// An env file (`KEY=VALUE` lines) of `vars`, as compose and kustomize read one.
pub fn env_file(vars: &[&(String, String)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// `header` followed by the stack's notes, one a line.
pub fn with_notes(mut header: String, stack: &Stack) -> String {
    for note in &stack.notes {
        header.push('\n');
        header.push_str(note);
    }
    header
}

/// The files of a published stack: name → (contents, owner-only).
pub type Files = BTreeMap<String, (String, bool)>;

/// Writes `files` into `dir` (see [`output_dir`]), the owner-only ones with mode 0600 from the start.
pub fn write_files(dir: &Path, files: &Files) -> std::io::Result<()> {
    for (name, (contents, private)) in files {
        let path = dir.join(name);
        if *private {
            crate::statedir::write_private(&path, contents.as_bytes())?;
        } else {
            std::fs::write(path, contents)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
