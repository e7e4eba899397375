//! Load for the benchmark: closed loop (a fixed number of connections, each
//! sending as soon as its last answer came: the most the sender takes) and
//! open loop (requests at fixed times whatever the answers do, so a slow
//! answer cannot hold the next request back and hide its own delay).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

pub use super::wire::Client;

/// Where the sender takes items.
const ITEMS: &str = "/api/EntityItems";

/// What one load run got.
pub struct Run {
    /// Items the sender acknowledged (201).
    pub ids: Vec<uuid::Uuid>,
    /// Anything else, by why: a status (`503`) or the kind of error
    /// (`connect`, `timeout`).
    pub why: BTreeMap<String, usize>,
    /// Requests not sent at their time because too many were still open.
    pub not_sent: usize,
    /// From the moment a request was due to its answer, in microseconds.
    pub latency: Histogram<u64>,
    pub seconds: f64,
}

/// The most requests the sustained run's open loops leave unanswered at once
/// (the next due is counted as not sent), and the most connections the load
/// keeps.
pub const MOST_OPEN: usize = 8192;

/// Adds the failures of `from` to `into`, why by why.
pub fn add_why(into: &mut BTreeMap<String, usize>, from: &BTreeMap<String, usize>) {
    for (why, n) in from {
        *into.entry(why.clone()).or_insert(0) += n;
    }
}

/// How many failed, whatever the why.
pub fn failed(why: &BTreeMap<String, usize>) -> usize {
    why.values().sum()
}

impl Run {
    pub fn failed(&self) -> usize {
        failed(&self.why)
    }

    pub fn rate(&self) -> f64 {
        self.ids.len() as f64 / self.seconds.max(1e-9)
    }
}

pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// A new item's JSON.
fn body(tag: &str, n: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct New<'a> {
        name: &'a str,
        value: u64,
    }
    serde_json::to_vec(&New { name: &format!("{tag} {n}"), value: n }).expect("an item serializes")
}

/// One POST; the acknowledged id, or why not (a status, or the kind of error).
async fn post(client: &Client, body: Vec<u8>) -> Result<uuid::Uuid, String> {
    #[derive(serde::Deserialize)]
    struct Created {
        id: uuid::Uuid,
    }
    let read = |status: u16, body: &[u8]| match status {
        201 => serde_json::from_slice::<Created>(body).map(|c| c.id).map_err(|_| "no id".to_owned()),
        other => Err(other.to_string()),
    };
    client.post_json(ITEMS, &body, read).await.map_err(|failure| failure.as_str().to_owned())?
}

/// `failures` as `503 × 12, connect × 3`.
pub fn why_text(failures: &BTreeMap<String, usize>) -> String {
    failures.iter().map(|(why, n)| format!("{why} × {n}")).collect::<Vec<_>>().join(", ")
}

/// `connections` loops, each POSTing as soon as its last answer came, for `duration`.
pub async fn closed(client: &Client, connections: usize, duration: Duration, tag: &str) -> Run {
    client.run(closed_here(client.clone(), connections, duration, tag.to_owned())).await
}

async fn closed_here(client: Client, connections: usize, duration: Duration, tag: String) -> Run {
    let began = Instant::now();
    let end = began + duration;
    let loops = (0..connections).map(|c| {
        let (client, tag) = (client.clone(), format!("{tag} c{c}"));
        async move {
            let (mut ids, mut why, mut latency) = (Vec::new(), BTreeMap::new(), histogram());
            let mut n = 0;
            while Instant::now() < end {
                n += 1;
                let sent = Instant::now();
                match post(&client, body(&tag, n)).await {
                    Ok(id) => {
                        ids.push(id);
                        let _ = latency.record(sent.elapsed().as_micros() as u64);
                    }
                    Err(e) => *why.entry(e).or_insert(0) += 1,
                }
            }
            (ids, why, latency)
        }
    });
    let mut run = Run { ids: Vec::new(), why: BTreeMap::new(), not_sent: 0, latency: histogram(), seconds: 0.0 };
    for (ids, why, latency) in futures::future::join_all(loops).await {
        run.ids.extend(ids);
        add_why(&mut run.why, &why);
        let _ = run.latency.add(&latency);
    }
    run.seconds = began.elapsed().as_secs_f64();
    run
}

/// `connections` loops sending `GET path` for `duration`: how many were
/// answered with a success.
pub async fn closed_get(client: &Client, path: &str, connections: usize, duration: Duration) -> usize {
    client.run(closed_get_here(client.clone(), path.to_owned(), connections, duration)).await
}

async fn closed_get_here(client: Client, path: String, connections: usize, duration: Duration) -> usize {
    let (client, path) = (&client, path.as_str());
    let end = Instant::now() + duration;
    let loops = (0..connections).map(|_| async move {
        let mut answered = 0;
        while Instant::now() < end {
            let ok = client.get(path, |status, _| (200..300).contains(&status)).await.unwrap_or(false);
            answered += usize::from(ok);
        }
        answered
    });
    futures::future::join_all(loops).await.into_iter().sum()
}

