//! The docker runtime: containers through the Docker Engine API (bollard).
//!
//! The engine comes from `DOCKER_HOST` or the local socket (a Podman socket
//! answers the same API). Every container, network and volume carries the
//! labels `apphost.app`, `apphost.session` and `apphost.owner` (the host and
//! state folder of the apphost that made it), and has a deterministic name
//! (`APP-RESOURCE`), so a later `up` or `down` finds what a killed apphost
//! left. Only what carries this state folder's owner label is ever removed:
//! a same-named app from another folder is refused, never touched. Ports are
//! bound to 127.0.0.1 only.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bollard::{
    Docker,
    exec::{CreateExecOptions, StartExecResults},
    models::{
        ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
        NetworkDisconnectRequest, NetworkingConfig, PortBinding, VolumeCreateRequest,
    },
    query_parameters::{
        BuildImageOptionsBuilder, ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
        CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder,
        ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
        LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptions,
        StatsOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use tokio::sync::watch;

use super::{Exit, Output, Running, Runtime, StartError, Usage, expand_ports};
use crate::{
    kinds::{Setup, Snapshot},
    logs::Stream,
    plan::{Instance, RuntimeKind},
};

pub const LABEL_APP: &str = "apphost.app";
pub const LABEL_RESOURCE: &str = "apphost.resource";
pub const LABEL_SESSION: &str = "apphost.session";
pub const LABEL_PERSISTENT: &str = "apphost.persistent";
pub const LABEL_OWNER: &str = "apphost.owner";
/// How long an image's set-up may take in its own container.
const SETUP_LIMIT: Duration = Duration::from_secs(120);
/// The most a set-up's folder may hold to be kept (PostgreSQL's: 40 MB).
const SETUP_MAX_BYTES: usize = 512 << 20;
/// On a volume or image that keeps a resource's set-up across `up`s (`down` keeps it too).
pub const LABEL_SETUP: &str = "apphost.setup";

/// The volume a container's set-up is kept in, and whether an earlier start made it.
struct KeptSetup {
    name: String,
    reused: bool,
}

/// Who owns a stack on the engine: this host and the state folder's path.
pub fn owner_of(state: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let path = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    format!("{}:{}", host.trim(), path.display())
}

/// Who made it, when that is not `owner`: another apphost's owner label, or
/// a note that it has none. Only what carries `owner` is ever touched. A
/// container without the label may still carry `apphost.app`, inherited from
/// an image's labels (a published stack run by compose from an older
/// `apphost build-images`), and is someone else's.
fn foreign_to(labels: Option<&HashMap<String, String>>, owner: &str) -> Option<String> {
    match labels.and_then(|l| l.get(LABEL_OWNER)) {
        Some(o) if o == owner => None,
        Some(o) => Some(o.clone()),
        None => Some(format!("not made by an apphost: no {LABEL_OWNER} label")),
    }
}

/// Another apphost's owner label on `labels`, when there is one and it is not `owner`.
fn other_apphost(labels: Option<&HashMap<String, String>>, owner: &str) -> Option<String> {
    labels.and_then(|l| l.get(LABEL_OWNER)).filter(|o| *o != owner).cloned()
}

/// Another apphost's stack of the same app name on this engine: its owner
/// (host:state folder) and what of it is there. `None` when there is none.
pub async fn foreign_stack(docker: &Docker, app: &str, owner: &str) -> Option<(String, Vec<String>)> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await
        .unwrap_or_default();
    let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::new().build())).await.unwrap_or_default();
    let mut other = None;
    let mut what = Vec::new();
    for c in containers {
        // One without an owner label is no apphost's stack (see `foreign_to`); it is
        // never touched, and only refused by name when it holds the one `start` would take.
        if let Some(o) = other_apphost(c.labels.as_ref(), owner) {
            what.push(format!(
                "container {}",
                c.names.and_then(|n| n.first().cloned()).unwrap_or_default().trim_start_matches('/')
            ));
            other.get_or_insert(o);
        }
    }
    // The network is named after the app, whoever labelled it.
    for n in networks.into_iter().filter(|n| n.name.as_deref() == Some(app)) {
        let labels = n.labels.as_ref();
        let ours = labels.and_then(|l| l.get(LABEL_APP)).is_some_and(|a| a == app);
        match other_apphost(labels, owner) {
            Some(o) => {
                what.push(format!("network {app}"));
                other.get_or_insert(o);
            }
            None if !ours => {
                what.push(format!("network {app} (not made by apphost)"));
                other.get_or_insert_with(|| "something other than apphost".to_owned());
            }
            None => {}
        }
    }
    other.map(|o| (o, what))
}

