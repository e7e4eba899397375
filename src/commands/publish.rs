//! `apphost publish`: writes the app for another engine (see [`crate::publish`]).

use std::{path::Path, process::ExitCode};

use miette::{IntoDiagnostic, miette};

use crate::{
    publish::{self, compose},
    statedir::{Secrets, StateDir},
    topology,
};

/// The engines `apphost publish` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A compose file for `docker compose` (or Debian's docker-compose 1.29).
    Compose,
}

/// Writes `file`'s app for `target` into `out`. Passwords come from
/// `.apphost/secrets.json`, generated there (owner-only) when missing, so a
/// published stack and `apphost up` share them.
pub fn run(file: &Path, target: Target, out: &Path, tag: &str) -> miette::Result<ExitCode> {
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
    let files = match target {
        Target::Compose => compose::render(&t, &stack, &|i| publish::project_image(&t.name, &i.resource.name, tag)),
    };
    publish::output_dir(out)?;
    compose::write(out, &files).map_err(|e| miette!("cannot write into {}: {e}", out.display()))?;
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
    println!("start it: docker compose -f {} -p {} up -d", out.join("compose.yaml").display(), t.name);
    Ok(ExitCode::SUCCESS)
}
