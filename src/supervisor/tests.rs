//! The job lifecycle over a fake runtime with paused time: start order and
//! `wait_for` gating, restart policy and backoff, teardown order, and a stop
//! that arrives while a start is still under way.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use contracts::Action;
use futures::{FutureExt, future::BoxFuture};
use tokio::{sync::watch, time::Instant};

use super::{State, Supervisor};
use crate::{
    logs::LogStore,
    plan::{self, Instance, RuntimeKind},
    runtime::{Exit, Output, Running, Runtime, StartError, Usage},
    topology,
};

/// What the fake runtime was asked, with when (paused time since the test began).
type Journal = Arc<Mutex<Vec<(Duration, String)>>>;

#[derive(Default, Clone)]
struct Script {
    /// How long a start takes.
    start: Duration,
    /// The start fails with this message.
    fails: Option<&'static str>,
    /// Exits on its own this long after starting, with this exit: the first
    /// entry for the first start, and so on (the last one for the rest).
    exits: Vec<(Duration, Exit)>,
}

struct Fake {
    t0: Instant,
    journal: Journal,
    scripts: HashMap<String, Script>,
    /// Starts so far, per instance.
    starts: Mutex<HashMap<String, usize>>,
}

impl Fake {
    fn note(journal: &Journal, t0: Instant, what: String) {
        journal.lock().unwrap().push((t0.elapsed(), what));
    }
}

impl Runtime for Fake {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn start<'a>(
        &'a self,
        instance: &'a Instance,
        _out: Output,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, StartError>> {
        async move {
            let script = self.scripts.get(&instance.name).cloned().unwrap_or_default();
            let nth = {
                let mut starts = self.starts.lock().unwrap();
                let n = starts.entry(instance.name.clone()).or_default();
                *n += 1;
                *n - 1
            };
            Fake::note(&self.journal, self.t0, format!("starting {}", instance.name));
            tokio::time::sleep(script.start).await;
            if let Some(why) = script.fails {
                return Err(StartError::new(why));
            }
            Fake::note(&self.journal, self.t0, format!("started {}", instance.name));
            let (exit, _) = watch::channel(None);
            let exit = Arc::new(exit);
            if let Some(&(after, how)) = script.exits.get(nth).or(script.exits.last()) {
                let exit = exit.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    exit.send_replace(Some(how));
                });
            }
            let running = FakeRunning { name: instance.name.clone(), exit, journal: self.journal.clone(), t0: self.t0 };
            Ok(Arc::new(running) as Arc<dyn Running>)
        }
        .boxed()
    }

    fn remove<'a>(&'a self, _instance: &'a Instance) -> BoxFuture<'a, ()> {
        async {}.boxed()
    }
}

struct FakeRunning {
    name: String,
    exit: Arc<watch::Sender<Option<Exit>>>,
    journal: Journal,
    t0: Instant,
}

impl Running for FakeRunning {
    fn exited(&self) -> BoxFuture<'_, Exit> {
        crate::runtime::wait_exit(&self.exit.subscribe())
    }

    fn stop(&self, _signal: i32, _grace: Duration) -> BoxFuture<'_, ()> {
        Fake::note(&self.journal, self.t0, format!("stopped {}", self.name));
        self.exit.send_replace(Some(Exit::Code(0)));
        async {}.boxed()
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        Fake::note(&self.journal, self.t0, format!("killed {}", self.name));
        self.exit.send_replace(Some(Exit::Signal(libc::SIGKILL)));
        async {}.boxed()
    }

    fn exec(&self, _command: Vec<String>, _timeout: Duration) -> BoxFuture<'_, Result<i32, String>> {
        async { Ok(0) }.boxed()
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), String>> {
        async { Ok(()) }.boxed()
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), String>> {
        async { Ok(()) }.boxed()
    }

    fn partition(&self, _cut: bool) -> BoxFuture<'_, Result<(), String>> {
        async { Err("no network here".to_owned()) }.boxed()
    }

    fn id(&self) -> String {
        format!("fake {}", self.name)
    }

    fn usage(&self) -> BoxFuture<'_, Option<Usage>> {
        async { None }.boxed()
    }
}

