//! The dashboard in a real terminal: `apphost up` under tmux on the demo
//! stack, read with `capture-pane`, driven with `send-keys`.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::helpers::{ONE_STACK, alive, docker_leftovers, endpoint, pids, workspace};

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    /// The apphost state folder and topology, for a `down` should the test fail midway.
    state: PathBuf,
    topology: PathBuf,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str, state: PathBuf) -> Self {
        let socket = format!("apphost-test-{}", uuid::Uuid::new_v4().simple());
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                command,
            ])
            .env_remove("TMUX")
            .status()
            .expect("tmux (`.ci/setup` installs it)");
        assert!(status.success(), "tmux new-session failed");
        Self { socket, state, topology: workspace().join("apphost.yaml") }
    }

    /// Kills the tmux server only (the terminal goes away), as a user closing the window.
    fn close(mut self) {
        self.state = PathBuf::new();
    }

    fn topology(mut self, file: PathBuf) -> Self {
        self.topology = file;
        self
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the terminal is as the shell wants it: line mode (the shell
    /// line's stty printed `icanon`), the main screen, no mouse reporting.
    fn given_back(&self, screen: &str) -> bool {
        let flag = |name: &str| {
            let out = Command::new("tmux")
                .args(["-L", &self.socket, "display-message", "-p", "-t", "t", &format!("#{{{name}}}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        screen.lines().any(|l| l.trim() == "icanon") && flag("alternate_on") == "0" && flag("mouse_any_flag") == "0"
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "t", key]).status().unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until `check` holds for the screen; panics with the screen if not.
    async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up after {limit:?} waiting for {what}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Whether the shell line below has run to its end: apphost's exit code and
/// then the line mode are printed, so a screen read between the two would
/// see no line mode at all and fail `given_back` on a terminal given back.
fn exited(screen: &str) -> bool {
    screen.contains("apphost exited:") && screen.lines().any(|l| matches!(l.trim(), "icanon" | "-icanon"))
}

/// A shell line for tmux: apphost with `args` on `file`, then its exit code
/// as `<what> exited: N`, then the terminal's line mode as stty names it
/// (`icanon` when it was given back, `-icanon` when left raw), then a pause
/// so the screen stays readable.
fn shell_line(state: &std::path::Path, file: &std::path::Path, args: &str, what: &str) -> String {
    format!(
        "APPHOST_STATE_DIR={} {} -f {} {args}; echo \"{what} exited: $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; sleep 300",
        state.display(),
        env!("CARGO_BIN_EXE_apphost"),
        file.display()
    )
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.state.as_os_str().is_empty() {
            let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
            return;
        }
        crate::helpers::down_now(&self.state, &self.topology, &[]);
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The value in the outbox pane's `label` row (`pending   200 ▁▂▃`).
fn outbox_value(screen: &str, label: &str) -> Option<f64> {
    screen.lines().find_map(|line| {
        let at = line.find(&format!("│{label} "))?;
        line[at + label.len() + 3..].split_whitespace().next()?.parse().ok()
    })
}

/// The resources pane's row of `name` ("" when it is not on screen).
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    let wanted = format!("{name} ");
    screen
        .lines()
        .find(|l| l.trim_start_matches(['┃', '│']).trim_start_matches(['▶', ' ']).starts_with(&wanted))
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_terminal_shows_the_stack_and_stops_the_broker() {
    let _one = ONE_STACK.lock().await;
    let state = crate::helpers::StateDir::new();
    let command = shell_line(&state, &workspace().join("apphost.yaml"), "up --no-build --runtime docker", "apphost");
    let tmux = Tmux::start(100, 30, &command, state.to_path_buf());
    let names = ["sender-db", "receiver-db", "broker", "sender", "receiver"];
    let screen = tmux
        .wait_for("every resource healthy", Duration::from_secs(240), |s| {
            names.iter().all(|n| row(s, n).contains("● healthy"))
        })
        .await;
    for name in names {
        let r = row(&screen, name);
        assert!(r.contains("running"), "{name}: {r}");
    }
    assert!(
        row(&screen, "broker").contains("docker") && row(&screen, "sender").contains("process"),
        "runtimes show:\n{screen}"
    );
    let screen = tmux
        .wait_for("the outbox numbers", Duration::from_secs(30), |s| {
            outbox_value(s, "pending") == Some(0.0) && s.contains("connected")
        })
        .await;
    assert!(screen.contains("Events") && screen.contains("Logs all"), "every pane is there:\n{screen}");

    let ps = crate::helpers::apphost(&state).args(["ps", "--json"]).output().await.unwrap();
    let ps: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).expect("ps --json");
    let pids = pids(&ps);
    let sender = endpoint(&ps, "sender", "http");

    // Select the broker, stop it, confirm.
    // (A key is drawn at the next frame, not at once: wait for it.)
    tmux.keys(&["Down", "Down"]);
    tmux.wait_for("the broker selected", Duration::from_secs(10), |s| s.lines().any(|l| l.contains("▶broker"))).await;
    tmux.keys(&["x"]);
    tmux.wait_for("the confirmation", Duration::from_secs(15), |s| s.contains("Stop `broker`?")).await;
    tmux.keys(&["y"]);
    tmux.wait_for("the broker stopped", Duration::from_secs(60), |s| row(s, "broker").contains("stopped")).await;

    // Writes still succeed; the backlog grows on screen.
    let client = reqwest::Client::new();
    for i in 0..25 {
        let r = client
            .post(format!("{sender}/api/EntityItems"))
            .json(&serde_json::json!({ "name": format!("while stopped {i}"), "value": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    tmux.wait_for("a backlog of 25", Duration::from_secs(30), |s| {
        outbox_value(s, "pending").is_some_and(|p| p >= 25.0) && s.contains("backing off")
    })
    .await;

    // `b` starts it again (after a yes) and the backlog drains.
    tmux.keys(&["b"]);
    tmux.wait_for("the confirmation", Duration::from_secs(15), |s| s.contains("Start `broker`?")).await;
    tmux.keys(&["y"]);
    tmux.wait_for("the backlog drained", Duration::from_secs(120), |s| {
        outbox_value(s, "pending") == Some(0.0) && row(s, "broker").contains("healthy")
    })
    .await;

    // `?` lists the keys; `q` asks, then tears everything down.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", Duration::from_secs(15), |s| s.contains("level filter")).await;
    // Escape and q in one read would be Alt+q: let the help close first.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", Duration::from_secs(15), |s| !s.contains("level filter")).await;
    tmux.keys(&["q"]);
    tmux.wait_for("the quit question", Duration::from_secs(15), |s| s.contains("Quit and stop the stack?")).await;
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("apphost to exit", Duration::from_secs(120), exited).await;
    assert!(screen.contains("apphost exited: 0"), "{screen}");
    assert!(screen.contains("is down"), "the teardown is told in plain lines:\n{screen}");
    assert!(tmux.given_back(&screen), "the terminal is given back:\n{screen}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived apphost");
    }
    assert_eq!(docker_leftovers().await, Vec::<String>::new());
    assert!(state.join("apphost.log").exists(), "apphost's own lines went to a file");
    let own = std::fs::read_to_string(state.join("apphost.log")).unwrap();
    assert!(own.contains("all resources are healthy"), "{own}");
}

/// Up to 50,000 lines a second for 10 s from one child: the dashboard keeps
/// drawing, the bounded store drops the oldest lines and says how many.
/// How many lines the child gets out depends on the machine (a reader that
/// cannot keep up blocks the writer), so the test asks only that the flood
/// overflowed the store many times over; how fast, and at what cost, is
/// `dashboard/bench/run.py`'s business.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_is_bounded_counted_and_shown() {
    let _one = ONE_STACK.lock().await;
    let state = crate::helpers::StateDir::new();
    let file = workspace().join("dashboard/bench/flood.yaml");
    let command = shell_line(&state, &file, "up --log-lines 2000", "apphost");
    let tmux = Tmux::start(100, 30, &command, state.to_path_buf()).topology(file);
    let screen = tmux.wait_for("the flood to end", Duration::from_secs(120), |s| s.contains("flood done: wrote")).await;
    let written: u64 = screen
        .split("flood done: wrote ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the count");
    let dropped: u64 = screen
        .split(" dropped")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the dropped lines are counted on screen:\n{screen}"));
    // The store keeps 2,000 lines of `flood`: everything older was dropped, and counted.
    assert!(written >= 10 * 2000, "the flood overflowed the store ten times over:\n{screen}");
    assert!(dropped + 2000 >= written && dropped <= written + 10, "written {written}, dropped {dropped}");
    assert!(screen.contains("flood line"), "the newest lines show:\n{screen}");
    tmux.keys(&["q", "y"]);
    let screen = tmux.wait_for("apphost to exit", Duration::from_secs(60), exited).await;
    assert!(screen.contains("apphost exited: 0"), "{screen}");
}

/// `up --detach` returns once healthy and the app runs on; `apphost
/// dashboard` attaches to it in a terminal, and `q` there only detaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_app_runs_on_and_an_attached_dashboard_only_detaches() {
    let _one = ONE_STACK.lock().await;
    let state = crate::helpers::StateDir::new();
    let up = tokio::time::timeout(
        Duration::from_secs(300),
        crate::helpers::apphost(&state).args(["up", "--detach", "--no-build", "--runtime", "docker"]).output(),
    )
    .await
    .expect("up --detach returns")
    .unwrap();
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(up.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&up.stderr));
    assert!(stdout.contains("every resource is healthy"), "{stdout}");

    let command = shell_line(&state, &workspace().join("apphost.yaml"), "dashboard", "dashboard");
    let tmux = Tmux::start(100, 30, &command, state.to_path_buf());
    let names = ["sender-db", "receiver-db", "broker", "sender", "receiver"];
    tmux.wait_for("the attached dashboard", Duration::from_secs(30), |s| {
        names.iter().all(|n| row(s, n).contains("● healthy"))
    })
    .await;
    tmux.keys(&["q"]);
    tmux.wait_for("the detach question", Duration::from_secs(15), |s| s.contains("Detach?")).await;
    tmux.keys(&["y"]);
    let screen =
        tmux.wait_for("the dashboard to exit", Duration::from_secs(30), |s| s.contains("dashboard exited:")).await;
    assert!(screen.contains("keeps running") && screen.contains("dashboard exited: 0"), "{screen}");

    // Still running after the dashboard left; `down` stops it.
    let ps = crate::helpers::apphost(&state).args(["ps", "--json"]).output().await.unwrap();
    let ps: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).expect("a running session");
    assert!(ps.iter().all(|s| s["state"] == "healthy"), "{ps:?}");
    let table = crate::helpers::apphost(&state).arg("ps").output().await.unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("CPU") && table.lines().any(|l| l.starts_with("broker") && l.contains("healthy")),
        "{table}"
    );
    let pids = pids(&ps);
    let down = crate::helpers::apphost(&state).arg("down").output().await.unwrap();
    assert!(down.status.success());
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived `down`");
    }
    assert_eq!(docker_leftovers().await, Vec::<String>::new());
}

/// Closing the terminal (the tmux server goes, SIGHUP) tears the app down
/// and apphost exits: nothing waits on a terminal that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_terminal_tears_down_and_exits() {
    let _one = ONE_STACK.lock().await;
    let state = crate::helpers::StateDir::new();
    let file = workspace().join("dashboard/bench/flood.yaml");
    let tmux = Tmux::start(100, 30, &shell_line(&state, &file, "up", "apphost"), state.to_path_buf()).topology(file);
    tmux.wait_for("the flood running", Duration::from_secs(60), |s| row(s, "flood").contains("running")).await;
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("session.json")).unwrap()).unwrap();
    let apphost_pid = session["pid"].as_u64().unwrap() as u32;
    let ps = crate::helpers::apphost(&state)
        .args(["ps", "-f", &workspace().join("dashboard/bench/flood.yaml").display().to_string(), "--json"])
        .output()
        .await
        .unwrap();
    let children = pids(&serde_json::from_slice::<Vec<serde_json::Value>>(&ps.stdout).unwrap_or_default());
    assert!(!children.is_empty(), "{}", String::from_utf8_lossy(&ps.stderr));
    tmux.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while alive(apphost_pid) {
        assert!(tokio::time::Instant::now() < deadline, "apphost outlived its terminal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for pid in children {
        assert!(!alive(pid), "process {pid} outlived apphost");
    }
    let own = std::fs::read_to_string(state.join("apphost.log")).unwrap();
    assert!(own.contains("`flood` is down"), "a clean teardown:\n{own}");
}

