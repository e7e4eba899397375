//! `apphost publish` and `apphost build-images`: the app for another engine
//! (see [`crate::publish`]).

use std::{path::Path, process::ExitCode};

use miette::{IntoDiagnostic, miette};

use crate::{
    publish::{self, compose, images, kubernetes},
    statedir::{Secrets, StateDir},
    topology,
};

/// The engines `apphost publish` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A compose file for `docker compose` (or Debian's docker-compose 1.29).
    Compose,
    /// Manifests and a `kustomization.yaml` for `kubectl apply -k`.
    Kubernetes,
}

/// Writes `file`'s app for `target` into `out`. Passwords come from
/// `.apphost/secrets.json`, generated there (owner-only) when missing, so a
/// published stack and `apphost up` share them. Projects are named by the
/// images `build-images` makes of their release binaries on `base`, under
/// `registry` when given.
pub async fn publish(
    file: &Path,
    target: Target,
    out: &Path,
    base: &str,
    registry: Option<&str>,
    debug: bool,
    secrets_from: kubernetes::Secrets,
) -> miette::Result<ExitCode> {
    let t = topology::load(file)?;
    let state = StateDir::for_topology(file);
    let mut secrets = Secrets::load(&state).into_diagnostic()?;
    for r in t.resources.iter().filter(|r| r.kind.spec().has_password()) {
        secrets
            .password(&state, &r.name)
            .map_err(|e| miette!("cannot store generated passwords under {}: {e}", state.root.display()))?;
    }
    let stack =
        publish::stack(&t, &|name| secrets.get(name).map(str::to_owned)).map_err(|e| miette::Report::new(*e))?;
    let binaries = images::binaries(&t, true, debug).await?;
    let recipes = images::recipes(&t, base, &binaries)?;
    let image = |i: &crate::plan::Instance| {
        let reference = recipes.get(&i.resource.name).map_or_else(String::new, |r| r.reference.clone());
        registry.map_or(reference.clone(), |registry| format!("{}/{reference}", registry.trim_end_matches('/')))
    };
    let mut expected = Vec::new();
    let (files, start) = match target {
        Target::Compose => (
            compose::render(&t, &stack, &image),
            format!("docker compose -f {} -p {} up -d", out.join("compose.yaml").display(), t.name),
        ),
        Target::Kubernetes => (
            kubernetes::render(&t, &stack, &image, secrets_from, &mut expected),
            format!("kubectl apply -k {}", out.display()),
        ),
    };
    publish::output_dir(out)?;
    publish::write_files(out, &files).map_err(|e| miette!("cannot write into {}: {e}", out.display()))?;
    for (name, (_, private)) in &files {
        println!(
            "wrote {}{}",
            out.join(name).display(),
            if *private { " (owner-only: it holds passwords)" } else { "" }
        );
    }
    for note in &stack.notes {
        println!("note: {note}");
    }
    for secret in &expected {
        println!("create before applying: {secret}");
    }
    println!("start it: {start}");
    Ok(ExitCode::SUCCESS)
}

/// Builds the release binaries of `file`'s projects and an image of each on
/// `base` in the local engine; pushes them to `push` when given.
pub async fn build_images(file: &Path, base: &str, push: Option<&str>, debug: bool) -> miette::Result<ExitCode> {
    let t = topology::load(file)?;
    let binaries = images::binaries(&t, false, debug).await?;
    let recipes = images::recipes(&t, base, &binaries)?;
    let docker = crate::runtime::docker::connect()
        .await
        .map_err(|e| miette!(help = "start Docker (or set DOCKER_HOST)", "{e}"))?;
    for recipe in recipes.values() {
        println!("building {} (package `{}` on {base})", recipe.reference, recipe.package);
        images::build(&docker, &t.name, recipe, &|line| println!("  {line}")).await?;
        if let Some(registry) = push {
            let remote = images::push(&docker, recipe, registry).await?;
            println!("pushed {remote}");
        }
    }
    for recipe in recipes.values() {
        println!("{}: {}", recipe.resource, recipe.reference);
    }
    Ok(ExitCode::SUCCESS)
}
