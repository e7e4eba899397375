//! The steady load: POSTs at a fixed rate until stopped, remembering what
//! the sender acknowledged.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{Ctx, demo};

/// A steady stream of POSTs until stopped; remembers what was acknowledged.
pub(super) struct Load {
    stop: CancellationToken,
    acknowledged: Arc<Ledger>,
    refused: Arc<Mutex<usize>>,
    unavailable: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// The ids acknowledged until now.
    pub(super) fn acknowledged_so_far(&self) -> Vec<String> {
        self.acknowledged.ids()
    }

    /// Adds ids acknowledged to writes made beside the load (a fault's burst)
    /// to its ledger, so that an hour of them costs no memory either; an id
    /// that is not a UUID is handed back, to be checked (and fail) in memory.
    pub(super) fn also_acknowledged(&self, ids: Vec<String>) -> Vec<String> {
        ids.into_iter()
            .filter(|id| match uuid::Uuid::parse_str(id) {
                Ok(uuid) => {
                    self.acknowledged.push(uuid);
                    false
                }
                Err(_) => true,
            })
            .collect()
    }

    /// Stops it; returns (acknowledged ids, refused, of which 503).
    pub(super) async fn finish(self) -> (Vec<String>, usize, usize) {
        self.stop.cancel();
        let _ = self.task.await;
        let acknowledged = self.acknowledged.ids();
        let refused = *self.refused.lock().expect("lock");
        let unavailable = *self.unavailable.lock().expect("lock");
        (acknowledged, refused, unavailable)
    }
}

/// The ids the sender acknowledged, 16 bytes each in an unnamed temporary
/// file (no path another user could plant a link at; gone with the process):
/// an hour of load is 70,000 ids and a day 1.7 million, and a soak measures
/// apphost's own memory while they pile up. Once a write fails (the disk is
/// full), the ids from then on are kept in memory instead: none is ever
/// dropped, or its loss could not be seen.
pub(super) struct Ledger(Mutex<Entries>);

struct Entries {
    file: Option<std::fs::File>,
    /// Bytes of `file` known written: whole ids only.
    written: u64,
    /// Not yet written: at most [`Ledger::BATCH`].
    pending: Vec<uuid::Uuid>,
    /// Those that came after a failed write.
    spilled: Vec<uuid::Uuid>,
    /// A write failed: the file is only read from now on, so the order holds.
    refused: bool,
}

impl Ledger {
    const BATCH: usize = 256;

    pub(super) fn new() -> Self {
        Self(Mutex::new(Entries {
            file: tempfile::tempfile().ok(),
            written: 0,
            pending: Vec::with_capacity(Self::BATCH),
            spilled: Vec::new(),
            refused: false,
        }))
    }

    pub(super) fn push(&self, id: uuid::Uuid) {
        let mut e = self.0.lock().expect("ledger lock");
        e.pending.push(id);
        if e.pending.len() >= Self::BATCH {
            e.write_pending();
        }
    }

    /// Every id pushed so far, in order of arrival.
    pub(super) fn ids(&self) -> Vec<String> {
        use std::os::unix::fs::FileExt;
        let mut e = self.0.lock().expect("ledger lock");
        e.write_pending();
        let mut bytes = vec![0u8; e.written as usize];
        if let Some(f) = &e.file
            && f.read_exact_at(&mut bytes, 0).is_err()
        {
            bytes.clear();
        }
        let from_file = bytes.chunks_exact(16).map(|b| uuid::Uuid::from_bytes(b.try_into().expect("16 bytes")));
        from_file.chain(e.spilled.iter().copied()).map(|id| id.to_string()).collect()
    }
}

impl Entries {
    fn write_pending(&mut self) {
        use std::os::unix::fs::FileExt;
        let bytes: Vec<u8> = self.pending.iter().flat_map(|id| *id.as_bytes()).collect();
        let ok = !self.refused && self.file.as_ref().is_some_and(|f| f.write_all_at(&bytes, self.written).is_ok());
        if ok {
            self.written += bytes.len() as u64;
            self.pending.clear();
        } else {
            // What the failed write left is past `written` and never read.
            self.refused = true;
            let pending = std::mem::take(&mut self.pending);
            self.spilled.extend(pending);
        }
    }
}

impl Ctx {
    pub(super) fn load(&self, tag: &str, rate: Option<u32>) -> Result<Load, String> {
        let sender = self.url(&self.roles.sender)?;
        let stop = CancellationToken::new();
        let acknowledged = Arc::new(Ledger::new());
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
                        Ok(id) => ack.push(id),
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

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn the_ledger_gives_back_every_id_in_order() {
        let ledger = Ledger::new();
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| uuid::Uuid::new_v4()).collect();
        for id in &ids[..5000] {
            ledger.push(*id);
        }
        assert_eq!(ledger.ids().len(), 5000, "read while being written");
        for id in &ids[5000..] {
            ledger.push(*id);
        }
        assert_eq!(ledger.ids(), ids.iter().map(ToString::to_string).collect::<Vec<_>>());
    }

    #[test]
    fn ids_a_write_fails_for_are_kept_in_memory() {
        let ledger = Ledger::new();
        let ids: Vec<uuid::Uuid> = (0..600).map(|_| uuid::Uuid::new_v4()).collect();
        for id in &ids[..300] {
            ledger.push(*id);
        }
        assert_eq!(ledger.ids().len(), 300);
        // As a full disk would: the file refuses every write from now on (read-only).
        let refusing = std::fs::File::open("/dev/null").unwrap();
        let kept = ledger.0.lock().unwrap().file.replace(refusing);
        for id in &ids[300..] {
            ledger.push(*id);
        }
        // The ids written before stay readable: give the ledger its file back to read them.
        ledger.0.lock().unwrap().file = kept;
        assert_eq!(ledger.ids(), ids.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_eq!(ledger.0.lock().unwrap().spilled.len(), 300, "what the file refused is in memory");
    }
}
