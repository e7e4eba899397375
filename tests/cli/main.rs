//! The real `apphost` binary running the demo stack on the process and the
//! docker runtime: up, a POST that reaches the receiver, down, and nothing
//! left behind, also after SIGKILL and on Ctrl-C.

mod chaos;
mod dashboard;
mod helpers;
mod publish;
mod tracing;

use std::time::Duration;

use helpers::{ONE_STACK, Running, Stack, alive, apphost, docker_leftovers, item_goes_through, pids};

const HEALTHY_WITHIN: Duration = Duration::from_secs(240);

async fn assert_nothing_left(stack: &Stack, pids: &[u32]) {
    for pid in pids {
        assert!(!alive(*pid), "process {pid} outlived apphost:\n{}", stack.output());
    }
    assert!(!stack.state.join("session.json").exists(), "the session file stayed");
    assert!(!stack.state.join("run").exists(), "non-persistent data stayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_runs_the_demo_and_down_removes_it() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("process").await;
    let ps = stack.wait_healthy(HEALTHY_WITHIN).await;
    assert!(ps.iter().all(|s| s["runtime"] == "process"), "{ps:?}");
    item_goes_through(&ps).await;

    let pids = pids(&ps);
    assert_eq!(pids.len(), 5, "{ps:?}");
    let down = apphost(&stack.state).arg("down").output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = stack.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(0), "{}", stack.output());
    assert_nothing_left(&stack, &pids).await;
    let out = stack.output();
    assert!(out.contains("runtime: process"), "apphost says which runtime it chose:\n{out}");
    let password = std::fs::read_to_string(stack.state.join("secrets.json")).unwrap();
    let password: serde_json::Value = serde_json::from_str(&password).unwrap();
    for secret in password["passwords"].as_object().unwrap().values() {
        assert!(!out.contains(secret.as_str().unwrap()), "a password was printed");
    }
}

/// A system proxy is never used for loopback: with `HTTP_PROXY` (and
/// friends) pointing at a proxy that never answers, the health probes pass,
/// the CLI reaches the control API, and every process apphost starts is
/// told `NO_PROXY` for loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_proxy_is_never_used_for_loopback() {
    let _one = ONE_STACK.lock().await;
    // Accepts connections (into its backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", silent.local_addr().unwrap());
    let env = [("HTTP_PROXY", proxy.as_str()), ("http_proxy", proxy.as_str()), ("ALL_PROXY", proxy.as_str())];
    let mut stack = Stack::up_with("process", &env).await;
    let ps = stack.wait_healthy(HEALTHY_WITHIN).await;

    let through = apphost(&stack.state).envs(env).args(["ps", "--json"]).output().await.unwrap();
    assert!(through.status.success(), "ps with a proxy set: {}", String::from_utf8_lossy(&through.stderr));
    for service in ["sender", "receiver"] {
        let pid = ps
            .iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["id"].as_str()?.strip_prefix("pid ")?.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no pid for {service}: {ps:?}"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let no_proxy = environ
            .split(|b| *b == 0)
            .find_map(|v| String::from_utf8_lossy(v).strip_prefix("NO_PROXY=").map(str::to_owned))
            .unwrap_or_default();
        assert!(no_proxy.split(',').any(|h| h == "127.0.0.1"), "{service} has NO_PROXY={no_proxy:?}");
    }
    let down = apphost(&stack.state).envs(env).arg("down").output().await.unwrap();
    assert!(down.status.success(), "down with a proxy set: {}", String::from_utf8_lossy(&down.stderr));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runtime_runs_the_demo_and_down_removes_it() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("docker").await;
    let ps = stack.wait_healthy(HEALTHY_WITHIN).await;
    for name in ["sender-db", "receiver-db", "broker"] {
        let s = ps.iter().find(|s| s["name"] == name).unwrap();
        assert_eq!(s["runtime"], "docker", "{s}");
    }
    assert!(!docker_leftovers().await.is_empty(), "the stack runs in containers");
    item_goes_through(&ps).await;

    let down = apphost(&stack.state).arg("down").output().await.unwrap();
    assert!(down.status.success());
    assert_eq!(stack.wait_exit(Duration::from_secs(90)).await.code(), Some(0), "{}", stack.output());
    assert_nothing_left(&stack, &pids(&ps)).await;
    assert_eq!(docker_leftovers().await, Vec::<String>::new());
}

