//! The receiver's effects, counted per life of its process: its own
//! `receiver_processed_total` against the inbox rows its database committed
//! during that life.

use contracts::metrics::{RECEIVER_DUPLICATES, RECEIVER_PROCESSED};

use super::Ctx;

/// The receiver's effects counted two ways over one life of its process:
/// its own `receiver_processed_total`, and the inbox rows its database
/// committed during that life. A message taking effect twice counts as
/// processed twice but can have only one row, so the counter runs ahead.
/// The counters start again with each process: a kill, stop or restart of
/// the receiver closes one life (what it showed is kept), and the next life
/// is the process launched after it, whose rows are those stamped after its
/// launch (PostgreSQL stamps them with this machine's clock too).
#[derive(Debug, Clone, Copy)]
pub(super) struct Effects {
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
    pub(super) fn next_life(ended: Option<chrono::DateTime<chrono::Utc>>, found: u64, absorbed: f64) -> Self {
        Self { life: None, ended, since: chrono::Utc::now(), processed_base: 0.0, absorbed_base: 0.0, found, absorbed }
    }
}

impl Ctx {
    /// The launch time of the receiver's running process.
    pub(super) fn receiver_life(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.supervisor
            .snapshot()
            .into_iter()
            .find(|s| s.resource == self.roles.receiver && s.state.is_up())?
            .started_at
    }

    /// Starts counting the receiver's effects afresh (nothing is in flight).
    pub(super) async fn watch_effects(&self) {
        let scrape = self.scrape(&self.roles.receiver).await;
        *self.effects.lock().expect("lock") = Effects {
            life: self.receiver_life(),
            since: chrono::Utc::now(),
            processed_base: scrape.get(RECEIVER_PROCESSED.series).unwrap_or(0.0),
            absorbed_base: scrape.get(RECEIVER_DUPLICATES.series).unwrap_or(0.0),
            ..Effects::next_life(None, 0, 0.0)
        };
    }

    /// Counts the live receiver's life into the totals ahead of a fault that
    /// ends it (once: a life already counted adds nothing).
    pub(super) async fn close_life(&self) -> Result<(), String> {
        let (found, absorbed) = self.tally().await?;
        let mut effects = self.effects.lock().expect("lock");
        (effects.found, effects.absorbed, effects.ended) = (found, absorbed, effects.life);
        Ok(())
    }

    /// The receiver's process is about to end: watch the next one from its launch.
    pub(super) fn open_life(&self) {
        let mut effects = self.effects.lock().expect("lock");
        *effects = Effects::next_life(effects.ended, effects.found, effects.absorbed);
    }

    /// The life to count now: (since, processed base, absorbed base), or
    /// `None` while no receiver runs or the running one is already counted.
    /// A process other than the watched one (launched after a fault, or
    /// restarted on its own) is counted from its launch.
    pub(super) fn current_life(&self) -> Option<(chrono::DateTime<chrono::Utc>, f64, f64)> {
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
    pub(super) async fn tally(&self) -> Result<(u64, f64), String> {
        let live = match self.current_life() {
            None => (0, 0.0),
            Some((since, processed_base, absorbed_base)) => {
                let scrape = self.scrape(&self.roles.receiver).await;
                let processed = scrape.get(RECEIVER_PROCESSED.series).unwrap_or(0.0) - processed_base;
                let absorbed = (scrape.get(RECEIVER_DUPLICATES.series).unwrap_or(0.0) - absorbed_base).max(0.0);
                let pool = self.receiver_db.as_ref().ok_or("the receiver's database URL is not valid")?;
                let rows = super::demo::inbox_rows_since(pool, since).await?;
                ((processed - rows as f64).max(0.0) as u64, absorbed)
            }
        };
        let effects = self.effects.lock().expect("lock");
        Ok((effects.found + live.0, effects.absorbed + live.1))
    }
}