/// Where the engine is, for messages.
pub fn engine_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects and pings; `Err` says why no engine answers.
pub async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot reach the Docker engine at {}: {e}", engine_address()))?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        // Older engines (Debian's 20.10 speaks API 1.41) refuse newer clients: agree on a version.
        Ok(Ok(_)) => match tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(docker),
            Ok(Err(e)) => {
                Err(format!("the Docker engine at {} answers, but no API version fits: {e}", engine_address()))
            }
            Err(_) => Err(format!("the Docker engine at {} did not answer within 3s", engine_address())),
        },
        Ok(Err(e)) => Err(format!("the Docker engine at {} does not answer: {e}", engine_address())),
        Err(_) => Err(format!("the Docker engine at {} did not answer within 3s", engine_address())),
    }
}

pub struct DockerRuntime {
    docker: Docker,
    app: String,
    session: String,
    owner: String,
    /// First starts still to come of kinds that start first; the other
    /// containers wait for none to be left (or [`FIRST_WAIT`]).
    first: watch::Sender<usize>,
}

/// The longest a container waits for the ones that start first.
const FIRST_WAIT: Duration = Duration::from_secs(3);

impl DockerRuntime {
    /// For removing what a session of `owner` left; creates nothing.
    pub fn reaper(docker: Docker, app: &str, owner: &str) -> Self {
        Self {
            docker,
            app: app.to_owned(),
            session: "reaper".to_owned(),
            owner: owner.to_owned(),
            first: watch::Sender::new(0),
        }
    }