/// Should the reaper die too (killed first here), the next `down` removes
/// what a SIGKILLed apphost left. (With its reaper alive nobody needs to:
/// the `apphost-killed` scenario and
/// `a_killed_apphost_is_cleaned_up_by_its_reaper_without_down` show that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_down_removes_what_apphost_left() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("docker").await;
    let ps = stack.wait_healthy(HEALTHY_WITHIN).await;
    let reaper = reaper_of(&stack.state).expect("up started a reaper");
    testkit::process::signal(reaper, libc::SIGKILL);
    testkit::process::signal(stack.pid(), libc::SIGKILL);
    stack.wait_exit(Duration::from_secs(10)).await;
    assert!(!docker_leftovers().await.is_empty(), "containers outlive a SIGKILLed apphost until `down`");

    let down = apphost(&stack.state).arg("down").output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("removed container"), "down says what it removed: {said}");
    assert_eq!(docker_leftovers().await, Vec::<String>::new());
    assert_nothing_left(&stack, &pids(&ps)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_running_tears_down_with_130() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("process").await;
    let ps = stack.wait_healthy(HEALTHY_WITHIN).await;
    testkit::process::signal(stack.pid(), libc::SIGINT);
    let status = stack.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(130), "{}", stack.output());
    assert!(stack.output().contains("is down"), "{}", stack.output());
    assert_nothing_left(&stack, &pids(&ps)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_startup_tears_down_with_130() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("process").await;
    // Interrupt while the infrastructure is still coming up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Some(ps) = stack.ps().await
            && ps.iter().any(|s| s["state"] == "running" || s["state"] == "starting")
        {
            break helpers::pids(&ps);
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw a resource starting:\n{}", stack.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    testkit::process::signal(stack.pid(), libc::SIGINT);
    let status = stack.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(status.code(), Some(130), "{}", stack.output());
    assert_nothing_left(&stack, &seen).await;
    // Anything that started after our last look is gone too.
    let ps_after = apphost(&stack.state).args(["ps", "--json"]).output().await.unwrap();
    assert!(!ps_after.status.success(), "no session remains");
}

#[tokio::test]
async fn check_reports_a_broken_file_with_its_location() {
    let dir = std::env::temp_dir().join(format!("apphost-check-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apphost.yaml");
    std::fs::write(&file, "resources:\n  db:\n    kind: postgres\n    persistant: true\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_apphost"))
        .env("NO_COLOR", "1")
        .args(["check", "-f"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apphost.yaml:4:5"), "{stderr}");
    assert!(stderr.contains("did you mean `persistent`?"), "{stderr}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_apphost"))
        .env("APPHOST_STATE_DIR", &dir)
        .args(["ps", "-f"])
        .arg(helpers::workspace().join("apphost.yaml"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no apphost is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_refuses_requests_without_the_token() {
    let _one = ONE_STACK.lock().await;
    let mut stack = Stack::up("process").await;
    stack.wait_healthy(HEALTHY_WITHIN).await;
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stack.state.join("session.json")).unwrap()).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(stack.state.join("session.json")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the session file is owner-only");
    let url = format!("http://127.0.0.1:{}/v1/ps", session["port"]);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("guess").send().await.unwrap().status(), 401);
    let token = session["token"].as_str().unwrap();
    assert_eq!(client.get(&url).bearer_auth(token).send().await.unwrap().status(), 200);
    // Stopping and starting a resource through the CLI.
    let stop = apphost(&stack.state).args(["stop", "receiver"]).output().await.unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let ps = stack.ps().await.unwrap();
    assert_eq!(ps.iter().find(|s| s["name"] == "receiver").unwrap()["state"], "stopped");
    apphost(&stack.state).args(["start", "receiver"]).output().await.unwrap();
    stack.wait_healthy(HEALTHY_WITHIN).await;
    let events = apphost(&stack.state).args(["logs", "--events", "receiver"]).output().await.unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("stop requested") && events.contains("stopped"), "{events}");
    apphost(&stack.state).arg("down").output().await.unwrap();
    stack.wait_exit(Duration::from_secs(90)).await;
}

/// Runs `apphost test ARGS --junit FILE`; returns its stdout and the report.
async fn apphost_test(args: &[&str]) -> (helpers::StateDir, String, String) {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let junit = state.join("junit.xml");
    let out = apphost(&state).arg("test").args(args).arg("--junit").arg(&junit).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let xml = std::fs::read_to_string(&junit).unwrap();
    (state, stdout, xml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apphost_test_runs_scenarios_and_writes_junit() {
    let _one = ONE_STACK.lock().await;
    let file = helpers::workspace().join("tests/scenarios/receiver-pause.yaml").display().to_string();
    let scenarios = ["--scenario", "smoke", "--scenario", "broker-outage", "--scenario", "poison", "--scenario", &file];
    let (state, stdout, xml) =
        apphost_test(&[&["--runtime", "process", "--no-build", "--outage", "5s"][..], &scenarios[..]].concat()).await;
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("scenario broker-outage: passed"), "{stdout}");
    assert!(stdout.contains("scenario receiver-pause: passed"), "a scenario file runs:\n{stdout}");
    assert!(xml.contains(r#"tests="4" failures="0""#), "{xml}");
    assert!(xml.contains(r#"name="broker-outage""#) && xml.contains(r#"&quot;lost&quot;:0"#), "{xml}");
    assert!(!state.join("session.json").exists() && !state.join("run").exists(), "test tears down");

    let out = apphost(&state).args(["test", "--scenario", "nonsense"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scenario is called `nonsense`"));

    // A mistake in a scenario file is shown where it is, before anything starts.
    let bad = state.join("bad.yaml");
    std::fs::write(&bad, "steps:\n  - load\n  - chaos: { action: stop, resource: brokr }\n").unwrap();
    let out = apphost(&state).args(["test", "--scenario", bad.to_str().unwrap()]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no resource is called `brokr`")
            && stderr.contains("bad.yaml:3:")
            && stderr.contains("did you mean `broker`?"),
        "{stderr}"
    );
    assert!(!state.join("session.json").exists(), "nothing started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_built_in_scenario_passes_on_the_docker_runtime() {
    let _one = ONE_STACK.lock().await;
    // 5 s faults instead of the default 30 s keep CI short; the logic is the same.
    let (_, stdout, xml) = apphost_test(&["--runtime", "docker", "--no-build", "--outage", "5s"]).await;
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");
    assert!(xml.contains(r#"tests="11" failures="0""#), "{xml}");
    assert!(
        stdout.contains("redelivered under its message id") && stdout.contains("the receiver absorbed it"),
        "the redelivery arrived and the inbox absorbed it:\n{stdout}"
    );
    assert!(stdout.contains("outbox rows in flight"), "sender-crash strikes with a batch in flight:\n{stdout}");
    assert!(stdout.contains("kill `receiver` with"), "receiver-crash strikes mid-batch:\n{stdout}");
    assert!(
        stdout.contains("commit(s) durable but not yet answered")
            && stdout.contains("the broker redelivered the committed batch"),
        "receiver-crash-after-commit lands between commit and accept:\n{stdout}"
    );
    assert!(
        stdout.contains("transaction(s) not yet committed"),
        "receiver-crash-before-commit lands before commit:\n{stdout}"
    );
    assert!(stdout.contains("scenario apphost-killed: passed"), "{stdout}");
    assert_eq!(docker_leftovers().await, Vec::<String>::new());
}

/// The duplicate-effect count reads the effect itself: when an acknowledged
/// item's row says it was applied twice, the scenario fails and says so,
/// also after the receiver was killed and restarted (its counters start
/// again; the row does not). The test raises `applied` on a row of the
/// restarted receiver with `psql`, as a second application would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_application_of_an_item_fails_the_scenario() {
    let _one = ONE_STACK.lock().await;
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("watched.yaml");
    std::fs::write(&file, "name: watched\nsteps:\n  - load: { rate: 20 }\n  - wait: 3s\n  - chaos: { action: kill, resource: receiver }\n  - wait: { healthy: receiver }\n  - wait: 20s\n  - stop-load\n").unwrap();
    let run = apphost(&state)
        .args(["test", "--runtime", "process", "--no-build", "--settle", "5s", "--scenario"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Running::collect(run);

    // Once the restarted receiver has stored items, count one of them applied twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let doubled = loop {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("the scenario ended ({status}) before a row could be doubled:\n{}", run.output());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver stored nothing after its restart:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(ps) = helpers::ps(&state).await else { continue };
        let restarted =
            ps.iter().any(|s| s["name"] == "receiver" && s["restarts"].as_u64() >= Some(1) && s["state"] == "healthy");
        let Some(port) = ps.iter().find(|s| s["name"] == "receiver-db").and_then(|s| {
            s["endpoints"].as_array()?.iter().find_map(|e| e["url"].as_str()?.rsplit(':').next()?.parse::<u16>().ok())
        }) else {
            continue;
        };
        if !restarted {
            continue;
        }
        let secrets: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("secrets.json")).unwrap()).unwrap();
        let password = secrets["passwords"]["receiver-db"].as_str().unwrap().to_owned();
        let sql = "UPDATE entity_items SET applied = applied + 1 \
                   WHERE id = (SELECT id FROM entity_items ORDER BY received_at DESC LIMIT 1) RETURNING id";
        let psql = tokio::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "apphost", "-d", "receiver", "-Atc", sql])
            .env("PGPASSWORD", &password)
            .env("PGCONNECT_TIMEOUT", "5")
            .kill_on_drop(true)
            .output();
        let Ok(out) = tokio::time::timeout(Duration::from_secs(10), psql).await else { continue };
        let out = out.expect("psql (Debian's postgresql-client)");
        let doubled =
            String::from_utf8_lossy(&out.stdout).lines().find(|l| !l.starts_with("UPDATE")).unwrap_or("").to_owned();
        if out.status.success() && !doubled.is_empty() {
            break doubled;
        }
    };

    let status = run.wait_exit(Duration::from_secs(300)).await;
    let stdout = run.output();
    assert!(!status.success(), "item {doubled} was applied twice, yet:\n{stdout}");
    assert!(stdout.contains("lost 0, duplicate effects 1"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

/// The receiver's deduplication is what keeps a redelivery from a second
/// effect, and the scenarios see it when it is gone: the `redelivery` and
/// `receiver-crash-after-commit` scenarios, which pass against the real
/// receiver, fail against one built with the `no-dedup` feature (a binary no
/// user build has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_without_deduplication_fails_the_redelivery_scenarios() {
    let _one = ONE_STACK.lock().await;
    let stdout = run_mutant("no-dedup", &["redelivery", "receiver-crash-after-commit"]).await;
    assert!(stdout.contains("the receiver applied it again"), "{stdout}");
    assert!(stdout.contains("scenario redelivery: FAILED") && stdout.contains("duplicate effects 1,"), "{stdout}");
    assert!(stdout.contains("scenario receiver-crash-after-commit: FAILED"), "{stdout}");
    assert!(stdout.contains("the broker redelivered the committed batch"), "{stdout}");
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
}

/// Accepting before the commit loses what a crash catches in between, and
/// the `receiver-crash-before-commit` scenario, which passes against the
/// real receiver, reports it lost against one built with the
/// `accept-before-commit` feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_accepts_before_its_commit_fails_the_crash_scenario() {
    let _one = ONE_STACK.lock().await;
    let stdout = run_mutant("accept-before-commit", &["receiver-crash-before-commit"]).await;
    assert!(stdout.contains("scenario receiver-crash-before-commit: FAILED"), "{stdout}");
    assert!(stdout.contains("transaction(s) not yet committed"), "{stdout}");
    assert!(stdout.contains("acknowledged items never reached the receiver"), "{stdout}");
    // Each lost item is named with the trace its request started (found in apphost's OTLP store).
    assert!(stdout.contains("(trace ") && stdout.contains("`apphost trace "), "{stdout}");
    assert!(!stdout.contains(", lost 0,"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

/// Runs `scenarios` on the process runtime against the receiver built with
/// test-only `feature` (binary `receiver-FEATURE`); the run must fail. Its stdout.
async fn run_mutant(feature: &str, scenarios: &[&str]) -> String {
    let workspace = helpers::workspace();
    let bin = format!("receiver-{feature}");
    let built = tokio::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "receiver", "--bin", &bin, "--features", &format!("receiver/{feature}")])
        .current_dir(&workspace)
        .output()
        .await
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(workspace.join("target"), std::path::PathBuf::from);
    let (sender, mutant) = (target.join("debug/sender"), target.join("debug").join(&bin));
    assert!(sender.exists() && mutant.exists(), "{} and {}", sender.display(), mutant.display());

    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("mutant.yaml");
    let service = |name: &str, program: &std::path::Path, db: &str| {
        format!(
            "  {name}:\n    kind: executable\n    command: {}\n    ports: [{{ name: http }}]\n    health: {{ http: /health/ready }}\n    references: [{db}, broker]\n    wait_for: [{db}, broker]\n",
            program.display()
        )
    };
    let topology = format!(
        "name: mutant\nresources:\n  sender-db: {{ kind: postgres, database: sender }}\n  receiver-db: {{ kind: postgres, database: receiver }}\n  broker:\n    kind: artemis\n    health: {{ amqp: amqp, start_period: 60s }}\n{}{}",
        service("sender", &sender, "sender-db"),
        service("receiver", &mutant, "receiver-db"),
    );
    std::fs::write(&file, topology).unwrap();
    let mut test = apphost(&state);
    test.args(["test", "--runtime", "process", "--settle", "20s", "-f"]).arg(&file);
    for scenario in scenarios {
        test.args(["--scenario", scenario]);
    }
    let out = test.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "the receiver built with `{feature}` passed:\n{stdout}");
    stdout
}

/// With what a resource waits for failed for good, `apphost up -d` does not
/// wait out its 15-minute deadline: it exits non-zero at once, naming the
/// root cause and what it blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_detached_fails_fast_naming_the_root_cause() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("broken.yaml");
    std::fs::write(
        &file,
        "name: broken\nresources:\n  broken: { kind: executable, command: /nonexistent/apphost-test-program }\n  web:\n    kind: executable\n    command: sleep\n    args: [\"300\"]\n    wait_for: { broken: started }\n",
    )
    .unwrap();
    let up = apphost(&state).args(["up", "-d", "-f"]).arg(&file).output();
    let out = tokio::time::timeout(Duration::from_secs(120), up).await.expect("up -d gave up waiting").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("`broken` failed: cannot start"), "the root cause is named:\n{stderr}");
    assert!(stderr.contains("web") && stderr.contains("blocked: `broken` failed"), "and what it blocks:\n{stderr}");
    assert!(!stderr.contains("port"), "no hint that does not fit:\n{stderr}");
    let down = apphost(&state).args(["down", "-f"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}

/// Two folders with the same app name on one engine: the second `up` is
/// refused, naming the first's state folder, and neither its `up` nor its
/// `down` touches the first stack's container or network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_app_from_another_folder_is_refused_and_never_touched() {
    let (first, second) = (helpers::StateDir::new(), helpers::StateDir::new());
    let topology = "name: twin-stack\nresources:\n  db: { kind: postgres }\n";
    for state in [&first, &second] {
        std::fs::create_dir_all(state).unwrap();
        std::fs::write(state.join("twin.yaml"), topology).unwrap();
    }
    let up = |state: &helpers::StateDir| {
        let mut c = apphost(state);
        c.args(["up", "-d", "--runtime", "docker", "-f"]).arg(state.join("twin.yaml"));
        c
    };
    let started = up(&first).output().await.unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let docker = apphost::runtime::docker::connect().await.unwrap();
    let id = docker.inspect_container("twin-stack-db", None).await.unwrap().id;

    let refused = up(&second).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("another apphost runs an app called `twin-stack`"), "{stderr}");
    assert!(stderr.contains(&first.display().to_string()), "names the other state folder:\n{stderr}");
    let down = apphost(&second).args(["down", "-f"]).arg(second.join("twin.yaml")).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));

    let still = docker.inspect_container("twin-stack-db", None).await.expect("the first stack's container is there");
    assert_eq!(still.id, id, "the same container");
    assert_eq!(still.state.and_then(|s| s.running), Some(true), "still running");
    assert!(docker.inspect_network("twin-stack", None).await.is_ok(), "its network too");
    let down = apphost(&first).args(["down", "-f"]).arg(first.join("twin.yaml")).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(docker.inspect_container("twin-stack-db", None).await.is_err(), "its own down removes it");
}

/// A PostgreSQL container has room in `/dev/shm` for a parallel query's
/// shared memory: 100 MB fit there, where docker's default holds 64 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_container_gets_room_for_shared_memory() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("shm.yaml");
    std::fs::write(&file, "name: shm-stack\nresources:\n  db: { kind: postgres }\n").unwrap();
    let up = apphost(&state).args(["up", "-d", "--runtime", "docker", "-f"]).arg(&file).output().await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let docker = apphost::runtime::docker::connect().await.unwrap();
    let inspected = docker.inspect_container("shm-stack-db", None).await.unwrap();
    let shm = inspected.host_config.and_then(|h| h.shm_size);
    let write = std::process::Command::new("docker")
        .args(["exec", "shm-stack-db", "sh", "-c", "head -c 100000000 /dev/zero > /dev/shm/apphost-probe"])
        .output()
        .unwrap();
    let down = apphost(&state).args(["down", "-f"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(write.status.success(), "100 MB fit in /dev/shm: {}", String::from_utf8_lossy(&write.stderr));
    assert_eq!(shm, Some(256 << 20), "the container's ShmSize");
}

/// The broker's `artemis create` is done at the first `up` and kept in a
/// volume, which `down` keeps, with the class-data archive its clean stop
/// writes; the broker's data is not kept: a message sent before a `down` is
/// gone after the next `up`. A kept set-up that was cut short is made again,
/// not used; a missing archive is made at the next clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_setup_is_kept_across_ups_and_its_data_is_not() {
    // Dropped last, after the state's teardown: a volume in use cannot go.
    let _cleanup = RemoveSetups("setup-stack");
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("setup.yaml");
    std::fs::write(&file, "name: setup-stack\nresources:\n  broker: { kind: artemis }\n").unwrap();
    let up = || up_on_docker(&state, &file);
    let down = || down_of(&state, &file);
    // An AMQP peer on the broker's port, as the app's user (the password from the state's secrets).
    let broker_url = || async {
        let out = apphost(&state).args(["ps", "--json", "-f"]).arg(&file).output().await.unwrap();
        let ps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("ps --json");
        let port = helpers::endpoint(&ps, "broker", "amqp").rsplit(':').next().unwrap().to_owned();
        let secrets: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("secrets.json")).unwrap()).unwrap();
        let password = secrets["passwords"]["broker"].as_str().unwrap().to_owned();
        format!("amqp://apphost:{password}@127.0.0.1:{port}")
    };
    let docker = apphost::runtime::docker::connect().await.unwrap();
    let kept = || async {
        use bollard::query_parameters::ListVolumesOptionsBuilder;
        let owner = format!("apphost.owner={}", apphost::runtime::docker::owner_of(&state));
        let label = std::collections::HashMap::from([(
            "label",
            vec!["apphost.app=setup-stack", "apphost.setup", owner.as_str()],
        )]);
        let listed = docker.list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&label).build())).await;
        listed.unwrap().volumes.unwrap_or_default().into_iter().map(|v| v.name).collect::<Vec<_>>()
    };
    // A command on the kept volume, in a container of the broker's image.
    let on_volume = |volume: String, args: &'static [&'static str]| {
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", "-v", &format!("{volume}:/i"), "--entrypoint", args[0]])
            .arg("apache/activemq-artemis:2.40.0")
            .args(&args[1..])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Each up's own lines of the log (the log keeps earlier ones).
    let mut seen = 0;
    let mut this_up = |log: String| {
        let new = log[seen.min(log.len())..].to_owned();
        seen = log.len();
        new
    };

    let first = this_up(up().await);
    assert!(first.contains("its first start sets it up"), "{first}");
    probe_send(&broker_url().await).await;
    down().await;
    let volumes = kept().await;
    assert_eq!(volumes.len(), 1, "down keeps the set-up: {volumes:?}");
    assert!(on_volume(volumes[0].clone(), &["test", "-s", "/i/apphost.jsa"]).0, "a clean stop writes the archive");

    let second = this_up(up().await);
    assert!(second.contains("reusing the set-up of an earlier start"), "{second}");
    assert!(second.contains(", warm)"), "the archive is used: {second}");
    assert!(!second.contains("[cds]"), "the JVM's archive warnings are off: {second}");
    assert_eq!(probe_count(&broker_url().await).await, 0, "the earlier up's message is gone");
    down().await;

    // The archive gone (a kill before it was written): used no more, made again.
    assert!(on_volume(volumes[0].clone(), &["rm", "/i/apphost.jsa"]).0);
    let third = this_up(up().await);
    assert!(third.contains("reusing the set-up of an earlier start"), "{third}");
    assert!(!third.contains(", warm)"), "{third}");
    down().await;
    assert!(on_volume(volumes[0].clone(), &["test", "-s", "/i/apphost.jsa"]).0, "made again at the clean stop");

    // Cut short: a file of the set-up is missing.
    assert!(on_volume(volumes[0].clone(), &["rm", "/i/etc/bootstrap.xml"]).0);
    let fourth = this_up(up().await);
    assert!(fourth.contains("is incomplete: making it again"), "{fourth}");
    down().await;
    assert!(helpers::docker_leftovers_of("setup-stack").await.is_empty(), "only the set-up is left");
    assert_eq!(kept().await.len(), 1, "one set-up volume");
}

