//! `apphost test`: reliability scenarios against a running stack. Each drives
//! real HTTP load at the sender, breaks something, and checks the receiver's
//! store: every acknowledged item delivered (lost = 0), none taking effect
//! twice (duplicate effects = 0), and how long full delivery took after the fault.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{Control, State, Supervisor};

pub mod file;
mod killed;
mod soak;
pub mod steps;

pub use killed::apphost_killed;
pub use soak::soak;
use steps::{Expect, Step, When};

/// Run by `apphost test` with no `--scenario`, in this order.
pub const BUILT_IN: [&str; 8] = [
    "smoke",
    "broker-outage",
    "receiver-offline",
    "sender-crash",
    "receiver-crash",
    "db-restart",
    "poison",
    "apphost-killed",
];

/// What `--scenario` picked.
#[derive(Debug, Clone)]
pub enum Pick {
    BuiltIn(String),
    File(std::path::PathBuf),
    /// `soak`: steady load and a random fault every 20–40 s for `duration`.
    Soak {
        duration: Duration,
        report: std::path::PathBuf,
    },
}

/// Who plays which part, by resource name.
#[derive(Debug, Clone)]
pub struct Roles {
    pub sender: String,
    pub receiver: String,
    pub broker: String,
    pub sender_db: String,
    /// `amqp://user:password@127.0.0.1:PORT` of the broker, for the poison message.
    pub broker_url: String,
    /// The queue the receiver consumes.
    pub queue: String,
    /// `postgres://…` of the receiver's database, where its effects are counted.
    pub receiver_db_url: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a fault lasts (the broker outage, the receiver's absence, the database restart).
    pub outage: Duration,
    /// Requests per second of the steady load.
    pub rate: u32,
    /// How long to wait for full delivery after the fault.
    pub settle: Duration,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub acknowledged: usize,
    /// Answers other than 201 (e.g. 503 while the database is down): nothing was promised.
    pub refused: usize,
    /// Of those, answered 503: the service said it could not promise now.
    pub unavailable: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicate_effects: u64,
    /// From the end of the fault to the last acknowledged item stored.
    pub recovery_seconds: Option<f64>,
    pub seconds: f64,
    pub failure: Option<String>,
    /// What happened along the way (when the fault struck, what was pending).
    pub notes: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.lost == 0 && self.duplicate_effects == 0
    }
}

pub struct Ctx {
    pub supervisor: Arc<Supervisor>,
    pub roles: Roles,
    pub settings: Settings,
    client: reqwest::Client,
    effects: Mutex<Effects>,
    receiver_db: Option<sqlx::PgPool>,
}

/// The receiver's effects counted two ways over one life of its process:
/// its own `receiver_processed_total`, and the inbox rows its database
/// committed during that life. A message taking effect twice counts as
/// processed twice but can have only one row, so the counter runs ahead.
/// The counters start again with each process: a kill, stop or restart of
/// the receiver closes one life (what it showed is kept), and the next life
/// is the process launched after it, whose rows are those stamped after its
/// launch (PostgreSQL stamps them with this machine's clock too).
#[derive(Debug, Clone, Copy)]
struct Effects {
    /// The watched process, by its launch time; `None` for "the next one".
    life: Option<chrono::DateTime<chrono::Utc>>,
    /// The process whose life is already counted into the totals (it is
    /// ending): not counted again while it dies.
    ended: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows stamped from here on are the watched life's.
    since: chrono::DateTime<chrono::Utc>,
    /// `receiver_processed_total` and `receiver_duplicates_total` at
    /// `since`: 0 for a life watched from its launch.
    processed_base: f64,
    absorbed_base: f64,
    /// Duplicate effects found and redeliveries absorbed in closed lives.
    found: u64,
    absorbed: f64,
}

impl Effects {
    fn next_life(ended: Option<chrono::DateTime<chrono::Utc>>, found: u64, absorbed: f64) -> Self {
        Self { life: None, ended, since: chrono::Utc::now(), processed_base: 0.0, absorbed_base: 0.0, found, absorbed }
    }
}

