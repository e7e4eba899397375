//! One instance's life, owned by one task: the only writer of its state.
//! Requests arrive over a channel; its health probe and its trouble watcher
//! report to it and never touch the state themselves.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use contracts::Action;
use tokio::sync::{mpsc, watch};

use super::{Reply, Request, Shared, State, health};
use crate::{
    logs::LogStore,
    plan::Instance,
    runtime::{Exit, Output, Running, Runtime},
    topology::{Condition, RestartPolicy},
};

pub(super) struct Job {
    pub instance: Instance,
    pub runtime: Arc<dyn Runtime>,
    pub shared: Arc<Shared>,
    pub out: Output,
    pub control: mpsc::Receiver<(Request, Reply)>,
    /// (instances of the resource waited for, its name, the condition).
    pub deps: Vec<(Vec<String>, String, Condition)>,
    pub logs: LogStore,
}

/// Why a running instance stopped running.
enum Ended {
    Exited(Exit),
    Stopped,
    Restart,
    Shutdown,
}

/// What interrupted a wait (for dependencies, a start, a backoff).
enum Interrupt {
    /// Stop on request: stay stopped until started again.
    Stop,
    /// The app is going down.
    Shutdown,
    /// Start (again) now.
    Now,
}

impl Job {
    fn set(&self, state: State) {
        let name = &self.instance.name;
        let label = state.label();
        let changed = self.shared.status(name).is_none_or(|s| s.state != state);
        self.shared.update(name, |s| s.state = state);
        if changed {
            self.out.system(&label);
            self.shared.event(name, label);
        }
    }

    fn state(&self) -> Option<State> {
        self.shared.status(&self.instance.name).map(|s| s.state)
    }