/// A database's `initdb` is done once, in a container of its own, and kept
/// as an image; each `up` starts a new container of it: set up, and empty.
/// The image's configuration does not hold the password it was made with.
/// `down --volumes` removes the set-up and a persistent resource's data, and
/// nothing another apphost owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databases_setup_is_kept_as_an_image_and_its_data_is_not() {
    let _cleanup = RemoveSetups("pgsetup-stack");
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("pgsetup.yaml");
    std::fs::write(
        &file,
        "name: pgsetup-stack\nresources:\n  db: { kind: postgres, database: kept }\n  keep: { kind: postgres, persistent: true }\n",
    )
    .unwrap();
    let up = || up_on_docker(&state, &file);
    let down = || down_of(&state, &file);
    let password = || {
        let secrets: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("secrets.json")).unwrap()).unwrap();
        secrets["passwords"]["db"].as_str().unwrap().to_owned()
    };
    let (state_ref, file_ref) = (&state, &file);
    let psql = |sql: &'static str| async move {
        let (state, file) = (state_ref, file_ref);
        let out = apphost(state).args(["ps", "--json", "-f"]).arg(file).output().await.unwrap();
        let ps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("ps --json");
        let port = helpers::endpoint(&ps, "db", "tcp").rsplit(':').next().unwrap().to_owned();
        let secrets: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("secrets.json")).unwrap()).unwrap();
        let out = tokio::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "apphost", "-d", "kept", "-Atc", sql])
            .env("PGPASSWORD", secrets["passwords"]["db"].as_str().unwrap())
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .await
            .expect("psql (Debian's postgresql-client)");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };

    let first = up().await;
    assert!(first.contains("its first start sets it up, kept in image"), "{first}");
    psql("CREATE TABLE left_behind (x int); INSERT INTO left_behind VALUES (1)").await;
    down().await;
    let images = setup_images("pgsetup-stack");
    assert_eq!(images.len(), 1, "down keeps the set-up: {images:?}");
    let inspected = std::process::Command::new("docker").args(["image", "inspect", &images[0]]).output().unwrap();
    let config = String::from_utf8_lossy(&inspected.stdout);
    assert!(!config.contains(&password()), "the image's configuration holds the password");

    let second = up().await;
    assert!(second.contains("reusing the set-up of an earlier start (image"), "{second}");
    assert_eq!(psql("SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'").await, "0", "data is not kept");
    assert_eq!(psql("SELECT current_user || ' ' || current_database()").await, "apphost kept");
    down().await;
    assert_eq!(setup_images("pgsetup-stack").len(), 1, "one set-up image");
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker").args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    assert!(docker(&["volume", "inspect", "pgsetup-stack-keep-data"]).0, "down keeps the persistent data");

    // `down --volumes` removes them, and nothing of another owner's.
    let foreign = ["--label", "apphost.app=pgsetup-stack", "--label", "apphost.setup=true"];
    let owner = ["--label", "apphost.owner=elsewhere:/srv/other"];
    assert!(docker(&[&["volume", "create"][..], &foreign, &owner, &["pgsetup-stack-other-setup"]].concat()).0);
    let built = std::process::Command::new("docker")
        .args([&["build", "-q", "-t", "apphost-setup/pgsetup-stack-other:x"][..], &foreign, &owner, &["-"]].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"FROM postgres:15\n")?;
            c.wait()
        })
        .unwrap();
    assert!(built.success(), "a foreign set-up image");
    // A container with the app's label and no owner: what compose runs from an image
    // that carries the label (an older `apphost build-images` put it on its images).
    let stranger = RemoveContainer("pgsetup-stack-compose-db-1");
    let inherited = ["--label", "apphost.app=pgsetup-stack", "--label", "apphost.resource=db"];
    assert!(docker(&[&["create", "--name", stranger.0][..], &inherited, &["postgres:15"]].concat()).0);
    let out = apphost(&state).args(["down", "--volumes", "-f"]).arg(&file).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("removed image apphost-setup/pgsetup-stack-db:"), "{said}");
    assert!(said.contains("removed container pgsetup-stack-keep and its volume pgsetup-stack-keep-data"), "{said}");
    assert!(docker(&["container", "inspect", stranger.0]).0, "a container without this owner's label stays: {said}");
    drop(stranger);
    assert!(helpers::docker_leftovers_of("pgsetup-stack").await.is_empty(), "nothing of the stack is left");
    assert!(!docker(&["volume", "inspect", "pgsetup-stack-keep-data"]).0, "the persistent data is gone");
    assert_eq!(setup_images("pgsetup-stack").len(), 1, "only the other owner's set-up image is left");
    assert!(docker(&["image", "inspect", "apphost-setup/pgsetup-stack-other:x"]).0, "the other owner's image stays");
    assert!(docker(&["volume", "inspect", "pgsetup-stack-other-setup"]).0, "the other owner's volume stays");
}

