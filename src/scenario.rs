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

pub const BUILT_IN: [&str; 7] = ["smoke", "broker-outage", "receiver-offline", "sender-crash", "receiver-crash", "db-restart", "poison"];

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
    pub delivered: usize,
    pub lost: usize,
    pub duplicate_effects: u64,
    /// From the end of the fault to the last acknowledged item stored.
    pub recovery_seconds: Option<f64>,
    pub seconds: f64,
    pub failure: Option<String>,
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
}

/// A steady stream of POSTs until stopped; remembers what was acknowledged.
struct Load {
    stop: CancellationToken,
    acknowledged: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ctx {
    pub fn new(supervisor: Arc<Supervisor>, roles: Roles, settings: Settings) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        Self { supervisor, roles, settings, client }
    }

    fn url(&self, resource: &str) -> Result<String, String> {
        self.supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.name == resource || s.resource == resource)
            .and_then(|s| s.endpoints.iter().find_map(|e| e.strip_prefix("http=").map(str::to_owned)))
            .ok_or_else(|| format!("`{resource}` has no http endpoint"))
    }

    fn load(&self, tag: &str) -> Result<Load, String> {
        let sender = self.url(&self.roles.sender)?;
        let stop = CancellationToken::new();
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (client, every) = (self.client.clone(), Duration::from_secs_f64(1.0 / f64::from(self.settings.rate.max(1))));
        let (tag, stop2, ack, refused2) = (tag.to_owned(), stop.clone(), acknowledged.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
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
                    _ => *refused2.lock().expect("lock") += 1,
                }
            }
        });
        Ok(Load { stop, acknowledged, refused, task })
    }

    async fn act(&self, resource: &str, control: Control) -> Result<(), String> {
        self.supervisor.record(resource, format!("test: {control:?}"));
        self.supervisor.control(resource, control).await.map(|_| ())
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
        let Ok(url) = self.url(&self.roles.receiver) else { return 0.0 };
        let Ok(r) = self.client.get(format!("{url}/metrics")).send().await else { return 0.0 };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
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
            let body: Value = self.client.get(page).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
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

    /// Runs one built-in scenario and reports.
    pub async fn run(&self, name: &str) -> Report {
        let started = Instant::now();
        let processed_before = self.receiver_metric("receiver_processed_total").await;
        let mut report = Report { scenario: name.to_owned(), ..Default::default() };
        let outcome = self.drive(name, &mut report, processed_before).await;
        if let Err(e) = outcome {
            report.failure = Some(e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn drive(&self, name: &str, report: &mut Report, processed_before: f64) -> Result<(), String> {
        let r = self.roles.clone();
        let outage = self.settings.outage;
        let load = self.load(name)?;
        tokio::time::sleep(Duration::from_secs(2)).await; // steady load before the fault
        let fault_end = match name {
            "smoke" => Instant::now(),
            "broker-outage" => self.outage(&r.broker, Control::Stop, Control::Start, outage).await?,
            "receiver-offline" => self.outage(&r.receiver, Control::Stop, Control::Start, outage).await?,
            "db-restart" => self.outage(&r.sender_db, Control::Stop, Control::Start, outage).await?,
            "sender-crash" | "receiver-crash" => {
                let victim = if name == "sender-crash" { &r.sender } else { &r.receiver };
                self.act(victim, Control::Kill).await?;
                // The restart policy brings it back.
                self.wait_state(victim, |s| *s == State::Healthy, Duration::from_secs(120)).await?;
                Instant::now()
            }
            "poison" => {
                let rejected = self.receiver_metric("receiver_rejected_total").await;
                send_poison(&r.broker_url, &r.queue).await?;
                let deadline = Instant::now() + self.settings.settle;
                while self.receiver_metric("receiver_rejected_total").await < rejected + 1.0 {
                    if Instant::now() > deadline {
                        return Err("the poison message was not rejected to the DLQ".into());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Instant::now()
            }
            other => return Err(format!("no built-in scenario is called `{other}`; built in: {}", BUILT_IN.join(", "))),
        };
        tokio::time::sleep(Duration::from_secs(2)).await; // steady load after the fault
        load.stop.cancel();
        let _ = load.task.await;
        let acknowledged: Vec<String> = load.acknowledged.lock().expect("lock").clone();
        report.acknowledged = acknowledged.len();
        report.refused = *load.refused.lock().expect("lock");
        if acknowledged.is_empty() {
            return Err("no request was acknowledged".into());
        }
        // Full delivery: every acknowledged id stored.
        let deadline = Instant::now() + self.settings.settle;
        let missing = loop {
            let stored = self.stored().await.unwrap_or_default();
            let missing: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
            report.delivered = acknowledged.len() - missing.len();
            if missing.is_empty() {
                report.recovery_seconds = Some(fault_end.elapsed().as_secs_f64());
                break 0;
            }
            if Instant::now() > deadline {
                break missing.len();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        report.lost = missing;
        // A message taking effect twice would count as processed twice.
        let processed = self.receiver_metric("receiver_processed_total").await - processed_before;
        report.duplicate_effects = (processed - report.delivered as f64).max(0.0) as u64;
        if report.lost > 0 {
            return Err(format!("{} acknowledged items never reached the receiver within {:?}", report.lost, self.settings.settle));
        }
        Ok(())
    }

    /// Applies `fault` to `resource`, keeps it for `length`, undoes it; returns when it was undone.
    async fn outage(&self, resource: &str, fault: Control, undo: Control, length: Duration) -> Result<Instant, String> {
        self.act(resource, fault).await?;
        tokio::time::sleep(length).await;
        self.act(resource, undo).await?;
        Ok(Instant::now())
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
        xml.push_str(&format!("  <testcase classname=\"apphost.scenarios\" name=\"{}\" time=\"{:.3}\">\n", esc(&r.scenario), r.seconds));
        if !r.passed() {
            let message = r.failure.clone().unwrap_or_else(|| format!("lost {}, duplicate effects {}", r.lost, r.duplicate_effects));
            xml.push_str(&format!("    <failure message=\"{}\"/>\n", esc(&message)));
        }
        xml.push_str(&format!("    <system-out>{}</system-out>\n", esc(&serde_json::to_string(r).unwrap_or_default())));
        xml.push_str("  </testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
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
        let mut connection = Connection::open(format!("apphost-poison-{}", uuid::Uuid::new_v4()), url).await.map_err(|e| e.to_string())?;
        let mut session = Session::begin(&mut connection).await.map_err(|e| e.to_string())?;
        let target = Target::builder().address(queue.to_owned()).capabilities(vec![Symbol::from("queue")]).build();
        let mut sender = Sender::builder().name("apphost-poison").target(target).attach(&mut session).await.map_err(|e| e.to_string())?;
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
    tokio::time::timeout(Duration::from_secs(20), send).await.map_err(|_| "the broker did not take the poison message".to_owned())?
}