/// A supervisor of `yaml`'s resources (executables without health checks:
/// healthy once started) over the fake runtime.
fn supervise(yaml: &str, scripts: &[(&str, Script)]) -> (Supervisor, Journal) {
    let t = topology::parse_str(Path::new("apphost.yaml"), yaml).expect("a valid topology");
    let instances = plan::plan(&t, Err("no engine".into()), "s", |_| Ok(String::new()), &[]).expect("a plan");
    let journal = Journal::default();
    let fake = Fake {
        t0: Instant::now(),
        journal: journal.clone(),
        scripts: scripts.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
        starts: Mutex::default(),
    };
    let runtimes: HashMap<&'static str, Arc<dyn Runtime>> = HashMap::from([("process", Arc::new(fake) as _)]);
    let supervisor = Supervisor::start(&t, instances, &runtimes, LogStore::new(100), Arc::default());
    (supervisor, journal)
}

/// Waits (in paused time) until `done` holds of the statuses.
async fn until(supervisor: &Supervisor, what: &str, done: impl Fn(&HashMap<String, State>) -> bool) {
    let mut changes = supervisor.changes();
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let states = supervisor.snapshot().into_iter().map(|s| (s.name, s.state)).collect();
        if done(&states) {
            return;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("never: {what}; states: {states:?}"),
        }
    }
}

fn entries(journal: &Journal, prefix: &str) -> Vec<(u64, String)> {
    journal
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, what)| what.starts_with(prefix))
        .map(|(at, what)| (at.as_secs(), what.trim_start_matches(prefix).to_owned()))
        .collect()
}

const CHAIN: &str = "
resources:
  db: { kind: executable, command: db }
  api: { kind: executable, command: api, wait_for: [db] }
  web: { kind: executable, command: web, wait_for: { api: started } }
";