    /// Creates the app's network if it is not there yet.
    /// `first` counts the instances it will start whose kind starts first.
    pub async fn new(docker: Docker, app: &str, session: &str, owner: &str, first: usize) -> Result<Self, StartError> {
        let this = Self {
            docker,
            app: app.to_owned(),
            session: session.to_owned(),
            owner: owner.to_owned(),
            first: watch::Sender::new(first),
        };
        let filters = HashMap::from([("name", vec![app])]);
        let existing = this
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| StartError::new(format!("cannot list Docker networks: {e}")))?;
        if !existing.iter().any(|n| n.name.as_deref() == Some(app)) {
            this.docker
                .create_network(NetworkCreateRequest {
                    name: app.to_owned(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([
                        (LABEL_APP.to_owned(), app.to_owned()),
                        (LABEL_OWNER.to_owned(), this.owner.clone()),
                    ])),
                    ..Default::default()
                })
                .await
                .map_err(|e| StartError::new(format!("cannot create the Docker network `{app}`: {e}")))?;
        }
        Ok(this)
    }

    pub fn container_name(&self, instance: &str) -> String {
        format!("{}-{instance}", self.app)
    }

    /// The image's id (its name where the engine gives none), pulled first if it is not here.
    async fn ensure_image(&self, image: &str, out: &Output) -> Result<String, StartError> {
        if let Ok(found) = self.docker.inspect_image(image).await {
            return Ok(found.id.unwrap_or_else(|| image.into()));
        }
        out.system(&format!("pulling image {image}"));
        pull(&self.docker, image, |line| out.system(line)).await.map_err(|e| {
            StartError::new(format!("image `{image}` is not on this machine and cannot be pulled: {e}"))
                .help("build it locally (`.ci/images` builds postgres:15 and apache/activemq-artemis:2.40.0), set `image:` to one you have, or use `--runtime process`")
        })?;
        let pulled = self.docker.inspect_image(image).await.ok().and_then(|i| i.id);
        Ok(pulled.unwrap_or_else(|| image.into()))
    }

    /// The volume that keeps `instance`'s set-up: named after the image and
    /// the set-up's inputs, so that a new password or image makes a new one;
    /// this resource's older ones are removed.
    async fn setup_volume(
        &self,
        container: &str,
        instance: &Instance,
        image_id: &str,
        setup: &Setup,
    ) -> Result<KeptSetup, StartError> {
        let name = format!("{container}-setup-{}", setup_digest(image_id, &instance.env, setup.inputs));
        let filters = self.setup_filter(instance);
        let listed = self.docker.list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build())).await;
        let mut reused = false;
        for v in listed.ok().and_then(|l| l.volumes).unwrap_or_default() {
            if foreign_to(Some(&v.labels), &self.owner).is_some() {
                continue;
            }
            if v.name == name {
                reused = true;
            } else {
                let _ = self.docker.remove_volume(&v.name, None::<RemoveVolumeOptions>).await;
            }
        }
        if !reused {
            self.create_setup_volume(&name, instance).await?;
        }
        Ok(KeptSetup { name, reused })
    }

    /// This resource's kept set-ups, volumes or images.
    fn setup_filter(&self, instance: &Instance) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([(
            "label",
            vec![
                format!("{LABEL_APP}={}", self.app),
                format!("{LABEL_RESOURCE}={}", instance.name),
                LABEL_SETUP.into(),
            ],
        )])
    }

    /// The image that keeps `instance`'s set-up (named after the base image
    /// and the set-up's inputs; this resource's older ones are removed),
    /// made now if there is none. `None` when it cannot be made: the
    /// container then sets itself up from the base image, as without.
    async fn setup_image(
        &self,
        instance: &Instance,
        image: &str,
        image_id: &str,
        snapshot: &Snapshot,
        env: &[String],
        out: &Output,
    ) -> Option<String> {
        let repo = format!("apphost-setup/{}", self.container_name(&instance.name));
        let tag = setup_digest(image_id, &instance.env, snapshot.inputs);
        let name = format!("{repo}:{tag}");
        let filters = self.setup_filter(instance);
        let listed = self.docker.list_images(Some(ListImagesOptionsBuilder::new().filters(&filters).build())).await;
        let mut found = false;
        for i in listed.unwrap_or_default() {
            if foreign_to(Some(&i.labels), &self.owner).is_some() {
                continue;
            }
            if i.repo_tags.contains(&name) {
                found = true;
            } else {
                let _ = self
                    .docker
                    .remove_image(&i.id, Some(RemoveImageOptionsBuilder::new().force(true).build()), None)
                    .await;
            }
        }
        if found {
            out.system(&format!("reusing the set-up of an earlier start (image `{name}`)"));
            return Some(name);
        }
        out.system(&format!("its first start sets it up, kept in image `{name}` for the next"));
        match self.make_setup_image(instance, image, &repo, &tag, snapshot, env).await {
            Ok(()) => Some(name),
            Err(e) => {
                out.system(&format!("cannot keep its set-up ({e}): it sets itself up this time"));
                None
            }
        }
    }

    /// Runs `image`'s set-up in a container of its own (no network), stops
    /// it cleanly once it prints the set-up's `done` lines, and copies it
    /// into an image `repo:tag` built on `image` with the folder it filled.
    /// Built, not committed: a commit keeps the container's variables (the
    /// password a set-up reads) in the image's metadata; a build keeps the base's.
    async fn make_setup_image(
        &self,
        instance: &Instance,
        image: &str,
        repo: &str,
        tag: &str,
        snapshot: &Snapshot,
        env: &[String],
    ) -> Result<(), String> {
        let stop_signal = instance.resource.kind.spec().stop_signal();
        let name = format!("{}-setup", self.container_name(&instance.name));
        let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        let _ = self.docker.remove_container(&name, Some(remove.clone())).await;
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), self.app.clone()),
            (LABEL_RESOURCE.to_owned(), instance.name.clone()),
            (LABEL_SESSION.to_owned(), self.session.clone()),
            (LABEL_OWNER.to_owned(), self.owner.clone()),
            (LABEL_SETUP.to_owned(), "true".to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env.to_vec()),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig { network_mode: Some("none".into()), ..Default::default() }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let made = async {
            let created = self.docker.create_container(Some(options), body).await.map_err(|e| e.to_string())?;
            self.docker.start_container(&created.id, None).await.map_err(|e| e.to_string())?;
            let follow = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
            let mut logs = self.docker.logs(&created.id, Some(follow));
            let done = tokio::time::timeout(SETUP_LIMIT, async {
                let (mut text, mut next) = (String::new(), 0);
                while let Some(Ok(chunk)) = logs.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    while let Some(line) = snapshot.done.get(next) {
                        let Some(at) = text.find(line) else { break };
                        text.drain(..at + line.len());
                        next += 1;
                    }
                    if next == snapshot.done.len() {
                        return true;
                    }
                    // Bounded: only what may still hold the start of the line awaited.
                    let keep = text.len().saturating_sub(4096);
                    let keep = (keep..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
                    text.drain(..keep);
                }
                false
            })
            .await;
            if done != Ok(true) {
                return Err(format!("its set-up did not print `{}`", snapshot.done.join("` then `")));
            }
            let stop = StopContainerOptionsBuilder::new().signal(signal_name(stop_signal)).t(10).build();
            self.docker.stop_container(&created.id, Some(stop)).await.map_err(|e| e.to_string())?;
            let folder = env
                .iter()
                .find_map(|v| v.strip_prefix(snapshot.folder.0).and_then(|v| v.strip_prefix('=')))
                .ok_or_else(|| format!("`{}` is not set", snapshot.folder.0))?;
            let mut data = Vec::new();
            let options = DownloadFromContainerOptionsBuilder::new().path(folder).build();
            let mut download = self.docker.download_from_container(&created.id, Some(options));
            while let Some(chunk) = download.next().await {
                data.extend_from_slice(&chunk.map_err(|e| format!("copying {folder} out: {e}"))?);
                if data.len() > SETUP_MAX_BYTES {
                    return Err(format!("{folder} is over {} MiB after the set-up", SETUP_MAX_BYTES >> 20));
                }
            }
            let context = setup_context(image, folder, snapshot.folder.1, &data).map_err(|e| e.to_string())?;
            drop(data);
            let options = BuildImageOptionsBuilder::default()
                .dockerfile("Dockerfile")
                .t(&format!("{repo}:{tag}"))
                .labels(&labels)
                .rm(true)
                .forcerm(true)
                .build();
            let mut build = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
            while let Some(step) = build.next().await {
                let info = step.map_err(|e| format!("building the image: {e}"))?;
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("building the image: {detail}"));
                }
            }
            Ok(())
        }
        .await;
        let _ = self.docker.remove_container(&name, Some(remove)).await;
        made
    }

    async fn create_setup_volume(&self, name: &str, instance: &Instance) -> Result<(), StartError> {
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), self.app.clone()),
            (LABEL_RESOURCE.to_owned(), instance.name.clone()),
            (LABEL_OWNER.to_owned(), self.owner.clone()),
            (LABEL_SETUP.to_owned(), "true".to_owned()),
        ]);
        let request = VolumeCreateRequest { name: Some(name.to_owned()), labels: Some(labels), ..Default::default() };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| StartError::new(format!("cannot create the volume `{name}`: {e}")))
    }

    /// Whether every file of a finished `setup` is in created container `id`,
    /// and whether its warm file is. Asked all at once: one at a time they
    /// held the broker's start by half a second.
    async fn complete(&self, id: &str, setup: &Setup) -> (bool, bool) {
        let ask = |file: &'static str| async move {
            let path = format!("{}/{file}", setup.path);
            let options = ContainerArchiveInfoOptionsBuilder::new().path(&path).build();
            self.docker.get_container_archive_info(id, Some(options)).await.is_ok()
        };
        let warm = async {
            match &setup.warm {
                Some(w) => ask(w.file).await,
                None => false,
            }
        };
        let (found, warm) = futures::join!(futures::future::join_all(setup.complete.iter().map(|f| ask(f))), warm);
        (found.into_iter().all(|f| f), warm)
    }

    /// Removes this app's leftover containers (stopping, not removing,
    /// persistent ones) and its network. Returns the containers touched.
    pub async fn reap(&self, include_persistent: bool) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={}", self.app)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers = self.docker.list_containers(Some(options)).await.unwrap_or_default();
        let mut touched = Vec::new();
        for c in containers {
            if foreign_to(c.labels.as_ref(), &self.owner).is_some() {
                continue;
            }
            let Some(id) = c.id else { continue };
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_else(|| id.clone());
            let persistent = c.labels.as_ref().and_then(|l| l.get(LABEL_PERSISTENT)).is_some_and(|v| v == "true");
            let name = name.trim_start_matches('/').to_owned();
            if persistent && !include_persistent {
                let _ = self.docker.stop_container(&id, Some(StopContainerOptionsBuilder::new().t(10).build())).await;
            } else {
                let _ = self
                    .docker
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                    .await;
                // Its data volume, named after it (see `start`): ours, as the container was.
                let data = format!("{name}-data");
                if persistent && self.docker.remove_volume(&data, None::<RemoveVolumeOptions>).await.is_ok() {
                    touched.push(format!("{name} and its volume {data}"));
                    continue;
                }
            }
            touched.push(name);
        }
        let network = self.docker.inspect_network(&self.app, None).await.ok();
        if network.is_some_and(|n| {
            let labels = n.labels.as_ref();
            labels.and_then(|l| l.get(LABEL_APP)) == Some(&self.app) && foreign_to(labels, &self.owner).is_none()
        }) {
            let _ = self.docker.remove_network(&self.app).await;
        }
        touched
    }

    /// This app's kept set-ups owned here, volumes and images labelled
    /// `apphost.setup` (`down --volumes`). Returns what went, as
    /// `volume <name>` or `image <name>`.
    pub async fn remove_setups(&self) -> Vec<String> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_APP}={}", self.app), LABEL_SETUP.into(), format!("{LABEL_OWNER}={}", self.owner)],
        )]);
        let mut removed = Vec::new();
        let volumes = self.docker.list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build())).await;
        for v in volumes.ok().and_then(|l| l.volumes).unwrap_or_default() {
            // The filter asked for the owner; checked again, as everywhere.
            if foreign_to(Some(&v.labels), &self.owner).is_none()
                && self.docker.remove_volume(&v.name, None::<RemoveVolumeOptions>).await.is_ok()
            {
                removed.push(format!("volume {}", v.name));
            }
        }
        let images = self.docker.list_images(Some(ListImagesOptionsBuilder::new().filters(&filters).build())).await;
        for i in images.unwrap_or_default() {
            if foreign_to(Some(&i.labels), &self.owner).is_some() {
                continue;
            }
            let options = RemoveImageOptionsBuilder::new().force(true).build();
            if self.docker.remove_image(&i.id, Some(options), None).await.is_ok() {
                removed.push(format!("image {}", i.repo_tags.first().unwrap_or(&i.id)));
            }
        }
        removed
    }
}