/// `connections` loops POSTing until `n` items are acknowledged (or as many
/// requests have failed); the acknowledged ids.
pub async fn count(client: &Client, connections: usize, n: usize, tag: &str) -> Vec<uuid::Uuid> {
    client.run(count_here(client.clone(), connections, n, tag.to_owned())).await
}

async fn count_here(client: Client, connections: usize, n: usize, tag: String) -> Vec<uuid::Uuid> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loops = (0..connections).map(|c| {
        let (client, tag, sent, failed) = (client.clone(), format!("{tag} c{c}"), sent.clone(), failed.clone());
        async move {
            let mut ids = Vec::new();
            while sent.fetch_add(1, Ordering::Relaxed) < n && failed.load(Ordering::Relaxed) < n {
                match post(&client, body(&tag, ids.len() as u64)).await {
                    Ok(id) => ids.push(id),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        sent.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            ids
        }
    });
    futures::future::join_all(loops).await.into_iter().flatten().collect()
}

/// `rate` POSTs a second at fixed times for `duration`; at most `open` unanswered at once.
pub async fn open(client: &Client, rate: f64, duration: Duration, open: usize, tag: &str) -> Run {
    client.run(open_here(client.clone(), rate, duration, open, tag.to_owned())).await
}

async fn open_here(client: Client, rate: f64, duration: Duration, open: usize, tag: String) -> Run {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let every = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let permits = Arc::new(Semaphore::new(open));
    let results = Arc::new(Mutex::new((Vec::new(), BTreeMap::<String, usize>::new(), histogram())));
    let began = Instant::now();
    let mut not_sent = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = began + every.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let (client, results, body) = (client.clone(), results.clone(), body(&tag, n));
        tasks.spawn(async move {
            let id = post(&client, body).await;
            // From when it was due: a request sent late counts its wait.
            let took = due.elapsed().as_micros() as u64;
            drop(permit);
            let mut r = results.lock().expect("load lock");
            match id {
                Ok(id) => {
                    r.0.push(id);
                    let _ = r.2.record(took);
                }
                Err(e) => *r.1.entry(e).or_insert(0) += 1,
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let seconds = began.elapsed().as_secs_f64();
    let mut r = results.lock().expect("load lock");
    let (ids, why, latency) =
        (std::mem::take(&mut r.0), std::mem::take(&mut r.1), std::mem::replace(&mut r.2, histogram()));
    Run { ids, why, not_sent, latency, seconds }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        net::SocketAddr,
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use axum::extract::{ConnectInfo, State};

    /// What the server saw: requests, those unanswered now and at most, and
    /// the connections they came on.
    #[derive(Default)]
    struct Seen {
        requests: AtomicUsize,
        open: AtomicUsize,
        most_open: AtomicUsize,
        peers: Mutex<HashSet<SocketAddr>>,
    }

    /// An HTTP server answering `POST /api/EntityItems` as the sender does
    /// (201 and an id), 40 of every 200 requests in a row 60 ms late, so the
    /// unanswered requests rise by tens and fall again, as in the sender's
    /// hiccups.
    async fn server() -> (String, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route(
                "/api/EntityItems",
                axum::routing::post(
                    async |State(seen): State<Arc<Seen>>, ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                        let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                        let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most_open.fetch_max(open, Ordering::SeqCst);
                        seen.peers.lock().unwrap().insert(peer);
                        if n % 200 < 40 {
                            tokio::time::sleep(Duration::from_millis(60)).await;
                        }
                        seen.open.fetch_sub(1, Ordering::SeqCst);
                        let id = uuid::Uuid::new_v4().to_string();
                        (axum::http::StatusCode::CREATED, axum::Json(serde_json::json!({ "id": id })))
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        (url, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_load_keeps_its_connections_instead_of_opening_new_ones_after_each_rise() {
        let (url, seen) = server().await;
        let client = super::Client::new(&url).unwrap();
        let run = super::open(&client, 2000.0, Duration::from_secs(1), 4096, "test").await;
        assert_eq!(run.ids.len(), 2000, "every request answered: {:?}", run.why);
        // A connection is opened only when every one kept is busy, so there are
        // about as many as requests were ever unanswered at once. A pool keeping
        // 8 idle closes the rest after each rise and opens them again at the
        // next: 367 connections against tens unanswered at most.
        let (connections, most_open) = (seen.peers.lock().unwrap().len(), seen.most_open.load(Ordering::SeqCst));
        assert!(
            connections <= 2 * most_open + 8,
            "{connections} connections, at most {most_open} requests unanswered at once"
        );
    }
}
