//! Building `project` resources: one `cargo build` for all of them, its
//! progress shown line by line, then each package's binary located.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BuildError {
    #[error("cannot run cargo: {0}")]
    #[diagnostic(help("install Rust (https://rustup.rs) so that `cargo` is on PATH"))]
    Cargo(String),
    #[error("no package `{package}` in the cargo workspace at {root}")]
    #[diagnostic(help("{hint}"))]
    NoPackage { package: String, root: String, hint: String },
    #[error("`cargo build` failed for {packages}")]
    #[diagnostic(help("the compiler's messages are above; fix them and run `apphost up` again"))]
    Failed { packages: String },
}

#[derive(serde::Deserialize)]
struct Metadata {
    target_directory: PathBuf,
    packages: Vec<Package>,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
    targets: Vec<Target>,
}

#[derive(serde::Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// Builds `packages` in the workspace at `root` (unless `skip`, which uses
/// the binaries already there); returns package → binary.
pub async fn build(
    root: &Path,
    packages: &[String],
    release: bool,
    skip: bool,
    progress: impl Fn(&str),
) -> Result<HashMap<String, PathBuf>, BuildError> {
    let metadata = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root)
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| BuildError::Cargo(e.to_string()))?;
    if !metadata.status.success() {
        return Err(BuildError::Cargo(String::from_utf8_lossy(&metadata.stderr).trim().to_owned()));
    }
    let metadata: Metadata = serde_json::from_slice(&metadata.stdout).map_err(|e| BuildError::Cargo(e.to_string()))?;
    let mut binaries = HashMap::new();
    for package in packages {
        let Some(found) = metadata.packages.iter().find(|p| &p.name == package) else {
            let names: Vec<&str> = metadata.packages.iter().map(|p| p.name.as_str()).collect();
            let hint = match crate::topology::did_you_mean(package, &names) {
                Some(best) => format!("did you mean `{best}`? set `package:` on the resource"),
                None => format!("packages: {}", names.join(", ")),
            };
            return Err(BuildError::NoPackage { package: package.clone(), root: root.display().to_string(), hint });
        };
        let bin = found
            .targets
            .iter()
            .find(|t| t.kind.iter().any(|k| k == "bin"))
            .map_or(package.clone(), |t| t.name.clone());
        let profile = if release { "release" } else { "debug" };
        binaries.insert(package.clone(), metadata.target_directory.join(profile).join(bin));
    }

    if skip {
        if let Some((package, missing)) = binaries.iter().find(|(_, b)| !b.exists()) {
            return Err(BuildError::Cargo(format!(
                "`--no-build`, but `{}` (package `{package}`) is not built",
                missing.display()
            )));
        }
        return Ok(binaries);
    }
    let mut command = Command::new("cargo");
    command.arg("build").args(["--color", "never"]).current_dir(root).stdout(Stdio::null()).stderr(Stdio::piped());
    if release {
        command.arg("--release");
    }
    for package in packages {
        command.args(["-p", package]);
    }
    // In apphost's own workspace (the demo), apphost depends on the services: with it in the
    // selection, this build resolves the same features as `cargo run -p apphost` did, so every
    // dependency compiled for apphost is reused, not compiled again with other features.
    if metadata.packages.iter().any(|p| p.name == env!("CARGO_PKG_NAME")) && !packages.iter().any(|p| p == "apphost") {
        command.args(["-p", env!("CARGO_PKG_NAME")]);
    }
    let mut child = command.spawn().map_err(|e| BuildError::Cargo(e.to_string()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        progress(&line);
    }
    let status = child.wait().await.map_err(|e| BuildError::Cargo(e.to_string()))?;
    if !status.success() {
        return Err(BuildError::Failed { packages: packages.join(", ") });
    }
    Ok(binaries)
}