    pub async fn run(mut self) {
        let mut want_running = true;
        let mut crashes = 0u32;
        loop {
            if !want_running {
                match self.control.recv().await {
                    None => return,
                    Some((Request::Act(Action::Start | Action::Restart), reply)) => {
                        want_running = true;
                        crashes = 0;
                        let _ = reply.send(Ok(format!("starting `{}`", self.instance.name)));
                    }
                    Some((Request::Shutdown, reply)) => {
                        let _ = reply.send(Ok("already stopped".into()));
                        return;
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{}` is not running", self.instance.name)));
                    }
                }
                continue;
            }

            self.set(State::Pending);
            match self.wait_for_dependencies().await {
                Some(Interrupt::Shutdown) => return,
                Some(_) => {
                    want_running = false;
                    self.set(State::Stopped);
                    continue;
                }
                None => {}
            }

            self.set(State::Starting);
            let first_line = self.logs.next_seq();
            // Taken before the launch: whatever the new process does happens after it.
            let launched = Utc::now();
            let running = match self.start().await {
                Ok(running) => running,
                Err(Interrupt::Shutdown) => {
                    self.set(State::Stopped);
                    return;
                }
                Err(_) => {
                    self.instance.hold_ports();
                    self.set(State::Stopped);
                    want_running = false;
                    continue;
                }
            };
            let Some(running) = running else {
                self.instance.hold_ports();
                want_running = false;
                continue;
            };
            let name = self.instance.name.clone();
            self.shared.running.lock().expect("running lock").insert(name.clone(), running.clone());
            let id = running.id();
            self.shared.update(&name, |s| {
                s.started_at = Some(launched);
                s.id = Some(id);
            });
            self.set(State::Running);
            let ran_since = tokio::time::Instant::now();
            let (health_tx, health_rx) = watch::channel(None);
            let probe = tokio::spawn(health::watch(
                self.instance.clone(),
                running.clone(),
                self.logs.clone(),
                first_line,
                health_tx,
            ));
            let troubles = tokio::spawn(health::watch_troubles(
                self.instance.clone(),
                self.shared.clone(),
                self.logs.clone(),
                self.out.clone(),
                first_line,
            ));

            let ended = self.supervise(&running, health_rx).await;
            // Until its next start nothing else may take its ports.
            self.instance.hold_ports();
            probe.abort();
            troubles.abort();
            self.shared.running.lock().expect("running lock").remove(&name);
            self.shared.update(&name, |s| s.id = None);

            match ended {
                Ended::Shutdown => {
                    self.set(State::Stopped);
                    return;
                }
                Ended::Stopped => {
                    self.set(State::Stopped);
                    want_running = false;
                }
                Ended::Restart => {}
                Ended::Exited(exit) => {
                    self.set(State::Exited(exit));
                    let restart = self.instance.resource.restart.clone();
                    // A stable run forgives the crashes before it.
                    if crashes > 0 && ran_since.elapsed() >= restart.reset_after {
                        crashes = 0;
                        self.shared.event(
                            &name,
                            format!("ran over {:?} before it ended: restart count reset", restart.reset_after),
                        );
                    }
                    let again = match restart.policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !exit.success(),
                        RestartPolicy::No => false,
                    };
                    if !again {
                        want_running = false;
                        continue;
                    }
                    if crashes >= restart.max_restarts {
                        self.set(State::Failed(format!("{exit}; gave up after {crashes} restarts")));
                        want_running = false;
                        continue;
                    }
                    let delay = restart.backoff.saturating_mul(1 << crashes.min(16)).min(restart.max_backoff);
                    crashes += 1;
                    self.shared.update(&name, |s| s.restarts += 1);
                    self.shared.event(
                        &name,
                        format!("restarting in {delay:?} (restart {crashes} of at most {})", restart.max_restarts),
                    );
                    match self.pause_for(delay).await {
                        Some(Interrupt::Shutdown) => return,
                        Some(Interrupt::Stop) => {
                            want_running = false;
                            self.set(State::Stopped);
                        }
                        Some(Interrupt::Now) | None => {}
                    }
                }
            }
        }
    }

    /// Starts the instance, serving requests meanwhile: a stop or a shutdown
    /// is obeyed at once (the start is abandoned; what it created is the
    /// runtime's to find again or to remove at teardown). `Ok(None)`: the
    /// start failed, and the state says why.
    async fn start(&mut self) -> Result<Option<Arc<dyn Running>>, Interrupt> {
        let start = self.runtime.start(&self.instance, self.out.clone());
        tokio::pin!(start);
        let name = self.instance.name.clone();
        loop {
            tokio::select! {
                started = &mut start => {
                    return Ok(match started {
                        Ok(running) => Some(running),
                        Err(err) => {
                            let mut reason = err.message.clone();
                            if let Some(help) = &err.help {
                                reason = format!("{reason} (help: {help})");
                            }
                            self.set(State::Failed(reason));
                            None
                        }
                    });
                }
                message = self.control.recv() => match message {
                    None => return Err(Interrupt::Shutdown),
                    Some((Request::Shutdown, reply)) => {
                        let _ = reply.send(Ok(format!("stopped `{name}` while it was starting")));
                        return Err(Interrupt::Shutdown);
                    }
                    Some((Request::Act(Action::Stop), reply)) => {
                        let _ = reply.send(Ok(format!("stopped `{name}` while it was starting")));
                        return Err(Interrupt::Stop);
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{name}` is starting")));
                    }
                }
            }
        }
    }

    /// Serves requests and health results while the instance runs, until it
    /// ends one way or another.
    async fn supervise(&mut self, running: &Arc<dyn Running>, mut health: watch::Receiver<Option<bool>>) -> Ended {
        let shutdown = self.instance.resource.shutdown.clone();
        let mut probing = true;
        loop {
            tokio::select! {
                exit = running.exited() => return Ended::Exited(exit),
                changed = health.changed(), if probing => {
                    if changed.is_err() {
                        probing = false; // the probe has nothing more to say
                        continue;
                    }
                    let healthy = *health.borrow_and_update();
                    if let Some(healthy) = healthy
                        && self.state().is_some_and(|s| s.is_up())
                    {
                        self.set(if healthy { State::Healthy } else { State::Unhealthy });
                    }
                }
                message = self.control.recv() => {
                    let Some((request, reply)) = message else {
                        running.stop(shutdown.signal, shutdown.grace).await;
                        return Ended::Shutdown;
                    };
                    let name = self.instance.name.clone();
                    let action = match request {
                        Request::Shutdown => {
                            self.set(State::Stopping);
                            running.stop(shutdown.signal, shutdown.grace).await;
                            let _ = reply.send(Ok(format!("stopped `{name}`")));
                            return Ended::Shutdown;
                        }
                        Request::Act(action) => action,
                    };
                    match action {
                        Action::Stop | Action::Restart => {
                            self.set(State::Stopping);
                            running.stop(shutdown.signal, shutdown.grace).await;
                            let _ = reply.send(Ok(format!("stopped `{name}`")));
                            return if action == Action::Stop { Ended::Stopped } else { Ended::Restart };
                        }
                        Action::Kill => {
                            running.kill().await;
                            let _ = reply.send(Ok(format!("killed `{name}`")));
                        }
                        Action::Pause => {
                            let _ = reply.send(running.pause().await.map(|()| format!("paused `{name}`")));
                        }
                        Action::Resume => {
                            let _ = reply.send(running.resume().await.map(|()| format!("resumed `{name}`")));
                        }
                        Action::Partition => {
                            let answer = running.partition(true).await;
                            let _ = reply.send(answer.map(|()| format!("cut `{name}` off the network")));
                        }
                        Action::Heal => {
                            let answer = running.partition(false).await;
                            let _ = reply.send(answer.map(|()| format!("reconnected `{name}`")));
                        }
                        Action::Start => {
                            let _ = reply.send(Ok(format!("`{name}` is already running")));
                        }
                    }
                }
            }
        }
    }