/// Pulls `image`, telling each new status line to `progress`; `Err` is the first error.
pub async fn pull(docker: &Docker, image: &str, mut progress: impl FnMut(&str)) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut pull = docker.create_image(Some(options), None, None);
    let mut last = String::new();
    while let Some(step) = pull.next().await {
        let line = step.map_err(|e| e.to_string())?.status.unwrap_or_default();
        // Per-layer progress bars (`[==>   ]`) would flood the log.
        if !line.is_empty() && line != last && !line.contains('[') {
            progress(&line);
            last = line;
        }
    }
    Ok(())
}

/// The containers and networks of app `app` still on the engine.
pub async fn leftovers(docker: &Docker, app: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await
        .unwrap_or_default();
    let networks = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
        .await
        .unwrap_or_default();
    containers
        .into_iter()
        .map(|c| {
            format!(
                "container {}",
                c.names.and_then(|n| n.first().cloned()).unwrap_or_default().trim_start_matches('/')
            )
        })
        .chain(networks.into_iter().map(|n| format!("network {}", n.name.unwrap_or_default())))
        .collect()
}

/// The name Docker (and compose) give `signal`.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGKILL => "SIGKILL",
        _ => "SIGTERM",
    }
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn start<'a>(&'a self, instance: &'a Instance, out: Output) -> BoxFuture<'a, Result<Arc<dyn Running>, StartError>> {
        async move {
            let r = &instance.resource;
            let spec = r.kind.spec();
            // Counted down when this start ends, whichever way it ends.
            let _first = spec.starts_first().then(|| FirstStart(&self.first));
            let image = r.image().unwrap_or_default();
            let image_id = self.ensure_image(&image, &out).await?;
            let name = self.container_name(&instance.name);
            // Started before in this session (stopped on request, or crashed): start
            // the same container again, so its data survives a restart.
            if let Ok(existing) = self.docker.inspect_container(&name, None).await {
                let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
                if let Some(other) = foreign_to(labels, &self.owner) {
                    let help = if other_apphost(labels, &self.owner).is_some() {
                        "stop that stack with `apphost down` in its folder, or give this app another `name:`".to_owned()
                    } else {
                        format!(
                            "remove it (`docker rm -f {name}`) if it is not needed, or give this app another `name:`"
                        )
                    };
                    return Err(
                        StartError::new(format!("container `{name}` is not this apphost's ({other})")).help(help)
                    );
                }
                let session = labels.and_then(|l| l.get(LABEL_SESSION));
                if session == Some(&self.session)
                    && let Some(id) = existing.id
                {
                    return self.attach(instance, id, out).await;
                }
                // A leftover of an earlier run: replace it (a persistent resource
                // keeps its data in its volume).
                let _ = self
                    .docker
                    .remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                    .await;
            }

            let mut port_bindings = HashMap::new();
            let mut exposed = Vec::new();
            for binding in instance.ports.values() {
                let Some(target) = binding.target else { continue };
                exposed.push(format!("{target}/tcp"));
                port_bindings.insert(
                    format!("{target}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(binding.host.to_string()),
                    }]),
                );
            }
            let mut binds = match (r.persistent, spec.data_path()) {
                (true, Some(path)) => vec![format!("{name}-data:{path}")],
                _ => Vec::new(),
            };
            let setup = spec.reusable_setup().filter(|_| !r.persistent);
            let mut kept = None;
            if let Some(setup) = &setup {
                let volume = self.setup_volume(&name, instance, &image_id, setup).await?;
                binds.push(format!("{}:{}", volume.name, setup.path));
                kept = Some(volume);
            }
            // A reused set-up is started as if its warm file were there (the
            // common case); the check below makes the container again if not.
            let warm_expected = kept.as_ref().is_some_and(|v| v.reused);
            let mut run_image = image.clone();
            let mut instance_env = instance.env.clone();
            if let Some(snapshot) = spec.snapshot_setup().filter(|_| !r.persistent) {
                for (k, v) in snapshot.env {
                    if !instance_env.iter().any(|(name, _)| name == k) {
                        instance_env.push(((*k).to_owned(), (*v).to_owned()));
                    }
                }
                let env = setup_env(&instance_env, None, false);
                if let Some(kept) = self.setup_image(instance, &image, &image_id, &snapshot, &env, &out).await {
                    run_image = kept;
                }
            }
            let labels = HashMap::from([
                (LABEL_APP.to_owned(), self.app.clone()),
                (LABEL_RESOURCE.to_owned(), instance.name.clone()),
                (LABEL_SESSION.to_owned(), self.session.clone()),
                (LABEL_PERSISTENT.to_owned(), r.persistent.to_string()),
                (LABEL_OWNER.to_owned(), self.owner.clone()),
            ]);
            let mut body = ContainerCreateBody {
                image: Some(run_image.clone()),
                env: Some(setup_env(&instance_env, setup.as_ref(), warm_expected)),
                cmd: (!r.args.is_empty()).then(|| r.args.clone()),
                exposed_ports: Some(exposed),
                labels: Some(labels),
                stop_signal: Some(signal_name(r.shutdown.signal).into()),
                stop_timeout: Some(r.shutdown.grace.as_secs() as i64),
                host_config: Some(HostConfig {
                    port_bindings: Some(port_bindings),
                    binds: (!binds.is_empty()).then_some(binds),
                    shm_size: spec.shm_bytes().map(|b| b as i64),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        self.app.clone(),
                        EndpointSettings { aliases: Some(vec![instance.name.clone()]), ..Default::default() },
                    )])),
                }),
                ..Default::default()
            };
            let create = |body: ContainerCreateBody| async {
                self.docker
                    .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
                    .await
                    .map_err(|e| StartError::new(format!("cannot create container `{name}` from `{run_image}`: {e}")))
            };
            if !spec.starts_first() {
                let mut first = self.first.subscribe();
                let _ = tokio::time::timeout(FIRST_WAIT, first.wait_for(|left| *left == 0)).await;
            }
            let mut created = create(body.clone()).await?;
            if let (Some(setup), Some(volume)) = (&setup, &kept) {
                let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
                let (complete, warm) =
                    if volume.reused { self.complete(&created.id, setup).await } else { (false, false) };
                // A kept set-up that misses a file was cut short (a kill during
                // the first start): made again, rather than a broker that fails.
                if volume.reused && !complete {
                    out.system(&format!("the set-up kept in volume `{}` is incomplete: making it again", volume.name));
                    let _ = self.docker.remove_container(&created.id, Some(remove)).await;
                    let _ = self.docker.remove_volume(&volume.name, None::<RemoveVolumeOptions>).await;
                    self.create_setup_volume(&volume.name, instance).await?;
                    body.env = Some(setup_env(&instance_env, Some(setup), false));
                    created = create(body).await?;
                } else if volume.reused {
                    if warm_expected && !warm && setup.warm.is_some() {
                        // The last stop was not clean: this one writes the file.
                        let _ = self.docker.remove_container(&created.id, Some(remove)).await;
                        body.env = Some(setup_env(&instance_env, Some(setup), false));
                        created = create(body).await?;
                    }
                    let how = if warm { ", warm" } else { "" };
                    out.system(&format!("reusing the set-up of an earlier start (volume `{}`{how})", volume.name));
                } else {
                    out.system(&format!(
                        "its first start sets it up; volume `{}` keeps that for the next",
                        volume.name
                    ));
                }
            }
            self.attach(instance, created.id, out).await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, ()> {
        async move {
            let name = self.container_name(&instance.name);
            if instance.resource.persistent {
                let _ = self.docker.stop_container(&name, Some(StopContainerOptionsBuilder::new().t(10).build())).await;
            } else {
                let _ = self
                    .docker
                    .remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                    .await;
            }
        }
        .boxed()
    }
}

