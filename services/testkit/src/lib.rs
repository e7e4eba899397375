//! Test support that spawns the real thing: a PostgreSQL server, an ActiveMQ
//! Artemis broker, and an independent AMQP peer (python-qpid-proton).
//!
//! - [`process`]: children that die with the test process, whatever ends it;
//! - [`postgres`]: a server per test binary (or a private one to stop and
//!   start), and a fresh database per test;
//! - [`artemis`]: a broker per test binary (or a private one to kill), and a
//!   unique queue name per test;
//! - [`peer`]: drain and send with a client that shares no code with ours.
//!
//! Nothing is mocked; where a binary is missing, the error says how to install it.

pub mod artemis;
pub mod peer;
pub mod postgres;
pub mod process;

use std::{net::TcpListener, time::Duration};

pub use artemis::Artemis;
pub use postgres::Postgres;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: each stays bound until all are picked,
/// or binding port 0 again may hand the same one out twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("binding port 0")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("a bound port").port())
}

/// A name unique to this call, for databases and queues.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sample from a service's `/metrics`, summed over its labels (0 when absent).
pub async fn metric(base_url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics")
        .text()
        .await
        .expect("reading /metrics");
    service_defaults::metrics::sample(&text, series).unwrap_or(0.0)
}
