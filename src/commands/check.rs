//! `apphost check` and `apphost schema`: the file alone, nothing started.

use std::{path::Path, process::ExitCode};

use miette::IntoDiagnostic;

use crate::topology;

/// Validates the file and prints its start waves.
pub fn check(file: &Path) -> miette::Result<ExitCode> {
    let t = topology::load(file)?;
    println!("{}: `{}` with {} resources is valid", file.display(), t.name, t.resources.len());
    for (i, wave) in topology::graph::waves(&t).iter().enumerate() {
        println!("  start wave {}: {}", i + 1, wave.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the JSON Schema of `apphost.yaml`.
pub fn schema() -> miette::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&topology::schema::json_schema()).into_diagnostic()?);
    Ok(ExitCode::SUCCESS)
}
