//! The step interpreter: runs a scenario's steps against the stack, then
//! checks what every scenario checks (each acknowledged item delivered, none
//! taking effect twice) and what its steps expect.

use std::time::{Duration, Instant};

use contracts::{
    Action,
    metrics::{OUTBOX_PENDING, OUTBOX_PUBLISHED, RECEIVER_DUPLICATES, RECEIVER_PROCESSED, RECEIVER_REJECTED},
};

use super::{
    BUILT_IN, Ctx, Report, demo,
    load::Load,
    steps::{self, Expect, Step, When},
};
use crate::supervisor::State;

impl Ctx {
    /// Brings `target` to the middle of a batch (see [`Self::batch_in_flight`])
    /// and says how it was caught, with the burst's acknowledged ids.
    pub(super) async fn mid_batch(&self, target: &str) -> Result<(String, Vec<String>), String> {
        let on_receiver = target == self.roles.receiver;
        let (in_flight, burst) = self.batch_in_flight(target).await?;
        let what = if on_receiver { "messages published but not yet processed" } else { "outbox rows in flight" };
        Ok((format!("with {in_flight} {what}"), burst))
    }

    pub(crate) async fn act(&self, resource: &str, action: Action) -> Result<(), String> {
        self.supervisor.record(resource, format!("test: {action}"));
        self.supervisor.act(resource, action).await.map(|_| ())
    }