impl DockerRuntime {
    /// Starts container `id` (if it is not running) and follows it.
    async fn attach(&self, instance: &Instance, id: String, out: Output) -> Result<Arc<dyn Running>, StartError> {
        let name = self.container_name(&instance.name);
        instance.release_ports();
        self.docker
            .start_container(&id, None)
            .await
            .or_else(|e| match e {
                // 304: already running.
                bollard::errors::Error::DockerResponseServerError { status_code: 304, .. } => Ok(()),
                e => Err(e),
            })
            .map_err(|e| start_error(&name, &e.to_string()))?;
        stream_logs(self.docker.clone(), id.clone(), out);
        let (tx, rx) = watch::channel(None);
        let docker = self.docker.clone();
        let waited = id.clone();
        tokio::spawn(async move {
            let mut wait = docker.wait_container(&waited, None);
            let exit = match wait.next().await {
                Some(Ok(r)) => Exit::Code(r.status_code as i32),
                // bollard reports a non-zero exit as an error carrying the code.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Exit::Code(code as i32),
                _ => Exit::Unknown,
            };
            let _ = tx.send(Some(exit));
        });
        let ports = instance.ports.iter().map(|(n, b)| (n.clone(), b.target.unwrap_or(b.host))).collect();
        Ok(Arc::new(Container {
            docker: self.docker.clone(),
            id,
            exit: rx,
            ports,
            network: self.app.clone(),
            alias: instance.name.clone(),
        }))
    }
}

