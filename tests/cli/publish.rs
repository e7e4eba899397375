//! `apphost build-images` and `apphost publish --target compose` on the demo
//! topology: a file a real compose implementation (Debian's docker-compose)
//! reads, passwords only in owner-only env files, the same bytes twice, a
//! hostile output folder refused, and the whole published stack run by
//! docker-compose: healthy, a POST reaching the receiver, a broker outage
//! losing nothing, and `down -v` leaving nothing.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use crate::helpers::{StateDir, apphost};

async fn publish(state: &Path, out: &Path) -> std::process::Output {
    // Debug binaries: the ones the tests build anyway (a release build would double CI's build).
    apphost(state).args(["publish", "--debug", "--target", "compose", "-o"]).arg(out).output().await.unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_stack_runs_under_docker_compose_and_a_broker_outage_loses_nothing() {
    // The published sender and receiver take 8080 and 8081 on loopback, and the stack both cores.
    let _one = crate::helpers::ONE_STACK.lock().await;
    let _images = crate::helpers::PROJECT_IMAGES.lock().await;
    let _built = crate::helpers::RemoveNewProjectImages::since_now();
    let state = StateDir::new();
    let built = apphost(&state).args(["build-images", "--debug"]).output().await.unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let out = tempfile::tempdir().unwrap();
    assert!(publish(&state, out.path()).await.status.success());
    let project = format!("apphost-publish-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let guard = Project(out.path(), &project);
    let up = compose(out.path(), &project, &["up", "-d"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let label = format!("label=com.docker.compose.project={project}");
    let statuses = || {
        let ps = Command::new("docker")
            .args(["ps", "-a", "--filter", &label, "--format", "{{.Names}} {{.Status}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).into_owned()
    };
    let healthy = || statuses().lines().filter(|s| s.contains("(healthy)")).count() == 5;
    let started = std::time::Instant::now();
    while !healthy() {
        assert!(started.elapsed() < Duration::from_secs(240), "not all five healthy:\n{}", statuses());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // What each container is and said last, so a failure below has a cause.
    let diagnosis = || {
        let logs = compose(out.path(), &project, &["logs", "--no-color", "--tail", "40"]);
        format!("{}\n{}", statuses(), String::from_utf8_lossy(&logs.stdout))
    };
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let post = async |n: usize| -> String {
        let answer = client
            .post("http://127.0.0.1:8080/api/EntityItems")
            .json(&serde_json::json!({ "name": format!("compose {n}"), "value": n }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {n}: {e}\n{}", diagnosis()));
        assert_eq!(answer.status(), 201);
        answer.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    };
    let mut ids = vec![post(0).await];
    let stopped = compose(out.path(), &project, &["stop", "broker"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    for n in 1..=20 {
        ids.push(post(n).await);
    }
    let started = compose(out.path(), &project, &["start", "broker"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let delivered = async || {
        let mut count = 0;
        for id in &ids {
            let url = format!("http://127.0.0.1:8081/api/EntityItems/{id}");
            count += usize::from(client.get(url).send().await.is_ok_and(|r| r.status() == 200));
        }
        count
    };
    let since = std::time::Instant::now();
    while delivered().await < ids.len() {
        if since.elapsed() > Duration::from_secs(120) {
            panic!(
                "{} of {} items reached the receiver after the broker came back\n{}",
                delivered().await,
                ids.len(),
                diagnosis()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    drop(guard);
    assert_eq!(statuses(), "", "no container left");
    for what in ["network", "volume"] {
        let ls = Command::new("docker").args([what, "ls", "-q", "--filter", &format!("name={project}")]).output();
        assert_eq!(String::from_utf8_lossy(&ls.unwrap().stdout), "", "no {what} left");
    }
}

/// The manifests as a cluster would get them (`kubectl kustomize`), checked
/// against the OpenAPI schemas of two Kubernetes minor versions by
/// `kubernetes-validate` (PyPI; .ci/setup installs it).
#[tokio::test]
async fn published_kubernetes_manifests_render_and_validate_against_two_versions() {
    let state = StateDir::new();
    let out = tempfile::tempdir().unwrap();
    let published = apphost(&state)
        .args(["publish", "--debug", "--target", "kubernetes", "-o"])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let rendered = Command::new("kubectl").arg("kustomize").arg(out.path()).output().expect("kubectl");
    assert!(rendered.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&rendered.stderr));
    let manifests = String::from_utf8(rendered.stdout).unwrap();
    for kind in ["kind: StatefulSet", "kind: Deployment", "kind: Service", "kind: Secret"] {
        assert!(manifests.contains(kind), "{kind} missing:\n{manifests}");
    }
    let all = out.path().join("rendered.yaml");
    std::fs::write(&all, &manifests).unwrap();
    for version in ["1.36.0", "1.37.0"] {
        let checked = Command::new(kubernetes_validate())
            .args(["--strict", "--kubernetes-version", version])
            .arg(&all)
            .output()
            .expect("kubernetes-validate (.ci/setup installs it into the cache's venv)");
        assert!(
            checked.status.success(),
            "Kubernetes {version} refuses them: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

/// `kubernetes-validate` in the venv `.ci/setup` makes (`$APPHOST_CACHE` or `~/.cache/apphost`).
fn kubernetes_validate() -> std::path::PathBuf {
    let cache = std::env::var_os("APPHOST_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/apphost")
    });
    cache.join("venv/bin/kubernetes-validate")
}

/// `build-images --push` into a real registry (Debian's docker-registry, the
/// CNCF distribution, started here on loopback): the registry lists each
/// project's tag, the engine pulls it back from there, and `publish
/// --registry` names the pushed images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_images_pushes_to_a_registry_and_publish_names_the_pushed_images() {
    let scratch = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let config = scratch.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            scratch.path().join("data").display()
        ),
    )
    .unwrap();
    let _registry = tokio::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("docker-registry (Debian's package docker-registry; .ci/setup installs it)");
    let registry = format!("127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = std::time::Instant::now();
    while client.get(format!("http://{registry}/v2/")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the registry did not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let _images = crate::helpers::PROJECT_IMAGES.lock().await;
    let _built = crate::helpers::RemoveNewProjectImages::since_now();
    let state = StateDir::new();
    let pushed = apphost(&state).args(["build-images", "--debug", "--push", &registry]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&pushed.stdout).into_owned();
    assert!(pushed.status.success(), "{stdout}{}", String::from_utf8_lossy(&pushed.stderr));
    for resource in ["sender", "receiver"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("pushed {registry}/outbox-demo/{resource}:")));
        let remote = line.unwrap_or_else(|| panic!("no push of {resource}:\n{stdout}")).trim_start_matches("pushed ");
        let tag = remote.rsplit_once(':').unwrap().1;
        // No apphost label: the containers compose or a cluster runs inherit the
        // image's, and `apphost down` must never take them for its own.
        let inspect = ["image", "inspect", "--format", "{{json .Config.Labels}}", remote];
        let labels =
            String::from_utf8_lossy(&Command::new("docker").args(inspect).output().unwrap().stdout).into_owned();
        assert!(labels.contains("org.opencontainers.image.title") && !labels.contains("apphost.app"), "{labels}");
        let tags: serde_json::Value = client
            .get(format!("http://{registry}/v2/outbox-demo/{resource}/tags/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"], serde_json::json!([tag]), "{tags}");
        // The engine gets it back from the registry alone.
        assert!(Command::new("docker").args(["rmi", remote]).output().unwrap().status.success());
        let pulled = Command::new("docker").args(["pull", "-q", remote]).output().unwrap();
        assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
        Command::new("docker").args(["rmi", remote]).output().unwrap();
    }

    let out = tempfile::tempdir().unwrap();
    let published = apphost(&state)
        .args(["publish", "--debug", "--target", "compose", "--registry", &registry, "-o"])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let yaml = std::fs::read_to_string(out.path().join("compose.yaml")).unwrap();
    assert!(yaml.contains(&format!("image: \"{registry}/outbox-demo/sender:")), "{yaml}");
}
