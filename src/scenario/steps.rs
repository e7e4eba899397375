//! Scenarios as data: a list of [`Step`]s (load, chaos, wait, assert). The
//! built-in scenarios are written this way, and so are scenario files.

use std::time::Duration;

pub use contracts::Action;

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Start the steady load (at `rate` per second, or `--rate`).
    Load {
        rate: Option<u32>,
    },
    /// Stop it; what it got acknowledged is what must be delivered.
    StopLoad,
    Wait(Duration),
    /// Until every instance of the resource is healthy again.
    WaitHealthy(String),
    Chaos(Chaos),
    /// A malformed message on the receiver's queue, from an independent producer.
    Poison,
    /// An item already delivered, sent again under its message id (and a new
    /// `_AMQ_DUPL_ID`, so the broker lets it through): only the receiver's
    /// deduplication stands between it and a second effect.
    Redeliver,
    Assert(Expect),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    pub action: Action,
    pub resource: String,
    /// Undo after this long (stop → start, pause → resume, partition → heal).
    pub lasting: Option<Duration>,
    /// Wait for this moment before acting.
    pub when: When,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    /// While the resource is in the middle of a batch: for the sender, its
    /// relay has rows taken but not yet accepted by the broker; for the
    /// receiver, it holds deliveries not yet committed and settled.
    BatchInFlight,
    /// The receiver's commit is durable but has not answered, so nothing is
    /// accepted yet (held at its database; see `scenario::hold`). Kill only.
    CommitHeld,
    /// The receiver is inside its transaction, before commit (its insert
    /// waits on a lock; see `scenario::hold`). Kill only.
    StoreBlocked,
}

impl When {
    pub const ALL: [When; 4] = [When::Now, When::BatchInFlight, When::CommitHeld, When::StoreBlocked];

    /// The name scenario files use.
    pub fn as_str(self) -> &'static str {
        match self {
            When::Now => "now",
            When::BatchInFlight => "batch-in-flight",
            When::CommitHeld => "commit-held",
            When::StoreBlocked => "store-blocked",
        }
    }

    /// Whether the moment is arranged at the receiver's database.
    pub fn holds_the_database(self) -> bool {
        matches!(self, When::CommitHeld | When::StoreBlocked)
    }
}

/// Checks beyond the ones every scenario makes (lost = 0, duplicate effects = 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    /// At most this many requests answered other than 201.
    pub refused_at_most: Option<usize>,
    /// At least this many answered 503 (the service said it cannot promise now).
    pub unavailable_at_least: Option<usize>,
    /// At least this many more messages rejected to the DLQ.
    pub rejected_at_least: Option<u64>,
}

/// The built-in scenario `name`, with `outage` as the length of its fault.
pub fn built_in(name: &str, roles: &super::Roles, outage: Duration) -> Option<Vec<Step>> {
    use Step::*;
    let chaos = |action, resource: &str, lasting| {
        Chaos(self::Chaos { action, resource: resource.to_owned(), lasting, when: When::Now })
    };
    let settle = Wait(Duration::from_secs(2));
    // Steady load, the fault (and what waits for its end), steady load again, then the checks.
    let under_load = |fault: Vec<Step>, expect: Option<Expect>| {
        let mut steps = vec![Load { rate: None }, settle.clone()];
        steps.extend(fault);
        steps.extend([settle.clone(), StopLoad]);
        steps.extend(expect.map(Assert));
        steps
    };
    let steps = match name {
        "smoke" => under_load(vec![], None),
        // The sender keeps answering 201 through the outage.
        "broker-outage" => under_load(
            vec![chaos(Action::Stop, &roles.broker, Some(outage))],
            Some(Expect { refused_at_most: Some(0), ..Expect::default() }),
        ),
        "receiver-offline" => under_load(
            vec![chaos(Action::Stop, &roles.receiver, Some(outage)), WaitHealthy(roles.receiver.clone())],
            Some(Expect { refused_at_most: Some(0), ..Expect::default() }),
        ),
        "sender-crash" => under_load(
            vec![
                Chaos(self::Chaos {
                    action: Action::Kill,
                    resource: roles.sender.clone(),
                    lasting: None,
                    when: When::BatchInFlight,
                }),
                WaitHealthy(roles.sender.clone()),
            ],
            None,
        ),
        // Killed between its commit and its accept: the broker redelivers a stored
        // batch, and only deduplication keeps it from a second effect.
        "receiver-crash-after-commit" => under_load(
            vec![
                Chaos(self::Chaos {
                    action: Action::Kill,
                    resource: roles.receiver.clone(),
                    lasting: None,
                    when: When::CommitHeld,
                }),
                WaitHealthy(roles.receiver.clone()),
            ],
            None,
        ),
        // Killed inside its transaction: nothing was stored, and nothing may be accepted.
        "receiver-crash-before-commit" => under_load(
            vec![
                Chaos(self::Chaos {
                    action: Action::Kill,
                    resource: roles.receiver.clone(),
                    lasting: None,
                    when: When::StoreBlocked,
                }),
                WaitHealthy(roles.receiver.clone()),
            ],
            None,
        ),
        "receiver-crash" => under_load(
            vec![
                Chaos(self::Chaos {
                    action: Action::Kill,
                    resource: roles.receiver.clone(),
                    lasting: None,
                    when: When::BatchInFlight,
                }),
                WaitHealthy(roles.receiver.clone()),
            ],
            None,
        ),
        // While the database is down the API says so (503) instead of promising.
        "db-restart" => under_load(
            vec![chaos(Action::Stop, &roles.sender_db, Some(outage)), WaitHealthy(roles.sender_db.clone())],
            Some(Expect { unavailable_at_least: Some(1), ..Expect::default() }),
        ),
        "poison" => under_load(vec![Poison], Some(Expect { rejected_at_least: Some(1), ..Expect::default() })),
        "redelivery" => under_load(vec![Redeliver], None),
        _ => return None,
    };
    Some(steps)
}