    /// Waits until every dependency meets its condition; `Some` if a stop or
    /// shutdown came first.
    async fn wait_for_dependencies(&mut self) -> Option<Interrupt> {
        let mut version = self.shared.version.subscribe();
        let mut announced = false;
        loop {
            let unmet: Vec<String> = self
                .deps
                .iter()
                .filter(|(instances, _, condition)| !instances.iter().all(|i| self.met(i, *condition)))
                .map(|(_, name, condition)| format!("`{name}` {}", condition.as_str()))
                .collect();
            if unmet.is_empty() {
                return None;
            }
            // What it waits for has failed for good: it is blocked, and says by what.
            match self.failed_dependency() {
                Some(cause) if self.state() != Some(State::Blocked(cause.clone())) => self.set(State::Blocked(cause)),
                None if matches!(self.state(), Some(State::Blocked(_))) => self.set(State::Pending),
                _ => {}
            }
            if !announced {
                self.out.system(&format!("waiting for {}", unmet.join(", ")));
                announced = true;
            }
            tokio::select! {
                _ = version.changed() => {}
                message = self.control.recv() => match message {
                    None => return Some(Interrupt::Shutdown),
                    Some((Request::Shutdown, reply)) => {
                        let _ = reply.send(Ok(format!("stopped `{}` before it started", self.instance.name)));
                        return Some(Interrupt::Shutdown);
                    }
                    Some((Request::Act(Action::Stop), reply)) => {
                        let _ = reply.send(Ok(format!("stopped `{}` before it started", self.instance.name)));
                        return Some(Interrupt::Stop);
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{}` is waiting for {}", self.instance.name, unmet.join(", "))));
                    }
                }
            }
        }
    }

    /// The root cause when something this instance waits for has failed for
    /// good (or is itself blocked by a failure).
    fn failed_dependency(&self) -> Option<String> {
        self.deps.iter().find_map(|(instances, name, _)| {
            instances.iter().find_map(|i| match self.shared.status(i)?.state {
                State::Failed(reason) => Some(format!("`{name}` failed: {reason}")),
                State::Blocked(cause) => Some(cause),
                _ => None,
            })
        })
    }

    fn met(&self, instance: &str, condition: Condition) -> bool {
        let Some(status) = self.shared.status(instance) else { return false };
        match condition {
            Condition::Started => status.state.is_up(),
            Condition::Healthy => status.state == State::Healthy,
            Condition::Completed => status.state == State::Exited(Exit::Code(0)),
        }
    }

    /// Sleeps out a restart backoff, unless a request interrupts it.
    async fn pause_for(&mut self, delay: Duration) -> Option<Interrupt> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                message = self.control.recv() => match message {
                    None => return Some(Interrupt::Shutdown),
                    Some((Request::Shutdown, reply)) => {
                        let _ = reply.send(Ok("stopped during restart backoff".into()));
                        return Some(Interrupt::Shutdown);
                    }
                    Some((Request::Act(Action::Stop), reply)) => {
                        let _ = reply.send(Ok("stopped during restart backoff".into()));
                        return Some(Interrupt::Stop);
                    }
                    Some((Request::Act(Action::Start | Action::Restart), reply)) => {
                        let _ = reply.send(Ok("restarting now".into()));
                        return Some(Interrupt::Now);
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{}` is waiting to restart", self.instance.name)));
                    }
                }
            }
        }
    }
}