/// A steady stream of POSTs until stopped; remembers what was acknowledged.
struct Load {
    stop: CancellationToken,
    acknowledged: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
    unavailable: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Stops it; returns (acknowledged ids, refused, of which 503).
    async fn finish(self) -> (Vec<String>, usize, usize) {
        self.stop.cancel();
        let _ = self.task.await;
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        let refused = *self.refused.lock().expect("lock");
        let unavailable = *self.unavailable.lock().expect("lock");
        (acknowledged, refused, unavailable)
    }
}

impl Ctx {
    pub fn new(supervisor: Arc<Supervisor>, roles: Roles, settings: Settings) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        let receiver_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&roles.receiver_db_url)
            .ok();
        let effects = Mutex::new(Effects::next_life(None, 0, 0.0));
        Self { supervisor, roles, settings, client, effects, receiver_db }
    }

    /// The launch time of the receiver's running process.
    fn receiver_life(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.resource == self.roles.receiver && s.state.is_up())?
            .started_at
    }

    /// Starts counting the receiver's effects afresh (nothing is in flight).
    async fn watch_effects(&self) {
        let scrape = self.scrape(&self.roles.receiver).await;
        *self.effects.lock().expect("lock") = Effects {
            life: self.receiver_life(),
            since: chrono::Utc::now(),
            processed_base: scrape.get("receiver_processed_total").unwrap_or(0.0),
            absorbed_base: scrape.get("receiver_duplicates_total").unwrap_or(0.0),
            ..Effects::next_life(None, 0, 0.0)
        };
    }

    /// Counts the live receiver's life into the totals ahead of a fault that
    /// ends it (once: a life already counted adds nothing).
    async fn close_life(&self) -> Result<(), String> {
        let (found, absorbed) = self.tally().await?;
        let mut effects = self.effects.lock().expect("lock");
        (effects.found, effects.absorbed, effects.ended) = (found, absorbed, effects.life);
        Ok(())
    }

    /// The receiver's process is about to end: watch the next one from its launch.
    fn open_life(&self) {
        let mut effects = self.effects.lock().expect("lock");
        *effects = Effects::next_life(effects.ended, effects.found, effects.absorbed);
    }

    /// The life to count now: (since, processed base, absorbed base), or
    /// `None` while no receiver runs or the running one is already counted.
    /// A process other than the watched one (launched after a fault, or
    /// restarted on its own) is counted from its launch.
    fn current_life(&self) -> Option<(chrono::DateTime<chrono::Utc>, f64, f64)> {
        let launched = self.receiver_life()?;
        let mut effects = self.effects.lock().expect("lock");
        if effects.ended == Some(launched) {
            return None;
        }
        if effects.life != Some(launched) {
            (effects.life, effects.since, effects.processed_base, effects.absorbed_base) =
                (Some(launched), launched, 0.0, 0.0);
        }
        Some((effects.since, effects.processed_base, effects.absorbed_base))
    }

    /// Duplicate effects and redeliveries absorbed so far: the closed lives'
    /// and the live receiver's (one scrape, one count). Its counter runs
    /// ahead of the rows it committed by its duplicate effects; it is read
    /// before the rows, so a commit in between can only hide a duplicate,
    /// never invent one.
    async fn tally(&self) -> Result<(u64, f64), String> {
        let live = match self.current_life() {
            None => (0, 0.0),
            Some((since, processed_base, absorbed_base)) => {
                let scrape = self.scrape(&self.roles.receiver).await;
                let processed = scrape.get("receiver_processed_total").unwrap_or(0.0) - processed_base;
                let absorbed = (scrape.get("receiver_duplicates_total").unwrap_or(0.0) - absorbed_base).max(0.0);
                let pool = self.receiver_db.as_ref().ok_or("the receiver's database URL is not valid")?;
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE received_at >= $1")
                    .bind(since)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| format!("could not count the receiver's inbox rows: {e}"))?;
                ((processed - rows as f64).max(0.0) as u64, absorbed)
            }
        };
        let effects = self.effects.lock().expect("lock");
        Ok((effects.found + live.0, effects.absorbed + live.1))
    }

    /// Brings `target` to the middle of a batch (see [`Self::batch_in_flight`])
    /// and says how it was caught, with the burst's acknowledged ids. The
    /// receiver's life is counted first, so that a kill can follow the moment
    /// the batch is seen.
    async fn mid_batch(&self, target: &str) -> Result<(String, Vec<String>), String> {
        let on_receiver = target == self.roles.receiver;
        if on_receiver {
            self.close_life().await?;
        }
        let (in_flight, burst) = self.batch_in_flight(target).await?;
        let what = if on_receiver { "messages published but not yet processed" } else { "outbox rows in flight" };
        Ok((format!("with {in_flight} {what}"), burst))
    }

    fn url(&self, resource: &str) -> Result<String, String> {
        self.supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.name == resource || s.resource == resource)
            .and_then(|s| s.endpoints.iter().find_map(|e| e.strip_prefix("http=").map(str::to_owned)))
            .ok_or_else(|| format!("`{resource}` has no http endpoint"))
    }

    fn load(&self, tag: &str, rate: Option<u32>) -> Result<Load, String> {
        let sender = self.url(&self.roles.sender)?;
        let stop = CancellationToken::new();
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let unavailable = Arc::new(Mutex::new(0));
        let rate = rate.unwrap_or(self.settings.rate).max(1);
        let (client, every) = (self.client.clone(), Duration::from_secs_f64(1.0 / f64::from(rate)));
        let (tag, stop2, ack, refused2, unavailable2) =
            (tag.to_owned(), stop.clone(), acknowledged.clone(), refused.clone(), unavailable.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return,
                    _ = tick.tick() => {}
                }
                n += 1;
                let body = serde_json::json!({ "name": format!("{tag} {n}"), "value": n });
                match client.post(format!("{sender}/api/EntityItems")).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        if let Ok(v) = r.json::<Value>().await
                            && let Some(id) = v["id"].as_str()
                        {
                            ack.lock().expect("lock").push(id.to_owned());
                        }
                    }
                    Ok(r) => {
                        *refused2.lock().expect("lock") += 1;
                        if r.status() == 503 {
                            *unavailable2.lock().expect("lock") += 1;
                        }
                    }
                    Err(_) => *refused2.lock().expect("lock") += 1,
                }
            }
        });
        Ok(Load { stop, acknowledged, refused, unavailable, task })
    }

    async fn act(&self, resource: &str, control: Control) -> Result<(), String> {
        if resource == self.roles.receiver && matches!(control, Control::Kill | Control::Stop | Control::Restart) {
            // This receiver's counters end here: keep what they showed, watch the next ones from 0.
            self.close_life().await?;
            self.open_life();
        }
        self.supervisor.record(resource, format!("test: {control:?}"));
        self.supervisor.control(resource, control).await.map(|_| ())
    }

    /// Whether every instance became healthy within `limit`.
    async fn wait_all_healthy(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.supervisor.all_healthy() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }

    async fn wait_state(&self, resource: &str, want: impl Fn(&State) -> bool, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.supervisor.snapshot().iter().filter(|s| s.resource == resource).all(|s| want(&s.state)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("`{resource}` did not reach the expected state within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn receiver_metric(&self, series: &str) -> f64 {
        self.metric(&self.roles.receiver, series).await
    }

    async fn metric(&self, resource: &str, series: &str) -> f64 {
        self.scrape(resource).await.get(series).unwrap_or(0.0)
    }

    /// `resource`'s `/metrics`, read as the dashboard's monitor reads them (empty when it does not answer).
    async fn scrape(&self, resource: &str) -> crate::monitor::Scrape {
        let Ok(url) = self.url(resource) else { return Default::default() };
        crate::monitor::scrape(&self.client, &[format!("{url}/metrics")]).await.unwrap_or_default()
    }

    /// Ids the receiver has stored, read page by page.
    async fn stored(&self) -> Result<HashSet<String>, String> {
        let url = self.url(&self.roles.receiver)?;
        let mut ids = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let mut page = format!("{url}/api/EntityItems?limit=1000");
            if let Some(a) = &after {
                page.push_str(&format!("&after={a}"));
            }
            let body: Value = self
                .client
                .get(page)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            for item in body["items"].as_array().into_iter().flatten() {
                if let Some(id) = item["id"].as_str() {
                    ids.insert(id.to_owned());
                }
            }
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok(ids),
            }
        }
    }

    /// Runs the built-in scenario `name` and reports.
    pub async fn run(&self, name: &str) -> Report {
        match steps::built_in(name, &self.roles, self.settings.outage) {
            Some(steps) => self.run_steps(name, &steps).await,
            None => Report {
                scenario: name.to_owned(),
                failure: Some(format!("no built-in scenario is called `{name}`; built in: {}", BUILT_IN.join(", "))),
                ..Default::default()
            },
        }
    }

    /// Runs `steps` and reports; every scenario ends checking that each
    /// acknowledged item was delivered once.
    pub async fn run_steps(&self, name: &str, steps: &[Step]) -> Report {
        let started = Instant::now();
        let mut report = Report { scenario: name.to_owned(), ..Default::default() };
        if let Err(e) = self.drive(name, steps, &mut report).await {
            report.failure = Some(e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn drive(&self, name: &str, steps: &[Step], report: &mut Report) -> Result<(), String> {
        self.watch_effects().await;
        let rejected_before = self.receiver_metric("receiver_rejected_total").await;
        let mut load: Option<Load> = None;
        let mut acknowledged = Vec::new();
        let mut fault_end = None;
        let mut expectations = Vec::new();
        for step in steps {
            match step {
                Step::Load { rate } => {
                    if load.is_none() {
                        load = Some(self.load(name, *rate)?);
                    }
                }
                Step::StopLoad => {
                    if let Some(l) = load.take() {
                        self.collect(l, &mut acknowledged, report).await;
                    }
                }
                Step::Wait(d) => tokio::time::sleep(*d).await,
                Step::WaitHealthy(resource) => {
                    self.wait_state(resource, |s| *s == State::Healthy, Duration::from_secs(180)).await?;
                }
                Step::Chaos(chaos) => {
                    if chaos.when == When::BatchInFlight {
                        let (how, burst) = self.mid_batch(&chaos.resource).await?;
                        acknowledged.extend(burst);
                        report.notes.push(format!(
                            "{} `{}` {how}",
                            steps::Action::NAMES[chaos.action as usize],
                            chaos.resource
                        ));
                    }
                    self.act(&chaos.resource, chaos.action.control()).await?;
                    fault_end = Some(Instant::now());
                    if let (Some(lasting), Some(back)) = (chaos.lasting, chaos.action.undo()) {
                        // The fault lasts while the next steps run; a `wait: { healthy }` waits for its end.
                        tokio::time::sleep(lasting).await;
                        self.act(&chaos.resource, back).await?;
                        fault_end = Some(Instant::now());
                    }
                    if matches!(chaos.action, steps::Action::Kill | steps::Action::Restart) {
                        // The restart policy (or the restart) brings it back; the fault ends when it is healthy.
                        self.wait_state(&chaos.resource, |s| *s == State::Healthy, Duration::from_secs(180)).await?;
                        fault_end = Some(Instant::now());
                    }
                }
                Step::Poison => {
                    send_poison(&self.roles.broker_url, &self.roles.queue).await?;
                    let deadline = Instant::now() + self.settings.settle;
                    while self.receiver_metric("receiver_rejected_total").await < rejected_before + 1.0 {
                        if Instant::now() > deadline {
                            return Err("the poison message was not rejected to the DLQ".into());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    fault_end = Some(Instant::now());
                }
                Step::Assert(expect) => expectations.push(expect.clone()),
            }
        }
        if let Some(l) = load.take() {
            self.collect(l, &mut acknowledged, report).await;
        }
        if acknowledged.is_empty() {
            return Err("no request was acknowledged".into());
        }
        self.verify(&acknowledged, fault_end.unwrap_or_else(Instant::now), report).await?;
        let rejected = (self.receiver_metric("receiver_rejected_total").await - rejected_before).max(0.0) as u64;
        for e in expectations {
            check(&e, report, rejected)?;
        }
        Ok(())
    }

    async fn collect(&self, load: Load, acknowledged: &mut Vec<String>, report: &mut Report) {
        let (ids, refused, unavailable) = load.finish().await;
        acknowledged.extend(ids);
        report.acknowledged = acknowledged.len();
        report.refused += refused;
        report.unavailable += unavailable;
    }

    /// Waits until `target` is in the middle of a batch, bursting writes to
    /// make one if the steady load leaves none:
    /// - the sender: its outbox has rows pending while `outbox_published_total`
    ///   moves (the relay has taken rows the broker has not yet accepted);
    /// - the receiver: messages published since the burst are not all
    ///   processed while `receiver_processed_total` moves (it holds
    ///   deliveries it has not yet settled).
    ///
    /// Returns how many were in flight at that moment and the burst's
    /// acknowledged ids.
    async fn batch_in_flight(&self, target: &str) -> Result<(u64, Vec<String>), String> {
        let on_receiver = target == self.roles.receiver;
        let sender = self.url(&self.roles.sender)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let published_0 = self.metric(&self.roles.sender, "outbox_published_total").await;
        let processed_0 = self.receiver_metric("receiver_processed_total").await;
        let (mut published, mut processed) = (published_0, processed_0);
        let mut acknowledged = Vec::new();
        loop {
            // A burst: more rows than one relay (or receiver) batch, committed at once.
            let burst = (0..200).map(|i| {
                let body = serde_json::json!({ "name": format!("burst {i}"), "value": i });
                self.client.post(format!("{sender}/api/EntityItems")).json(&body).send()
            });
            for answer in futures::future::join_all(burst).await.into_iter().flatten() {
                if answer.status() == 201
                    && let Ok(v) = answer.json::<Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    acknowledged.push(id.to_owned());
                }
            }
            for _ in 0..50 {
                let scrape = self.scrape(&self.roles.sender).await;
                let now_published = scrape.get("outbox_published_total").unwrap_or(0.0);
                if on_receiver {
                    let now_processed = self.receiver_metric("receiver_processed_total").await;
                    let unprocessed = (now_published - published_0) - (now_processed - processed_0);
                    if unprocessed >= 1.0 && now_processed > processed {
                        return Ok((unprocessed as u64, acknowledged));
                    }
                    processed = now_processed;
                } else {
                    let pending = scrape.get("outbox_pending").unwrap_or(0.0);
                    if pending >= 1.0 && now_published > published {
                        return Ok((pending as u64, acknowledged));
                    }
                }
                published = now_published;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if Instant::now() > deadline {
                return Err(format!("`{target}` never had a batch in flight to crash into"));
            }
        }
    }

    /// Every acknowledged id stored within `settle`, none counted twice.
    async fn verify(&self, acknowledged: &[String], fault_end: Instant, report: &mut Report) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.settle;
        let missing = loop {
            let stored = self.stored().await.unwrap_or_default();
            let missing = acknowledged.iter().filter(|id| !stored.contains(*id)).count();
            report.delivered = acknowledged.len() - missing;
            if missing == 0 {
                report.recovery_seconds = Some(fault_end.elapsed().as_secs_f64());
                break 0;
            }
            if Instant::now() > deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        report.lost = missing;
        let absorbed;
        (report.duplicate_effects, absorbed) = self.tally().await?;
        if absorbed >= 1.0 {
            let s = if absorbed == 1.0 { "" } else { "s" };
            report.notes.push(format!("the receiver's inbox absorbed {absorbed} redelivered message{s}"));
        }
        if report.lost > 0 {
            return Err(format!(
                "{} acknowledged items never reached the receiver within {:?}",
                report.lost, self.settings.settle
            ));
        }
        if report.duplicate_effects > 0 {
            return Err(format!(
                "the receiver counted {} more effects than it committed inbox rows: messages took effect twice",
                report.duplicate_effects
            ));
        }
        Ok(())
    }
}

/// The reports as a JUnit XML test suite.
pub fn junit(reports: &[Report]) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let failures = reports.iter().filter(|r| !r.passed()).count();
    let total: f64 = reports.iter().map(|r| r.seconds).sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"apphost\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        reports.len()
    );
    for r in reports {
        xml.push_str(&format!(
            "  <testcase classname=\"apphost.scenarios\" name=\"{}\" time=\"{:.3}\">\n",
            esc(&r.scenario),
            r.seconds
        ));
        if !r.passed() {
            let message = r
                .failure
                .clone()
                .unwrap_or_else(|| format!("lost {}, duplicate effects {}", r.lost, r.duplicate_effects));
            xml.push_str(&format!("    <failure message=\"{}\"/>\n", esc(&message)));
        }
        xml.push_str(&format!("    <system-out>{}</system-out>\n", esc(&serde_json::to_string(r).unwrap_or_default())));
        xml.push_str("  </testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

fn check(e: &Expect, report: &Report, rejected: u64) -> Result<(), String> {
    if let Some(max) = e.refused_at_most
        && report.refused > max
    {
        return Err(format!("{} requests were refused (at most {max} expected)", report.refused));
    }
    if let Some(min) = e.unavailable_at_least
        && report.unavailable < min
    {
        return Err(format!("{} requests were answered 503 (at least {min} expected)", report.unavailable));
    }
    if let Some(min) = e.rejected_at_least
        && rejected < min
    {
        return Err(format!("{rejected} messages were rejected to the DLQ (at least {min} expected)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts_failures_and_escapes() {
        let ok = Report { scenario: "smoke".into(), acknowledged: 3, delivered: 3, ..Default::default() };
        let bad = Report { scenario: "db<restart>".into(), lost: 2, ..Default::default() };
        let xml = junit(&[ok, bad]);
        assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
        assert!(xml.contains("db&lt;restart&gt;"), "{xml}");
        assert!(xml.contains(r#"<failure message="lost 2, duplicate effects 0"/>"#), "{xml}");
    }
}

/// Puts a message no receiver can process on `queue`, as an independent
/// producer would: right subject, a body that is not JSON.
async fn send_poison(url: &str, queue: &str) -> Result<(), String> {
    use fe2o3_amqp::{
        Connection, Sender, Session,
        types::{
            messaging::{Message, MessageId, Properties, Target},
            primitives::{Binary, Symbol},
        },
    };
    let send = async {
        let mut connection = Connection::open(format!("apphost-poison-{}", uuid::Uuid::new_v4()), url)
            .await
            .map_err(|e| e.to_string())?;
        let mut session = Session::begin(&mut connection).await.map_err(|e| e.to_string())?;
        let target = Target::builder().address(queue.to_owned()).capabilities(vec![Symbol::from("queue")]).build();
        let mut sender = Sender::builder()
            .name("apphost-poison")
            .target(target)
            .attach(&mut session)
            .await
            .map_err(|e| e.to_string())?;
        let message = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(MessageId::String(format!("poison-{}", uuid::Uuid::new_v4())))
                    .subject("EntityItemCreated".to_owned())
                    .content_type("application/json")
                    .build(),
            )
            .data(Binary::from(b"{this is not json".to_vec()))
            .build();
        sender.send(message).await.map_err(|e| e.to_string())?;
        let _ = sender.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .map_err(|_| "the broker did not take the poison message".to_owned())?
}
