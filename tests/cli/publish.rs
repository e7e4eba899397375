//! `apphost publish --target compose` on the demo topology: a file a real
//! compose implementation (Debian's docker-compose) reads, passwords only in
//! owner-only env files, the same bytes twice, a hostile output folder
//! refused, and the published infrastructure healthy under compose.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use crate::helpers::{StateDir, apphost};

async fn publish(state: &Path, out: &Path) -> std::process::Output {
    apphost(state).args(["publish", "--target", "compose", "-o"]).arg(out).output().await.unwrap()
}

fn compose(dir: &Path, project: &str, args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .current_dir(dir)
        .args(["-p", project])
        .args(args)
        .output()
        .expect("docker-compose (Debian's package docker-compose; .ci/setup installs it)")
}

fn passwords(state: &Path) -> Vec<String> {
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("secrets.json")).unwrap()).unwrap();
    secrets["passwords"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn publish_writes_compose_that_docker_compose_reads_with_passwords_apart() {
    let state = StateDir::new();
    let out = tempfile::tempdir().unwrap();
    let published = publish(&state, out.path()).await;
    let stdout = String::from_utf8_lossy(&published.stdout).into_owned();
    assert!(published.status.success(), "{stdout}{}", String::from_utf8_lossy(&published.stderr));

    let checked = compose(out.path(), "apphost-publish-check", &["config", "-q"]);
    assert!(checked.status.success(), "docker-compose refused it: {}", String::from_utf8_lossy(&checked.stderr));

    let yaml = std::fs::read_to_string(out.path().join("compose.yaml")).unwrap();
    let passwords = passwords(&state);
    assert_eq!(passwords.len(), 3, "two databases and the broker");
    let mut env_files = String::new();
    for entry in std::fs::read_dir(out.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".env") {
            assert_eq!(entry.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{name}");
            env_files.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    for p in &passwords {
        assert!(!yaml.contains(p.as_str()) && !stdout.contains(p.as_str()), "a password in the YAML or printed");
        assert!(env_files.contains(p.as_str()), "each password is in an env file");
    }
    assert!(env_files.contains("@sender-db:5432/sender"), "services reach each other by name:\n{env_files}");

    let again = tempfile::tempdir().unwrap();
    assert!(publish(&state, again.path()).await.status.success());
    for name in ["compose.yaml", "sender.env", "broker.env"] {
        assert_eq!(
            std::fs::read(out.path().join(name)).unwrap(),
            std::fs::read(again.path().join(name)).unwrap(),
            "{name} is the same twice"
        );
    }
}

#[tokio::test]
async fn publish_refuses_an_output_folder_others_can_write() {
    let state = StateDir::new();
    let parent = tempfile::tempdir().unwrap();
    let shared = parent.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let published = publish(&state, &shared).await;
    let stderr = String::from_utf8_lossy(&published.stderr);
    assert!(!published.status.success());
    assert!(stderr.contains("can be written by others"), "{stderr}");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0, "nothing written there");
}

/// Takes the compose project down (volumes too) however the test ends.
struct Project<'a>(&'a Path, &'a str);

impl Drop for Project<'_> {
    fn drop(&mut self) {
        compose(self.0, self.1, &["down", "-v", "--remove-orphans"]);
    }
}

#[tokio::test]
async fn the_published_infrastructure_is_healthy_under_docker_compose_and_down_leaves_nothing() {
    let state = StateDir::new();
    let out = tempfile::tempdir().unwrap();
    assert!(publish(&state, out.path()).await.status.success());
    let project = format!("apphost-publish-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let guard = Project(out.path(), &project);
    let up = compose(out.path(), &project, &["up", "-d", "sender-db", "receiver-db", "broker"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let label = format!("label=com.docker.compose.project={project}");
    let statuses = || {
        let ps = Command::new("docker").args(["ps", "-a", "--filter", &label, "--format", "{{.Status}}"]).output();
        String::from_utf8_lossy(&ps.unwrap().stdout).into_owned()
    };
    let started = std::time::Instant::now();
    while !(statuses().lines().count() == 3 && statuses().lines().all(|s| s.contains("(healthy)"))) {
        assert!(started.elapsed() < Duration::from_secs(180), "not all healthy: {}", statuses());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(guard);
    assert_eq!(statuses(), "", "no container left");
    for what in ["network", "volume"] {
        let ls = Command::new("docker").args([what, "ls", "-q", "--filter", &format!("name={project}")]).output();
        assert_eq!(String::from_utf8_lossy(&ls.unwrap().stdout), "", "no {what} left");
    }
}
