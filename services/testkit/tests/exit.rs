//! What a test process leaves behind when it exits: no scratch directory,
//! and no child. This binary runs itself as that process.

use std::{path::Path, process::Command};

/// Set for the run of [`probe`] as a child process: where it writes what it made.
const PROBE: &str = "TESTKIT_EXIT_PROBE";

/// In the child run only: a scratch directory with a process of its own
/// writing in it, as a server is; never waited for, as a shared server is not.
#[test]
fn probe() {
    let Some(out) = std::env::var_os(PROBE) else { return };
    let dir = testkit::process::scratch_dir("probe");
    let mut writer = Command::new("sh");
    writer.args(["-c", "while :; do date > now; sleep 0.01; done"]).current_dir(&dir);
    let child = testkit::process::spawn_owned(writer).expect("spawning the writer");
    std::fs::write(out, format!("{}\n{}", dir.display(), child.id())).expect("writing where the probe's files are");
    std::mem::forget(child);
}

#[test]
fn a_test_process_that_exits_leaves_no_scratch_directory_and_no_child() {
    let out = std::env::temp_dir().join(format!("testkit-exit-probe-{}", uuid::Uuid::new_v4().simple()));
    let status = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "probe", "--test-threads=1", "--quiet"])
        .env(PROBE, &out)
        .status()
        .expect("running the probe");
    assert!(status.success(), "the probe failed: {status}");
    let written = std::fs::read_to_string(&out).expect("the probe says what it made");
    let _ = std::fs::remove_file(&out);
    let (dir, pid) = written.split_once('\n').expect("a directory and a pid");
    assert!(Path::new(dir).is_absolute() && dir.contains("apphost-testkit"), "{dir}");
    assert!(!Path::new(dir).exists(), "the probe's scratch directory is left behind: {dir}");
    // Its writer is gone: a process with that pid now (reused) does not work in the
    // directory, nor in what is left of it ("… (deleted)").
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    assert!(
        cwd.is_none_or(|cwd| !cwd.to_string_lossy().starts_with(dir)),
        "the probe's writer {pid} still runs in {dir}"
    );
}