/// The build context of a kept set-up: a Dockerfile that copies `folder`
/// (`data`, the engine's tar of it) onto `image`, owned by `user`.
fn setup_context(image: &str, folder: &str, user: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let base = folder.trim_end_matches('/').rsplit('/').next().unwrap_or("data").to_owned();
    let dockerfile = format!("FROM {image}\nCOPY --chown={user}:{user} {base} {folder}\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        tar.append_data(&mut header, path, &mut entry)?;
    }
    tar.into_inner()
}

/// Counts a first start down when dropped.
struct FirstStart<'a>(&'a watch::Sender<usize>);

impl Drop for FirstStart<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|left| *left = left.saturating_sub(1));
    }
}

/// A set-up's name: a digest of the base image's id and the values in `env` of `inputs`.
fn setup_digest(image_id: &str, env: &[(String, String)], inputs: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(image_id.as_bytes());
    for var in inputs {
        let value = env.iter().find(|(k, _)| k == var).map(|(_, v)| v.as_str());
        hash.update(format!("\0{var}={value:?}").as_bytes());
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A container's variables: `env`, with a kept `setup`'s additions (its
/// data kept apart, and its warm file used, if `warm`, or else made).
fn setup_env(env: &[(String, String)], setup: Option<&Setup>, warm: bool) -> Vec<String> {
    let mut env = env.to_vec();
    let Some(setup) = setup else {
        return env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    };
    let warm = setup.warm.as_ref().map(|w| (w.var, if warm { w.use_it } else { w.make_it }));
    for (var, extra) in setup.data_apart.iter().copied().chain(warm) {
        match env.iter_mut().find(|(k, _)| k == var) {
            Some((_, v)) => *v = format!("{v} {extra}"),
            None => env.push((var.to_owned(), extra.to_owned())),
        }
    }
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Why container `name` did not start, with a hint only where it fits the error.
fn start_error(name: &str, error: &str) -> StartError {
    let err = StartError::new(format!("cannot start container `{name}`: {error}"));
    if error.contains("port is already allocated") || error.contains("address already in use") {
        err.help("a port is taken; `apphost doctor` checks the fixed ports")
    } else if error.contains("permission denied") || error.contains("operation not permitted") {
        err.help("the engine may not be allowed to run containers here (a rootless or nested engine); try `--runtime process`")
    } else {
        err
    }
}

/// Follows a container's output, splitting the engine's frames into lines.
fn stream_logs(docker: Docker, id: String, out: Output) {
    tokio::spawn(async move {
        let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut logs = docker.logs(&id, Some(options));
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(Ok(chunk)) = logs.next().await {
            let (bytes, stream) = match chunk {
                bollard::container::LogOutput::StdErr { message } => (message, Stream::Stderr),
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => (message, Stream::Stdout),
                bollard::container::LogOutput::StdIn { .. } => continue,
            };
            let buf = if stream == Stream::Stderr { &mut stderr } else { &mut stdout };
            buf.extend_from_slice(&bytes);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                out.line(stream, &String::from_utf8_lossy(&line));
            }
        }
        for (buf, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            if !buf.is_empty() {
                out.line(stream, &String::from_utf8_lossy(&buf));
            }
        }
    });
}

struct Container {
    docker: Docker,
    id: String,
    exit: watch::Receiver<Option<Exit>>,
    /// Port name → port inside the container, for health commands.
    ports: HashMap<String, u16>,
    /// The app network, and the container's name on it.
    network: String,
    alias: String,
}

impl Running for Container {
    fn exited(&self) -> BoxFuture<'_, Exit> {
        super::wait_exit(&self.exit)
    }

    fn stop(&self, signal: i32, grace: Duration) -> BoxFuture<'_, ()> {
        async move {
            let _ = self.docker.unpause_container(&self.id).await;
            let options =
                StopContainerOptionsBuilder::new().signal(signal_name(signal)).t(grace.as_secs().max(1) as i32).build();
            let _ = self.docker.stop_container(&self.id, Some(options)).await;
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), self.exited()).await;
        }
        .boxed()
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        async move {
            let _ = self
                .docker
                .kill_container(&self.id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.exited()).await;
        }
        .boxed()
    }

    fn exec(&self, command: Vec<String>, timeout: Duration) -> BoxFuture<'_, Result<i32, String>> {
        async move {
            let command = expand_ports(&command, |name| self.ports.get(name).copied());
            let run = async {
                let exec = self
                    .docker
                    .create_exec(
                        &self.id,
                        CreateExecOptions {
                            cmd: Some(command),
                            attach_stdout: Some(true),
                            attach_stderr: Some(true),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if let StartExecResults::Attached { mut output, .. } =
                    self.docker.start_exec(&exec.id, None).await.map_err(|e| e.to_string())?
                {
                    while output.next().await.is_some() {}
                }
                let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| e.to_string())?;
                Ok(inspect.exit_code.unwrap_or(-1) as i32)
            };
            tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
        }
        .boxed()
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.docker.pause_container(&self.id).await.map_err(|e| e.to_string()) }.boxed()
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.docker.unpause_container(&self.id).await.map_err(|e| e.to_string()) }.boxed()
    }

    /// Off the app network, its published ports lead nowhere: a partition
    /// from everything, the host's processes included.
    fn partition(&self, cut: bool) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let result = if cut {
                self.docker
                    .disconnect_network(
                        &self.network,
                        NetworkDisconnectRequest { container: self.id.clone(), force: Some(true) },
                    )
                    .await
            } else {
                let endpoint = EndpointSettings { aliases: Some(vec![self.alias.clone()]), ..Default::default() };
                self.docker
                    .connect_network(
                        &self.network,
                        NetworkConnectRequest { container: self.id.clone(), endpoint_config: Some(endpoint) },
                    )
                    .await
            };
            result.map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn id(&self) -> String {
        format!("container {}", &self.id[..self.id.len().min(12)])
    }

    /// The container's cgroup counters when the engine runs on this machine
    /// (read at once), else one sample from the engine's stats (one-shot, yet
    /// up to a second here); memory as `docker stats` counts it, page cache
    /// left out.
    fn usage(&self) -> BoxFuture<'_, Option<Usage>> {
        async move {
            if let Some(usage) = cgroup_usage(std::path::Path::new("/sys/fs/cgroup"), &self.id) {
                return Some(usage);
            }
            let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
            let stats = self.docker.stats(&self.id, Some(options)).next().await?.ok()?;
            let cpu = stats.cpu_stats?.cpu_usage?.total_usage? as f64 / 1e9;
            let memory = stats.memory_stats?;
            let cache = memory
                .stats
                .as_ref()
                .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).copied())
                .unwrap_or(0);
            Some(Usage { cpu_seconds: cpu, memory_bytes: memory.usage?.saturating_sub(cache) })
        }
        .boxed()
    }
}

