//! Images for `project` resources: each project's release binary on a small
//! base image, built through the Docker Engine API (bollard) into the local
//! engine and tagged `<app>/<resource>:<digest>`, the digest being of what
//! goes into the image (its Dockerfile and the binary), so an unchanged
//! project keeps its tag and a published stack names exactly what was built.

use std::{collections::BTreeMap, path::Path};

use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;
use miette::miette;
use sha2::{Digest, Sha256};

use crate::topology::{Resource, Topology};

/// The base of the projects' images when `--base` is not given: glibc and
/// libgcc, nothing else (no shell, no package manager), a non-root user. The
/// services need nothing more (`ldd`: libc, libm, libgcc_s) and answer their
/// own healthcheck (`--health-check`).
pub const DEFAULT_BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";

/// The labels each image carries: the OCI ones, never apphost's own. A
/// container inherits its image's labels, and `apphost.app` on a container
/// compose or a cluster runs would make it look like one apphost started
/// (`apphost down` on the same engine once removed a published stack's
/// containers that way).
const LABEL_TITLE: &str = "org.opencontainers.image.title";
const LABEL_DESCRIPTION: &str = "org.opencontainers.image.description";

/// One project's image: what goes into it and the name it gets.
pub struct Recipe {
    pub resource: String,
    pub package: String,
    pub binary: std::path::PathBuf,
    pub dockerfile: String,
    /// `<app>/<resource>:<first 12 hex of the digest>`.
    pub reference: String,
}

fn dockerfile(base: &str, package: &str) -> String {
    format!(
        "FROM {base}\n\
         COPY {package} /usr/local/bin/{package}\n\
         ENV HOST=0.0.0.0 PORT={port}\n\
         EXPOSE {port}\n\
         ENTRYPOINT [\"/usr/local/bin/{package}\"]\n",
        port = super::PROJECT_PORT
    )
}

/// The image of each project of `t` from its release binaries (`binaries`:
/// package → path): resource → recipe. Reads each binary to digest it.
pub fn recipes(
    t: &Topology,
    base: &str,
    binaries: &std::collections::HashMap<String, std::path::PathBuf>,
) -> miette::Result<BTreeMap<String, Recipe>> {
    let mut out = BTreeMap::new();
    for r in projects(t) {
        let package = r.kind.spec().package(r).unwrap_or_default();
        let binary = binaries.get(&package).cloned().ok_or_else(|| miette!("no binary for package `{package}`"))?;
        let bytes = std::fs::read(&binary).map_err(|e| {
            miette!(
                help = "`apphost build-images` builds them (`cargo build --release`), then the images",
                "cannot read the release binary {} of `{}`: {e}",
                binary.display(),
                r.name
            )
        })?;
        let dockerfile = dockerfile(base, &package);
        let digest = Sha256::new().chain_update(dockerfile.as_bytes()).chain_update(&bytes).finalize();
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let reference = super::project_image(&t.name, &r.name, &hex);
        out.insert(r.name.clone(), Recipe { resource: r.name.clone(), package, binary, dockerfile, reference });
    }
    Ok(out)
}

/// The `project` resources of `t`.
pub fn projects(t: &Topology) -> impl Iterator<Item = &Resource> {
    t.resources.iter().filter(|r| r.kind.spec().package(r).is_some())
}

/// The binaries of `t`'s projects, built (`cargo build`, `--release` unless
/// `debug`) unless `built`.
pub async fn binaries(
    t: &Topology,
    built: bool,
    debug: bool,
) -> miette::Result<std::collections::HashMap<String, std::path::PathBuf>> {
    let packages: Vec<String> = projects(t).filter_map(|r| r.kind.spec().package(r)).collect();
    let binaries = crate::build::build(t.root(), &packages, !debug, built, |line| eprintln!("{line}"));
    match binaries.await {
        Ok(binaries) => Ok(binaries),
        // `publish` takes the binaries there are: say which is missing and what builds it.
        Err(crate::build::BuildError::Cargo(why)) if built && why.contains("is not built") => Err(miette!(
            help =
                format!("`apphost build-images{}` builds them and their images", if debug { " --debug" } else { "" }),
            "a project's {} binary is not built yet ({})",
            if debug { "debug" } else { "release" },
            why.trim_start_matches("`--no-build`, but ")
        )),
        Err(e) => Err(e.into()),
    }
}

/// Builds `recipe` into the local engine: a build context of the Dockerfile
/// and the binary, sent to the engine's `/build`; the engine's messages go
/// to `progress`.
pub async fn build(
    docker: &bollard::Docker,
    app: &str,
    recipe: &Recipe,
    progress: &dyn Fn(&str),
) -> miette::Result<()> {
    let context =
        context(recipe).map_err(|e| miette!("cannot pack the build context of `{}`: {e}", recipe.resource))?;
    let labels = std::collections::HashMap::from([
        (LABEL_TITLE.to_owned(), recipe.resource.clone()),
        (
            LABEL_DESCRIPTION.to_owned(),
            format!("`{}` of the app `{app}`, built by apphost build-images", recipe.resource),
        ),
    ]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&recipe.reference)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = stream.next().await {
        let info = step.map_err(|e| {
            miette!(
                help = "the base image must be in the local engine (`docker pull` it, or pass `--base`)",
                "building the image of `{}` failed: {e}",
                recipe.resource
            )
        })?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(miette!("building the image of `{}` failed: {detail}", recipe.resource));
        }
        if let Some(line) = info.stream.as_deref().map(str::trim_end).filter(|l| !l.is_empty()) {
            progress(line);
        }
    }
    Ok(())
}

/// The build context: `Dockerfile` and the binary (mode 0755), as a tar.
fn context(recipe: &Recipe) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(recipe.dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "Dockerfile", recipe.dockerfile.as_bytes())?;
    let mut file = std::fs::File::open(&recipe.binary)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(file.metadata()?.len());
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, Path::new(&recipe.package), &mut file)?;
    tar.into_inner()
}

/// Tags `recipe`'s image as `<registry>/<its reference>` and pushes it there.
pub async fn push(docker: &bollard::Docker, recipe: &Recipe, registry: &str) -> miette::Result<String> {
    let registry = registry.trim_end_matches('/');
    let (repository, tag) = recipe.reference.rsplit_once(':').unwrap_or((&recipe.reference, "latest"));
    let remote = format!("{registry}/{repository}");
    let options = TagImageOptionsBuilder::default().repo(&remote).tag(tag).build();
    docker
        .tag_image(&recipe.reference, Some(options))
        .await
        .map_err(|e| miette!("cannot tag {} as {remote}:{tag}: {e}", recipe.reference))?;
    let mut stream = docker.push_image(&remote, Some(PushImageOptionsBuilder::default().tag(tag).build()), None);
    while let Some(step) = stream.next().await {
        let info = step.map_err(|e| miette!("pushing {remote}:{tag} failed: {e}"))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(miette!(
                help = "is the registry up, and does the engine trust it (`insecure-registries` for plain HTTP)?",
                "pushing {remote}:{tag} failed: {detail}"
            ));
        }
    }
    Ok(format!("{remote}:{tag}"))
}
