//! One instance's life, owned by one task. Nobody else changes its state.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::mpsc;

use super::{Control, Reply, Shared, State, health};
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
    pub control: mpsc::Receiver<(Control, Reply)>,
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

    pub async fn run(mut self) {
        let mut want_running = true;
        let mut crashes = 0u32;
        loop {
            if !want_running {
                match self.control.recv().await {
                    None => return,
                    Some((Control::Start | Control::Restart, reply)) => {
                        want_running = true;
                        crashes = 0;
                        let _ = reply.send(Ok(format!("starting `{}`", self.instance.name)));
                    }
                    Some((Control::Shutdown, reply)) => {
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
                Some(Control::Shutdown) => return,
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
            let running = match self.runtime.start(&self.instance, self.out.clone()).await {
                Ok(running) => running,
                Err(err) => {
                    let mut reason = err.message.clone();
                    if let Some(help) = &err.help {
                        reason = format!("{reason} (help: {help})");
                    }
                    self.set(State::Failed(reason));
                    want_running = false;
                    continue;
                }
            };
            let name = self.instance.name.clone();
            self.shared.running.lock().expect("running lock").insert(name.clone(), running.clone());
            let id = running.id();
            self.shared.update(&name, |s| {
                s.started_at = Some(launched);
                s.id = Some(id);
            });
            self.set(State::Running);
            let probe = tokio::spawn(health::watch(
                self.instance.clone(),
                running.clone(),
                self.shared.clone(),
                self.logs.clone(),
                self.out.clone(),
                first_line,
            ));

            let troubles = tokio::spawn(health::watch_troubles(
                self.instance.clone(),
                self.shared.clone(),
                self.logs.clone(),
                self.out.clone(),
                first_line,
            ));

            let ended = self.supervise(&running).await;
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
                        Some(Control::Shutdown) => return,
                        Some(_) => {
                            want_running = false;
                            self.set(State::Stopped);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Serves controls while the instance runs, until it ends one way or another.
    async fn supervise(&mut self, running: &Arc<dyn Running>) -> Ended {
        let shutdown = self.instance.resource.shutdown.clone();
        loop {
            tokio::select! {
                exit = running.exited() => return Ended::Exited(exit),
                message = self.control.recv() => {
                    let Some((control, reply)) = message else {
                        running.stop(shutdown.signal, shutdown.grace).await;
                        return Ended::Shutdown;
                    };
                    let name = self.instance.name.clone();
                    match control {
                        Control::Stop | Control::Restart | Control::Shutdown => {
                            self.set(State::Stopping);
                            running.stop(shutdown.signal, shutdown.grace).await;
                            let _ = reply.send(Ok(format!("stopped `{name}`")));
                            return match control {
                                Control::Stop => Ended::Stopped,
                                Control::Restart => Ended::Restart,
                                _ => Ended::Shutdown,
                            };
                        }
                        Control::Kill => {
                            running.kill().await;
                            let _ = reply.send(Ok(format!("killed `{name}`")));
                        }
                        Control::Pause => {
                            let _ = reply.send(running.pause().await.map(|()| format!("paused `{name}`")));
                        }
                        Control::Resume => {
                            let _ = reply.send(running.resume().await.map(|()| format!("resumed `{name}`")));
                        }
                        Control::Partition => {
                            let _ = reply.send(running.partition(true).await.map(|()| format!("cut `{name}` off the network")));
                        }
                        Control::Heal => {
                            let _ = reply.send(running.partition(false).await.map(|()| format!("reconnected `{name}`")));
                        }
                        Control::Start => {
                            let _ = reply.send(Ok(format!("`{name}` is already running")));
                        }
                    }
                }
            }
        }
    }

    /// Waits until every dependency meets its condition; `Some(control)` if a
    /// stop or shutdown came first.
    async fn wait_for_dependencies(&mut self) -> Option<Control> {
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
            if !announced {
                self.out.system(&format!("waiting for {}", unmet.join(", ")));
                announced = true;
            }
            tokio::select! {
                _ = version.changed() => {}
                message = self.control.recv() => match message {
                    None => return Some(Control::Shutdown),
                    Some((control @ (Control::Stop | Control::Shutdown), reply)) => {
                        let _ = reply.send(Ok(format!("stopped `{}` before it started", self.instance.name)));
                        return Some(control);
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{}` is waiting for {}", self.instance.name, unmet.join(", "))));
                    }
                }
            }
        }
    }

    fn met(&self, instance: &str, condition: Condition) -> bool {
        let Some(status) = self.shared.status(instance) else { return false };
        match condition {
            Condition::Started => status.state.is_up(),
            Condition::Healthy => status.state == State::Healthy,
            Condition::Completed => status.state == State::Exited(Exit::Code(0)),
        }
    }

    /// Sleeps out a restart backoff, unless a control interrupts it.
    async fn pause_for(&mut self, delay: Duration) -> Option<Control> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                message = self.control.recv() => match message {
                    None => return Some(Control::Shutdown),
                    Some((control @ (Control::Stop | Control::Shutdown), reply)) => {
                        let _ = reply.send(Ok("stopped during restart backoff".into()));
                        return Some(control);
                    }
                    Some((Control::Start | Control::Restart, reply)) => {
                        let _ = reply.send(Ok("restarting now".into()));
                        return None;
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Err(format!("`{}` is waiting to restart", self.instance.name)));
                    }
                }
            }
        }
    }
}