#[tokio::test(start_paused = true)]
async fn a_resource_starts_only_once_what_it_waits_for_meets_its_condition() {
    let slow = Script { start: Duration::from_secs(5), ..Script::default() };
    let (supervisor, journal) =
        supervise(CHAIN, &[("db", slow), ("api", Script { start: Duration::from_secs(2), ..Script::default() })]);
    until(&supervisor, "all healthy", |s| s.values().all(|s| *s == State::Healthy)).await;
    assert_eq!(
        entries(&journal, "starting "),
        [(0, "db".to_owned()), (5, "api".to_owned()), (7, "web".to_owned())],
        "api waits for db to be healthy (5 s), web for api to have started (2 s more)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashing_resource_is_restarted_with_doubling_backoff_up_to_its_limit() {
    let yaml = "
resources:
  crashy:
    kind: executable
    command: crashy
    restart: { policy: on_failure, max_restarts: 3, backoff: 1s, max_backoff: 3s }
";
    let crash = Script { exits: vec![(Duration::ZERO, Exit::Code(1))], ..Script::default() };
    let (supervisor, journal) = supervise(yaml, &[("crashy", crash)]);
    until(&supervisor, "crashy failed", |s| matches!(s["crashy"], State::Failed(_))).await;
    let starts: Vec<u64> = entries(&journal, "starting ").into_iter().map(|(at, _)| at).collect();
    // Backoff 1 s, 2 s, then 4 s capped at 3 s; no fourth restart.
    assert_eq!(starts, [0, 1, 3, 6]);
    let status = supervisor.snapshot().remove(0);
    assert_eq!(status.restarts, 3);
    assert!(
        matches!(&status.state, State::Failed(why) if why.contains("gave up after 3 restarts")),
        "{:?}",
        status.state
    );
}

#[tokio::test(start_paused = true)]
async fn a_stable_run_resets_the_count_of_restarts_and_the_backoff() {
    let yaml = "
resources:
  flaky:
    kind: executable
    command: flaky
    restart: { policy: on_failure, max_restarts: 2, backoff: 1s, max_backoff: 30s, reset_after: 60s }
";
    let crash = (Duration::ZERO, Exit::Code(1));
    // Two quick crashes, a stable run of 120 s, then quick crashes again.
    let flaky =
        Script { exits: vec![crash, crash, (Duration::from_secs(120), Exit::Code(1)), crash], ..Script::default() };
    let (supervisor, journal) = supervise(yaml, &[("flaky", flaky)]);
    until(&supervisor, "flaky failed", |s| matches!(s["flaky"], State::Failed(_))).await;
    let starts: Vec<u64> = entries(&journal, "starting ").into_iter().map(|(at, _)| at).collect();
    // 0, +1 s, +2 s (it runs 120 s, so the count starts again), then +1 s,
    // +2 s and given up after 2 restarts in a row. Without the reset it would
    // be given up on when the long run ended: [0, 1, 3].
    assert_eq!(starts, [0, 1, 3, 124, 126]);
}

#[tokio::test(start_paused = true)]
async fn what_waits_for_a_failed_resource_is_blocked_and_names_the_root_cause() {
    let broken = Script { fails: Some("the engine refused it"), ..Script::default() };
    let (supervisor, journal) = supervise(CHAIN, &[("db", broken)]);
    until(&supervisor, "api and web blocked", |s| {
        matches!(&s["api"], State::Blocked(_)) && matches!(&s["web"], State::Blocked(_))
    })
    .await;
    let states: HashMap<String, State> = supervisor.snapshot().into_iter().map(|s| (s.name, s.state)).collect();
    assert_eq!(states["db"], State::Failed("the engine refused it".into()));
    // web waits for api, which waits for db: both name db's failure.
    assert_eq!(states["api"], State::Blocked("`db` failed: the engine refused it".into()));
    assert_eq!(states["web"], State::Blocked("`db` failed: the engine refused it".into()));
    assert_eq!(entries(&journal, "starting ").len(), 1, "nothing waiting for it started");
}

#[tokio::test(start_paused = true)]
async fn a_clean_exit_is_not_restarted_under_on_failure() {
    let yaml = "resources:\n  once: { kind: executable, command: once }\n";
    let done = Script { exits: vec![(Duration::from_secs(1), Exit::Code(0))], ..Script::default() };
    let (supervisor, journal) = supervise(yaml, &[("once", done)]);
    until(&supervisor, "once exited", |s| s["once"] == State::Exited(Exit::Code(0))).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(entries(&journal, "starting ").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn teardown_stops_dependents_before_what_they_depend_on() {
    let (supervisor, journal) = supervise(CHAIN, &[]);
    until(&supervisor, "all healthy", |s| s.values().all(|s| *s == State::Healthy)).await;
    supervisor.shutdown(Duration::from_secs(30)).await;
    let stops: Vec<String> = entries(&journal, "stopped ").into_iter().map(|(_, name)| name).collect();
    assert_eq!(stops, ["web", "api", "db"]);
    assert!(supervisor.snapshot().iter().all(|s| s.state == State::Stopped));
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_long_start_is_obeyed_at_once() {
    let yaml = "resources:\n  slow: { kind: executable, command: slow }\n";
    let (supervisor, journal) =
        supervise(yaml, &[("slow", Script { start: Duration::from_secs(120), ..Script::default() })]);
    until(&supervisor, "slow starting", |s| s["slow"] == State::Starting).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    let answer = supervisor.act("slow", Action::Stop).await;
    assert!(asked.elapsed() < Duration::from_secs(1), "the stop waited {:?} for the start", asked.elapsed());
    assert!(answer.as_deref().is_ok_and(|a| a.contains("while it was starting")), "{answer:?}");
    until(&supervisor, "slow stopped", |s| s["slow"] == State::Stopped).await;
    assert!(entries(&journal, "started ").is_empty(), "the abandoned start never completed");

    // It starts again on request.
    let started = supervisor.act("slow", Action::Start).await;
    assert!(started.is_ok(), "{started:?}");
    until(&supervisor, "slow healthy", |s| s["slow"] == State::Healthy).await;
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_long_start_does_not_wait_for_it() {
    let yaml = "resources:\n  slow: { kind: executable, command: slow }\n";
    let (supervisor, _) = supervise(yaml, &[("slow", Script { start: Duration::from_secs(120), ..Script::default() })]);
    until(&supervisor, "slow starting", |s| s["slow"] == State::Starting).await;
    let asked = Instant::now();
    supervisor.shutdown(Duration::from_secs(300)).await;
    assert!(asked.elapsed() < Duration::from_secs(1), "the shutdown waited {:?}", asked.elapsed());
    assert_eq!(supervisor.snapshot()[0].state, State::Stopped);
}