    /// Sends acknowledged item `id` again once the receiver has it (see
    /// [`steps::Step::Redeliver`]) and waits until the receiver has seen the
    /// copy: absorbed as a duplicate, or applied again. Says what was done.
    async fn redeliver(&self, id: &str) -> Result<String, String> {
        let pool = self.receiver_db.as_ref().ok_or("the receiver's database URL is not valid")?;
        let deadline = Instant::now() + self.settings.settle;
        let message_id = loop {
            if let Some(message_id) = demo::message_id_of(pool, id).await? {
                break message_id;
            }
            if Instant::now() > deadline {
                return Err(format!("item {id} never reached the receiver, so it could not be redelivered"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let absorbed = self.receiver_metric(RECEIVER_DUPLICATES.series).await;
        let receiver = self.url(&self.roles.receiver)?;
        demo::redeliver(&self.client, &receiver, &self.roles.broker_url, &self.roles.queue, id, &message_id).await?;
        // The receiver counts a duplicate delivery after its transaction commits, so once
        // the count moved the row is final: read it then, not before (a receiver that
        // applied the copy counts it as a duplicate delivery too).
        let seen = loop {
            let counted = self.receiver_metric(RECEIVER_DUPLICATES.series).await > absorbed;
            if demo::extra_applications(pool, &[id.to_owned()]).await? > 0 {
                break "applied it again";
            }
            if counted {
                break "absorbed it";
            }
            if Instant::now() > deadline {
                return Err(format!("the receiver never saw the redelivered message {message_id}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Ok(format!("item {id} redelivered under its message id {message_id}; the receiver {seen}"))
    }

    /// After a crash between commit and accept, the broker must hand the
    /// stored batch to the new receiver, which sees it as duplicates (its
    /// counter starts again at 0). Proves the crash landed in that window.
    async fn redelivered_after_crash(&self) -> Result<String, String> {
        let deadline = Instant::now() + self.settings.settle;
        loop {
            let seen = self.receiver_metric(RECEIVER_DUPLICATES.series).await;
            if seen >= 1.0 {
                return Ok(format!(
                    "the broker redelivered the committed batch: the new receiver saw {seen} duplicate(s)"
                ));
            }
            if Instant::now() > deadline {
                return Err("the batch committed before the crash was never redelivered, so the crash did not land \
                            between commit and accept"
                    .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every instance became healthy within `limit`.
    pub(crate) async fn wait_all_healthy(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.supervisor.all_healthy() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }

    pub(super) async fn wait_state(
        &self,
        resource: &str,
        want: impl Fn(&State) -> bool,
        limit: Duration,
    ) -> Result<(), String> {
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

    pub(super) async fn drive(&self, name: &str, steps: &[Step], report: &mut Report) -> Result<(), String> {
        let rejected_before = self.receiver_metric(RECEIVER_REJECTED.series).await;
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
                    let mut held = None;
                    if chaos.when == When::BatchInFlight {
                        let (how, burst) = self.mid_batch(&chaos.resource).await?;
                        acknowledged.extend(burst);
                        report.notes.push(format!("{} `{}` {how}", chaos.action, chaos.resource));
                    } else if chaos.when.holds_the_database() {
                        let (hold, how, burst) = self.hold_receiver(&chaos.resource, chaos.when).await?;
                        acknowledged.extend(burst);
                        report.notes.push(format!("{} `{}` {how}", chaos.action, chaos.resource));
                        held = Some(hold);
                    }
                    let acted = self.act(&chaos.resource, chaos.action).await;
                    if let Some(hold) = held {
                        hold.release().await?;
                    }
                    acted?;
                    fault_end = Some(Instant::now());
                    if let (Some(lasting), Some(back)) = (chaos.lasting, chaos.action.undo()) {
                        // The fault lasts while the next steps run; a `wait: { healthy }` waits for its end.
                        tokio::time::sleep(lasting).await;
                        self.act(&chaos.resource, back).await?;
                        fault_end = Some(Instant::now());
                    }
                    if matches!(chaos.action, Action::Kill | Action::Restart) {
                        // The restart policy (or the restart) brings it back; the fault ends when it is healthy.
                        self.wait_state(&chaos.resource, |s| *s == State::Healthy, Duration::from_secs(180)).await?;
                        fault_end = Some(Instant::now());
                    }
                    if chaos.when == When::CommitHeld {
                        report.notes.push(self.redelivered_after_crash().await?);
                    }
                }
                Step::Poison => {
                    demo::send_poison(&self.roles.broker_url, &self.roles.queue).await?;
                    let deadline = Instant::now() + self.settings.settle;
                    while self.receiver_metric(RECEIVER_REJECTED.series).await < rejected_before + 1.0 {
                        if Instant::now() > deadline {
                            return Err("the poison message was not rejected to the DLQ".into());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    fault_end = Some(Instant::now());
                }
                Step::Redeliver => {
                    let so_far = load.as_ref().map(Load::acknowledged_so_far).unwrap_or_default();
                    let id = so_far.first().or(acknowledged.first()).cloned().ok_or("nothing to redeliver yet")?;
                    report.notes.push(self.redeliver(&id).await?);
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
        let rejected = (self.receiver_metric(RECEIVER_REJECTED.series).await - rejected_before).max(0.0) as u64;
        for e in expectations {
            check(&e, report, rejected)?;
        }
        Ok(())
    }

    pub(super) async fn collect(&self, load: Load, acknowledged: &mut Vec<String>, report: &mut Report) {
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
    pub(super) async fn batch_in_flight(&self, target: &str) -> Result<(u64, Vec<String>), String> {
        let on_receiver = target == self.roles.receiver;
        let sender = self.url(&self.roles.sender)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let published_0 = self.metric(&self.roles.sender, OUTBOX_PUBLISHED.series).await;
        let processed_0 = self.receiver_metric(RECEIVER_PROCESSED.series).await;
        let (mut published, mut processed) = (published_0, processed_0);
        let mut acknowledged = Vec::new();
        loop {
            // A burst: more rows than one relay (or receiver) batch, committed at once.
            let burst = (0..200).map(|i| demo::post_item(&self.client, &sender, format!("burst {i}"), i));
            acknowledged.extend(futures::future::join_all(burst).await.into_iter().flatten().flatten());
            for _ in 0..50 {
                let scrape = self.scrape(&self.roles.sender).await;
                let now_published = scrape.get(OUTBOX_PUBLISHED.series).unwrap_or(0.0);
                if on_receiver {
                    let now_processed = self.receiver_metric(RECEIVER_PROCESSED.series).await;
                    let unprocessed = (now_published - published_0) - (now_processed - processed_0);
                    if unprocessed >= 1.0 && now_processed > processed {
                        return Ok((unprocessed as u64, acknowledged));
                    }
                    processed = now_processed;
                } else {
                    let pending = scrape.get(OUTBOX_PENDING.series).unwrap_or(0.0);
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
    pub(super) async fn verify(
        &self,
        acknowledged: &[String],
        fault_end: Instant,
        report: &mut Report,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.settle;
        let missing = loop {
            let stored = demo::stored(&self.client, &self.url(&self.roles.receiver)?).await.unwrap_or_default();
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
        report.duplicate_effects = self.duplicate_effects(acknowledged).await?;
        if report.lost > 0 {
            let stored = demo::stored(&self.client, &self.url(&self.roles.receiver)?).await.unwrap_or_default();
            let lost: Vec<String> = acknowledged.iter().filter(|id| !stored.contains(*id)).cloned().collect();
            return Err(format!(
                "{} acknowledged items never reached the receiver within {:?}: {}",
                report.lost,
                self.settings.settle,
                self.traced(&lost)
            ));
        }
        if report.duplicate_effects > 0 {
            let pool = self.receiver_db.as_ref().ok_or("the receiver's database URL is not valid")?;
            let twice = demo::applied_twice(pool, acknowledged, 5).await?;
            return Err(format!(
                "acknowledged items were applied {} more time(s) than once: messages took effect twice: {}",
                report.duplicate_effects,
                self.traced(&twice)
            ));
        }
        Ok(())
    }
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
