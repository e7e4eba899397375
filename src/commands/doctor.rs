//! `apphost doctor`: what this machine has for running the app, each gap with its fix.

use std::{path::Path, process::ExitCode};

use crate::{
    kinds::{Kind, Placement},
    runtime::docker,
    topology,
};

struct Report {
    ok: bool,
}

impl Report {
    fn line(&mut self, good: bool, what: &str, detail: &str, fix: &str) -> bool {
        if good {
            println!("  ✓ {what}: {detail}");
        } else {
            println!("  ✗ {what}: {detail}");
            println!("      fix: {fix}");
        }
        good
    }
}

pub async fn run(file: &Path) -> miette::Result<ExitCode> {
    let mut report = Report { ok: true };
    println!("apphost doctor");
    let topology = match topology::load(file) {
        Ok(t) => {
            report.line(
                true,
                "topology",
                &format!("{} is valid ({} resources)", file.display(), t.resources.len()),
                "",
            );
            Some(t)
        }
        Err(e) => {
            report.line(
                false,
                "topology",
                &format!("{} cannot be used", file.display()),
                "run `apphost check` to see the problems",
            );
            eprintln!("{:?}", miette::Report::new(e));
            report.ok = false;
            None
        }
    };

    let engine = docker::connect().await;
    let docker_ok = report.line(
        engine.is_ok(),
        "Docker engine",
        &engine.as_ref().map_or_else(|e| e.clone(), |_| format!("answers at {}", docker::engine_address())),
        "start it (`dockerd &` or `systemctl start docker`) or set DOCKER_HOST; without it apphost uses the process runtime",
    );
    let mut images_ok = docker_ok;
    if let (Ok(engine), Some(t)) = (&engine, &topology) {
        let mut images: Vec<String> = t
            .resources
            .iter()
            .filter(|r| r.kind.spec().placement() != Placement::Process)
            .filter_map(|r| r.image())
            .collect();
        images.sort();
        images.dedup();
        for image in images {
            let here = engine.inspect_image(&image).await.is_ok();
            images_ok &= report.line(
                here,
                "image",
                &format!(
                    "{image} ({})",
                    if here { "present" } else { "missing; pulled at `up` if a registry answers" }
                ),
                "`.ci/images` builds postgres:15 and apache/activemq-artemis:2.40.0 locally",
            );
        }
    }

    // What each kind that can run as a local process needs for it.
    let mut process_ok = true;
    for kind in Kind::ALL {
        for need in kind.spec().local_needs() {
            let detail = need.found.as_ref().map_or_else(Clone::clone, Clone::clone);
            process_ok &= report.line(need.found.is_ok(), need.what, &detail, need.fix);
        }
    }
    let cargo = local_install::which("cargo");
    let has_projects =
        topology.as_ref().is_some_and(|t| t.resources.iter().any(|r| r.kind.spec().package(r).is_some()));
    if has_projects {
        report.ok &= report.line(
            cargo.is_some(),
            "cargo",
            &cargo.map_or("not found".into(), |p| p.display().to_string()),
            "install Rust from https://rustup.rs",
        );
    }
    if let Some(t) = &topology {
        for r in &t.resources {
            for p in r.ports.iter().filter(|p| p.host.is_some_and(|h| h != 0)) {
                let port = p.host.unwrap_or_default();
                let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
                report.ok &= report.line(
                    free,
                    "port",
                    &format!("{port} for `{}` ({}) is {}", r.name, p.name, if free { "free" } else { "in use" }),
                    &format!("stop what listens on {port}, or drop `host: {port}` to pick a free port"),
                );
            }
        }
    }
    // The brokers apphost starts block producers below an absolute floor of free disk
    // (min-disk-free), counting what an unprivileged writer can still have.
    if let Some(free) = disk_free(&std::env::current_dir().unwrap_or_else(|_| ".".into())) {
        let floor = crate::kinds::artemis::MIN_DISK_FREE;
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        report.line(
            free >= floor,
            "disk",
            &format!("{:.1} GiB free for an unprivileged writer in this folder's file system", gib(free)),
            &format!(
                "free disk space: below {:.0} GiB free Artemis blocks producers and the outbox backs up",
                gib(floor)
            ),
        );
    }
    let runnable = (docker_ok && images_ok) || process_ok;
    println!();
    if runnable && report.ok {
        println!(
            "apphost can run this app on the {} runtime.",
            if docker_ok && images_ok { "docker" } else { "process" }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("apphost cannot run this app here yet; see the fixes above.");
        Ok(ExitCode::FAILURE)
    }
}

/// The bytes of `path`'s file system an unprivileged writer can still have,
/// as Artemis counts free space (Java's usable space: `f_bavail`).
fn disk_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}
