//! The steady load: POSTs at a fixed rate until stopped, remembering what
//! the sender acknowledged.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{Ctx, demo};

/// A steady stream of POSTs until stopped; remembers what was acknowledged,
/// as 16-byte ids: an hour of load is 70 000 of them, and the soak measures
/// apphost's own memory while they pile up.
pub(super) struct Load {
    stop: CancellationToken,
    acknowledged: Arc<Mutex<Vec<uuid::Uuid>>>,
    refused: Arc<Mutex<usize>>,
    unavailable: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Stops it; returns (acknowledged ids, refused, of which 503).
    /// The ids acknowledged until now.
    pub(super) fn acknowledged_so_far(&self) -> Vec<String> {
        self.acknowledged.lock().expect("lock").iter().map(ToString::to_string).collect()
    }

    pub(super) async fn finish(self) -> (Vec<String>, usize, usize) {
        self.stop.cancel();
        let _ = self.task.await;
        let acknowledged = self.acknowledged.lock().expect("lock").iter().map(ToString::to_string).collect();
        let refused = *self.refused.lock().expect("lock");
        let unavailable = *self.unavailable.lock().expect("lock");
        (acknowledged, refused, unavailable)
    }
}

impl Ctx {
    pub(super) fn load(&self, tag: &str, rate: Option<u32>) -> Result<Load, String> {
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
                match demo::post_item(&client, &sender, format!("{tag} {n}"), n).await {
                    Ok(Ok(id)) => match uuid::Uuid::parse_str(&id) {
                        Ok(id) => ack.lock().expect("lock").push(id),
                        // Not an id the sender gives: counted as refused, so the run cannot pass unseen.
                        Err(_) => *refused2.lock().expect("lock") += 1,
                    },
                    Ok(Err(status)) => {
                        *refused2.lock().expect("lock") += 1;
                        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                            *unavailable2.lock().expect("lock") += 1;
                        }
                    }
                    Err(_) => *refused2.lock().expect("lock") += 1,
                }
            }
        });
        Ok(Load { stop, acknowledged, refused, unavailable, task })
    }
}