/// A container's CPU and memory from its cgroup under `root`, as the engine's
/// stats compute them, where the engine put it: cgroup v2 or v1, the
/// `cgroupfs` or the `systemd` driver. `None` when none is there (a remote
/// engine, another layout). A container id is 64 hex digits, so a folder of
/// that name is that container's.
fn cgroup_usage(root: &std::path::Path, id: &str) -> Option<Usage> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).ok();
    let field = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
    };
    for group in [format!("docker/{id}"), format!("system.slice/docker-{id}.scope")] {
        // v2: one tree.
        let v2 = root.join(&group);
        if let (Some(cpu), Some(current), Some(stat)) =
            (read(v2.join("cpu.stat")), read(v2.join("memory.current")), read(v2.join("memory.stat")))
        {
            let cpu = field(&cpu, "usage_usec")? as f64 / 1e6;
            let memory = current.trim().parse::<u64>().ok()?.saturating_sub(field(&stat, "inactive_file").unwrap_or(0));
            return Some(Usage { cpu_seconds: cpu, memory_bytes: memory });
        }
        // v1: a tree per controller.
        let (cpu, memory) = (root.join("cpuacct").join(&group), root.join("memory").join(&group));
        if let (Some(cpu), Some(usage), Some(stat)) = (
            read(cpu.join("cpuacct.usage")),
            read(memory.join("memory.usage_in_bytes")),
            read(memory.join("memory.stat")),
        ) {
            let cpu = cpu.trim().parse::<u64>().ok()? as f64 / 1e9;
            let memory =
                usage.trim().parse::<u64>().ok()?.saturating_sub(field(&stat, "total_inactive_file").unwrap_or(0));
            return Some(Usage { cpu_seconds: cpu, memory_bytes: memory });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup tree with these files (path under the root, contents).
    fn cgroups(files: &[(String, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn a_containers_usage_is_read_from_its_cgroup_in_each_layout() {
        let id = "ab".repeat(32);
        let group = format!("system.slice/docker-{id}.scope");
        let v2 = cgroups(&[
            (format!("{group}/cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\n"),
            (format!("{group}/memory.current"), "1000000\n"),
            (format!("{group}/memory.stat"), "anon 600000\ninactive_file 300000\n"),
        ]);
        let usage = cgroup_usage(v2.path(), &id).unwrap();
        assert_eq!((usage.cpu_seconds, usage.memory_bytes), (2.5, 700_000));

        let v1 = cgroups(&[
            (format!("cpuacct/docker/{id}/cpuacct.usage"), "1500000000\n"),
            (format!("memory/docker/{id}/memory.usage_in_bytes"), "5000\n"),
            (format!("memory/docker/{id}/memory.stat"), "inactive_file 9\ntotal_inactive_file 1000\n"),
        ]);
        let usage = cgroup_usage(v1.path(), &id).unwrap();
        assert_eq!((usage.cpu_seconds, usage.memory_bytes), (1.5, 4000));

        assert!(cgroup_usage(v1.path(), &"cd".repeat(32)).is_none(), "another container: not there");
        assert!(cgroup_usage(v1.path(), "../../etc").is_none(), "not an id");
    }

    #[test]
    fn a_hint_is_given_only_where_it_fits_the_error() {
        let taken = start_error("db", "driver failed: Bind for 127.0.0.1:5432 failed: port is already allocated");
        assert!(taken.help.is_some_and(|h| h.contains("port is taken")));
        let oci = start_error("db", "OCI runtime create failed: setrlimit: operation not permitted");
        assert!(oci.help.as_deref().is_some_and(|h| !h.contains("port")), "{:?}", oci.help);
        assert_eq!(start_error("db", "no such image").help, None);
    }
}