/// A panic inside the dashboard (forced with a debug build's
/// `APPHOST_DASHBOARD_PANIC_KEY`) gives the terminal back before the panic
/// is printed, takes the stack down and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_dashboard_gives_the_terminal_back_and_takes_the_stack_down() {
    let _one = ONE_STACK.lock().await;
    let state = crate::helpers::StateDir::new();
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("calm.yaml");
    std::fs::write(
        &file,
        "name: calm\nresources:\n  idle:\n    kind: executable\n    command: sleep\n    args: [\"300\"]\n",
    )
    .unwrap();
    // (Without a backtrace, the panic's message stays on the 30 lines.)
    let command =
        format!("APPHOST_DASHBOARD_PANIC_KEY=! RUST_BACKTRACE=0 {}", shell_line(&state, &file, "up", "apphost"));
    let tmux = Tmux::start(100, 30, &command, state.to_path_buf()).topology(file.clone());
    tmux.wait_for("the dashboard", Duration::from_secs(60), |s| row(s, "idle").contains("running")).await;
    let ps = crate::helpers::apphost(&state).args(["ps", "--json", "-f"]).arg(&file).output().await.unwrap();
    let children = pids(&serde_json::from_slice::<Vec<serde_json::Value>>(&ps.stdout).unwrap_or_default());
    assert!(!children.is_empty(), "{}", String::from_utf8_lossy(&ps.stderr));

    tmux.keys(&["!"]);
    let screen = tmux.wait_for("apphost to exit", Duration::from_secs(60), exited).await;
    assert!(screen.contains("apphost exited: 1"), "a crashed dashboard fails apphost:\n{screen}");
    assert!(screen.contains("as APPHOST_DASHBOARD_PANIC_KEY asks"), "the panic is readable:\n{screen}");
    assert!(screen.contains("the dashboard crashed (its panic is above); the stack was taken down"), "{screen}");
    assert!(tmux.given_back(&screen), "the terminal is given back:\n{screen}");
    for pid in children {
        assert!(!alive(pid), "process {pid} outlived apphost");
    }
    assert!(!state.join("session.json").exists(), "the session ended");
    let own = std::fs::read_to_string(state.join("apphost.log")).unwrap();
    assert!(own.contains("the dashboard crashed") && own.contains("`calm` is down"), "{own}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(state.join("apphost.log")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "apphost's own log is owner-only");
}