/// `apphost up -d` of `file` on the docker runtime; the state's log after.
async fn up_on_docker(state: &std::path::Path, file: &std::path::Path) -> String {
    let out = apphost(state).args(["up", "-d", "--runtime", "docker", "-f"]).arg(file).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(state.join("apphost.log")).unwrap_or_default()
}

/// `apphost down` of `file`.
async fn down_of(state: &std::path::Path, file: &std::path::Path) {
    let out = apphost(state).args(["down", "-f"]).arg(file).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// App `app`'s kept set-up images, by id.
fn setup_images(app: &str) -> Vec<String> {
    let filter = format!("label=apphost.app={app}");
    let listed = std::process::Command::new("docker")
        .args(["image", "ls", "-q", "--filter", &filter, "--filter", "label=apphost.setup"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect()
}

/// Removes the container named `.0` when dropped, the test passing or not.
struct RemoveContainer(&'static str);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rm", "-f", self.0]).output();
    }
}

/// Removes app `.0`'s volumes and set-up images when dropped, the test passing or not.
struct RemoveSetups(&'static str);

impl Drop for RemoveSetups {
    fn drop(&mut self) {
        let filter = format!("label=apphost.app={}", self.0);
        let listed = std::process::Command::new("docker").args(["volume", "ls", "-q", "--filter", &filter]).output();
        for name in String::from_utf8_lossy(&listed.map(|o| o.stdout).unwrap_or_default()).split_whitespace() {
            let _ = std::process::Command::new("docker").args(["volume", "rm", "-f", name]).output();
        }
        for id in setup_images(self.0) {
            let _ = std::process::Command::new("docker").args(["image", "rm", "-f", &id]).output();
        }
    }
}

/// Sends one durable message to the queue `apphost-probe`, settled Accepted.
async fn probe_send(url: &str) {
    use fe2o3_amqp::{
        Connection, Sender, Session,
        types::messaging::{Header, Message, Target},
        types::primitives::Symbol,
    };
    let mut connection = Connection::open("apphost-probe", url).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let target = Target::builder().address("apphost-probe").capabilities(vec![Symbol::from("queue")]).build();
    let mut sender = Sender::builder().name("probe-sender").target(target).attach(&mut session).await.unwrap();
    let message = Message::builder().header(Header { durable: true, ..Default::default() }).value("probe").build();
    sender.send(message).await.unwrap().accepted_or_else(|o| o).expect("accepted");
    sender.close().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();
}

/// How many messages the queue `apphost-probe` gives within 3 s of quiet (taking them).
async fn probe_count(url: &str) -> usize {
    use fe2o3_amqp::{
        Connection, Receiver, Session,
        types::messaging::{Body, Source},
        types::primitives::{Symbol, Value},
    };
    let mut connection = Connection::open("apphost-probe", url).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let source = Source::builder().address("apphost-probe").capabilities(vec![Symbol::from("queue")]).build();
    let mut receiver = Receiver::builder().name("probe-receiver").source(source).attach(&mut session).await.unwrap();
    let mut count = 0;
    while let Ok(Ok(delivery)) = tokio::time::timeout(Duration::from_secs(3), receiver.recv::<Body<Value>>()).await {
        receiver.accept(&delivery).await.unwrap();
        count += 1;
    }
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    count
}

/// Two `up`s at once in one folder: the state's lock lets one start the app
/// and refuses the other, which says so and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ups_at_once_start_one_stack() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("nap.yaml");
    std::fs::write(&file, "name: nap\nresources:\n  nap: { kind: executable, command: sleep, args: [\"300\"] }\n")
        .unwrap();
    let up = || apphost(&state).args(["up", "-d", "-f"]).arg(&file).output();
    let (a, b) = tokio::join!(up(), up());
    let (a, b) = (a.unwrap(), b.unwrap());
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    let loser = if a.status.success() { &b } else { &a };
    let said = format!("{}{}", String::from_utf8_lossy(&loser.stdout), String::from_utf8_lossy(&loser.stderr));
    assert_eq!(wins, 1, "exactly one up succeeds:\n{said}");
    assert!(said.contains("already running") || said.contains("is starting"), "the other says why:\n{said}");
    let ps = apphost(&state).args(["ps", "--json", "-f"]).arg(&file).output().await.unwrap();
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "one instance of `nap`: {ps}");
    let down = apphost(&state).args(["down", "-f"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}

/// A paused broker is not healthy: its health is an AMQP open handshake,
/// which a stopped process cannot answer although the kernel still accepts
/// its TCP connections (a log line, once seen, would keep it healthy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_turns_unhealthy_and_recovers_when_resumed() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("mq.yaml");
    std::fs::write(
        &file,
        "name: paused-mq\nresources:\n  mq:\n    kind: artemis\n    health: { amqp: amqp, start_period: 60s, interval: 500ms, timeout: 1s, retries: 2 }\n    restart: no\n",
    )
    .unwrap();
    let up = apphost(&state).args(["up", "-d", "--runtime", "process", "-f"]).arg(&file).output().await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let health = async || {
        let ps = apphost(&state).args(["ps", "--json", "-f"]).arg(&file).output().await.unwrap();
        let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap_or_default();
        ps[0]["state"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(health().await, "healthy");
    // Paused for 20 s, then resumed by apphost itself.
    let pause = apphost(&state).args(["chaos", "-f"]).arg(&file).args(["pause", "mq", "--for", "20s"]).output();
    assert!(pause.await.unwrap().status.success());
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(18);
    while seen.last().is_none_or(|s: &String| s != "unhealthy") && std::time::Instant::now() < deadline {
        seen.push(health().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen.last().map(String::as_str), Some("unhealthy"), "paused: {seen:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while health().await != "healthy" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(health().await, "healthy", "resumed");
    let down = apphost(&state).args(["down", "-f"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}

/// A SIGKILLed apphost leaves nothing, without anyone running `down`: its
/// reaper kills the processes it started, also a grandchild that left its
/// process group (`setsid`), and removes the session file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apphost_is_cleaned_up_by_its_reaper_without_down() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("orphans.yaml");
    let marker = format!("{}", 300 + std::process::id() % 600);
    std::fs::write(
        &file,
        format!(
            "name: orphans\nresources:\n  parent:\n    kind: executable\n    command: sh\n    args: [\"-c\", \"setsid sleep {marker}.5 & sleep {marker}.25\"]\n"
        ),
    )
    .unwrap();
    let up = apphost(&state).args(["up", "-d", "-f"]).arg(&file).output().await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let sleeping = || {
        let out = std::process::Command::new("pgrep").args(["-f", &format!("^sleep {marker}\\.")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sleeping() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sleeping(), 2, "the child and the grandchild that left its group run");
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("session.json")).unwrap()).unwrap();
    let pid = session["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the apphost this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (sleeping() > 0 || state.join("session.json").exists()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sleeping(), 0, "no process outlives the killed apphost");
    assert!(!state.join("session.json").exists(), "nor its session file");
    let ps = apphost(&state).args(["ps", "-f"]).arg(&file).output().await.unwrap();
    assert!(
        !ps.status.success()
            || String::from_utf8_lossy(&ps.stdout).trim().is_empty()
            || !String::from_utf8_lossy(&ps.stdout).contains("parent")
    );
}

/// `apphost logs -f` keeps following past the control client's 120 s
/// request timeout (the stream has no total timeout, only its connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_keeps_streaming_past_two_minutes() {
    use tokio::io::AsyncBufReadExt;
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("ticks.yaml");
    std::fs::write(
        &file,
        "name: ticks\nresources:\n  ticker: { kind: executable, command: sh, args: [\"-c\", \"while :; do echo tick; sleep 1; done\"] }\n",
    )
    .unwrap();
    let up = apphost(&state).args(["up", "-d", "--file"]).arg(&file).output().await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let mut follow = apphost(&state)
        .args(["logs", "--file"])
        .arg(&file)
        .args(["-f", "-n", "0", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let started = std::time::Instant::now();
    let mut late = 0;
    while started.elapsed() < Duration::from_secs(135) {
        match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("tick") => {
                if started.elapsed() > Duration::from_secs(125) {
                    late += 1;
                }
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("the stream ended after {:?}: {other:?}", started.elapsed()),
        }
    }
    assert!(late >= 3, "lines still arrive after 125 s: {late}");
    let _ = follow.kill().await;
    let down = apphost(&state).args(["down", "--file"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}

/// A Podman socket (Debian's podman 4.3, `.ci/setup` starts it) is spoken to
/// as a Docker engine: the API version is negotiated, the image `podman
/// load` named `localhost/postgres:15` is found as `postgres:15`, and the
/// container is created. On this machine its runtime cannot start it
/// (`setrlimit`: operation not permitted); apphost then fails at once,
/// showing the engine's error with the fitting hint. Either way `down`
/// leaves nothing on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podman_socket_is_spoken_to_as_a_docker_engine() {
    let socket = std::env::var("APPHOST_PODMAN_SOCKET").unwrap_or_else(|_| "/run/apphost-podman.sock".into());
    assert!(std::path::Path::new(&socket).exists(), "no Podman socket at {socket}: `.ci/setup` starts one");
    let host = format!("unix://{socket}");
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("podman.yaml");
    std::fs::write(&file, "name: on-podman\nresources:\n  db: { kind: postgres }\n").unwrap();
    let run = |args: &[&str]| {
        let mut c = apphost(&state);
        c.env("DOCKER_HOST", &host).args(args).arg("-f").arg(&file);
        c
    };
    let up = tokio::time::timeout(Duration::from_secs(180), run(&["up", "-d", "--runtime", "docker"]).output())
        .await
        .expect("up -d answered")
        .unwrap();
    let said = String::from_utf8_lossy(&up.stderr).into_owned() + &String::from_utf8_lossy(&up.stdout);
    assert!(
        !said.contains("no API version fits") && !said.contains("cannot be pulled"),
        "negotiated, image found:\n{said}"
    );
    if up.status.success() {
        assert!(said.contains("every resource is healthy"), "{said}");
    } else {
        assert!(
            said.contains("cannot start container `on-podman-db`"),
            "the container was created, then refused:\n{said}"
        );
        assert!(said.contains("OCI permission denied") && said.contains("rootless or nested engine"), "{said}");
        assert!(!said.contains("port"), "no hint that does not fit:\n{said}");
    }
    let down = run(&["down"]).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let engine = bollard::Docker::connect_with_unix(&socket, 10, bollard::API_DEFAULT_VERSION).unwrap();
    let engine = engine.negotiate_version().await.unwrap();
    let left = apphost::runtime::docker::leftovers(&engine, "on-podman").await;
    assert!(left.is_empty(), "left on the Podman socket: {left:?}");
}

/// The control API, given hostile requests with a valid token (absurd
/// numbers, unknown names, a name of 300 KB, wrong types), answers each
/// with a client error or a bounded answer, and goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_answers_hostile_requests_and_goes_on() {
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("calm.yaml");
    std::fs::write(&file, "name: calm\nresources:\n  nap: { kind: executable, command: sleep, args: [\"300\"] }\n")
        .unwrap();
    let up = apphost(&state).args(["up", "-d", "-f"]).arg(&file).output().await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("session.json")).unwrap()).unwrap();
    let (base, token) =
        (format!("http://127.0.0.1:{}", session["port"]), session["token"].as_str().unwrap().to_owned());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let long = "n".repeat(300 * 1024);
    for (method, path) in [
        ("GET", "/v1/logs?tail=18446744073709551615".to_owned()),
        ("GET", "/v1/logs?tail=-1".to_owned()),
        ("GET", "/v1/logs?resource=nobody".to_owned()),
        ("GET", "/v1/view?limit=18446744073709551615".to_owned()),
        ("GET", "/v1/view?since=banana".to_owned()),
        ("POST", "/v1/resources/nobody/stop".to_owned()),
        ("POST", "/v1/resources/nap/explode".to_owned()),
        ("POST", format!("/v1/resources/{long}/stop")),
        ("GET", "/v1/../../etc/passwd".to_owned()),
    ] {
        let request = client.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(&token);
        match request.send().await {
            Ok(answer) => {
                let status = answer.status();
                let body = answer.bytes().await.unwrap_or_default();
                assert!(status.is_success() || status.is_client_error(), "{method} {:.60}: {status}", path);
                assert!(body.len() < 8 * 1024 * 1024, "{method} {:.60}: a bounded answer ({} bytes)", path, body.len());
            }
            // A request line too long for the HTTP layer may be cut off; the server goes on.
            Err(e) => assert!(path.len() > 64 * 1024, "{method} {:.60}: {e}", path),
        }
    }
    let ps = client.get(format!("{base}/v1/ps")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ps.status(), 200, "still serving");
    let ps: serde_json::Value = ps.json().await.unwrap();
    assert_eq!(ps[0]["state"], "healthy", "and nothing was done to `nap`: {ps}");
    let down = apphost(&state).args(["down", "-f"]).arg(&file).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}

/// The pid of the `apphost reaper` watching the app in state folder `state`.
fn reaper_of(state: &std::path::Path) -> Option<u32> {
    let marker = format!("APPHOST_STATE_DIR={}", state.display());
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        cmdline.split(|b| *b == 0).any(|arg| arg == b"reaper")
            && environ.split(|b| *b == 0).any(|var| var == marker.as_bytes())
    })
}

/// The brokers apphost starts block producers only below an absolute floor of
/// free disk (`min-disk-free`, 1 GiB), not at Artemis's default share of 90 %
/// of the disk, which on a large disk blocks with tens of gigabytes free. Two
/// brokers on the process runtime: one as apphost starts it (its JVM gets the
/// floor), one whose floor is set above any disk's free space through the
/// same variable, which Artemis obeys: it blocks producers and apphost says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_blocks_only_below_its_floor_of_free_disk_and_says_so() {
    let _one = ONE_STACK.lock().await;
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("floor.yaml");
    std::fs::write(
        &file,
        "name: disk-floor\nresources:\n  mq: { kind: artemis }\n  mq-full:\n    kind: artemis\n    env: { JAVA_ARGS_APPEND: \"-Dbrokerconfig.minDiskFree=1000000000000000000\" }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = apphost(&state);
        c.args(args).arg("--file").arg(&file);
        c
    };
    let up = run(&["up", "-d", "--runtime", "process"]).output().await.unwrap();
    let said = String::from_utf8_lossy(&up.stderr).into_owned();
    let mut cmdline = String::new();
    let mut events = String::new();
    if up.status.success() {
        let ps = run(&["ps", "--json"]).output().await.unwrap();
        let ps: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap_or_default();
        let pid = ps
            .iter()
            .find(|s| s["name"] == "mq")
            .and_then(|s| s["id"].as_str()?.strip_prefix("pid "))
            .unwrap_or("0")
            .to_owned();
        cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        // Artemis scans its disk every 5 s once it is active.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !events.contains("disk full") && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let out = run(&["logs", "--events", "mq-full"]).output().await.unwrap();
            events = String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    let down = run(&["down"]).output().await.unwrap();
    assert!(up.status.success(), "{said}");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(cmdline.contains("-Dbrokerconfig.minDiskFree=1073741824"), "the broker's JVM: {cmdline}");
    assert!(cmdline.contains("-Dbrokerconfig.journalBufferTimeout=100000"), "the broker's JVM: {cmdline}");
    assert!(cmdline.contains("-XX:ParallelGCThreads=1 -XX:ConcGCThreads=1"), "the broker's JVM: {cmdline}");
    assert!(events.contains("disk full: Artemis blocks producers"), "no event for the blocked broker:\n{events}");
}

/// A command that only prints ends quietly when its reader goes away, as
/// `apphost ps --json | head` does: killed by SIGPIPE, no panic on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printing_command_whose_reader_is_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    for args in [&["schema"][..], &["completions", "bash"][..]] {
        let mut child = apphost(&state)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {stderr}", out.status);
    }
}

/// The benchmark, CI-sized (seconds): it still starts what it needs, runs
/// every measurement with its reference, checks delivery, and writes its
/// figures. Only that it runs is checked here, never a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_quick_and_writes_its_figures() {
    let _one = ONE_STACK.lock().await;
    let state = helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let out_file = state.join("benchmarks.md");
    let out = apphost(&state)
        .args(["bench", "--quick", "--debug", "--no-build", "--runtime", "process", "--out"])
        .arg(&out_file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("scenario bench: passed"), "{stdout}");
    let report = std::fs::read_to_string(&out_file).unwrap();
    for wanted in
        ["`pgbench`, the same transaction", "req/s", "outbox lag", "end to end", "POST/s offered", "apphost bench"]
            .into_iter()
            // The most a ratio to pgbench can be here, from the closed loop's CPU per item.
            .chain(["| the pipeline's CPU ceiling here: "])
            // The settings the figures were taken with, as the services and the broker got them.
            .chain(["**Settings:** sender: `port=", "relays=4", "batch_wait=3ms", "journalBufferTimeout=100000"])
    {
        assert!(report.contains(wanted), "no `{wanted}` in:\n{report}");
    }
    // Each stage of a message's time has figures, from both services.
    for stage in ["| waiting in the outbox |", "| broker accept |", "| receiver batch wait |", "| receiver commit |"] {
        let row = report.lines().find(|l| l.starts_with(stage)).unwrap_or_else(|| panic!("no {stage} in:\n{report}"));
        assert!(row.contains(" ms / ") && row.ends_with(" ms |"), "{row}");
    }
    // Every acknowledged item was found at the receiver, and there were some.
    let line = report.lines().find(|l| l.starts_with("Every acknowledged item")).unwrap();
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(numbers.len() == 2 && numbers[0] > 0 && numbers[0] == numbers[1], "{line}");
    assert!(!state.join("session.json").exists() && !state.join("run").exists(), "bench tears down");
}

/// `cargo run -p apphost` and apphost's build of the services (`-p sender -p
/// receiver -p apphost`) must resolve the same features for every package,
/// or a fresh clone compiles the shared dependencies twice.
#[test]
fn apphost_and_its_build_of_the_services_resolve_the_same_features() {
    let tree = |packages: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO"));
        command.current_dir(helpers::workspace()).args(["tree", "--offline", "-e", "normal,build"]);
        for p in packages {
            command.args(["-p", p]);
        }
        let out = command.args(["--prefix", "none", "--format", "{p} [{f}]"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Each package once, with its features; cargo marks repeats with (*).
        let mut lines: Vec<String> =
            text.lines().map(|l| l.trim_end_matches(" (*)").to_owned()).filter(|l| !l.is_empty()).collect();
        lines.sort();
        lines.dedup();
        lines
    };
    let alone = tree(&["apphost"]);
    let with_services = tree(&["apphost", "sender", "receiver"]);
    let only_in = |a: &[String], b: &[String]| a.iter().filter(|l| !b.contains(l)).cloned().collect::<Vec<_>>();
    assert_eq!(only_in(&with_services, &alone), Vec::<String>::new(), "features differ");
    assert_eq!(only_in(&alone, &with_services), Vec::<String>::new(), "features differ");
}
