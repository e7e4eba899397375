//! Health probes: tcp, http, exec and log-line checks on an interval, with
//! retries and a start period. A probe only says healthy or not; its job
//! decides what that does to the state.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::Instant,
};

use super::Shared;
use crate::{
    logs::LogStore,
    plan::Instance,
    runtime::{Output, Running},
    topology::Check,
};

/// Probes `instance` until aborted, sending each verdict to its job: `true`
/// healthy, `false` unhealthy (after `retries` failures past the start period).
pub(super) async fn watch(
    instance: Instance,
    running: Arc<dyn Running>,
    logs: LogStore,
    mut next_seq: u64,
    verdict: watch::Sender<Option<bool>>,
) {
    let name = instance.name.clone();
    let set = |healthy: bool| {
        verdict.send_if_modified(|v| {
            let changed = *v != Some(healthy);
            *v = Some(healthy);
            changed
        });
    };
    let Some(probe) = instance.resource.health.clone() else {
        set(true); // nothing to check: started is healthy
        verdict.closed().await;
        return;
    };
    let started = Instant::now();
    let client = crate::loopback::client(Some(probe.timeout));
    let regex = match &probe.check {
        Check::Log { pattern } => regex::Regex::new(pattern).ok(),
        _ => None,
    };
    // Log lines are checked from the start of this run on (`next_seq`), once each.
    let mut log_matched = false;
    let mut failures = 0u32;
    let mut started_up = false;
    loop {
        let ok = match &probe.check {
            Check::Tcp { port } => match instance.port(port) {
                Some(p) => tokio::time::timeout(probe.timeout, TcpStream::connect(("127.0.0.1", p)))
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            },
            Check::Http { path, port } => match instance.port(port) {
                Some(p) => client
                    .get(format!("http://127.0.0.1:{p}{path}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => false,
            },
            Check::Exec { command } => running.exec(command.clone(), probe.timeout).await == Ok(0),
            Check::Amqp { port } => match instance.port(port) {
                Some(p) => amqp_opens(&instance, p, probe.timeout).await,
                None => false,
            },
            Check::PgIsReady { port } => match instance.port(port) {
                Some(p) => {
                    let (user, database) = instance.pg_login();
                    postgres_ready(p, &user, &database, probe.timeout).await
                }
                None => false,
            },
            Check::Log { .. } => {
                for line in logs.since(Some(&name), next_seq) {
                    next_seq = line.seq + 1;
                    log_matched |= regex.as_ref().is_some_and(|re| re.is_match(&line.text));
                }
                log_matched
            }
        };
        if ok {
            failures = 0;
            // As Docker's start period: it ends at the first success, so a later failure counts at once.
            started_up = true;
            set(true);
        } else if started_up || started.elapsed() >= probe.start_period {
            failures += 1;
            if failures >= probe.retries {
                set(false);
            }
        }
        // Until the first success, as Docker's start_interval: healthy within a
        // tenth of a second of being ready, not within a whole interval.
        let pause = if started_up { probe.interval } else { probe.interval.min(START_INTERVAL) };
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
    }
}

/// How often a probe runs before its first success (at most; a shorter
/// `interval` wins).
const START_INTERVAL: Duration = Duration::from_millis(100);

/// Whether an AMQP 1.0 connection opens on `port` within `limit`, as the
/// resource's user when its kind gives one (`amqp://user:password@…`).
async fn amqp_opens(instance: &Instance, port: u16, limit: Duration) -> bool {
    let mut url = url::Url::parse(&format!("amqp://127.0.0.1:{port}")).expect("a valid URL");
    if let Some(own) =
        instance.connection_string().and_then(|cs| url::Url::parse(&cs).ok()).filter(|u| u.scheme() == "amqp")
    {
        let _ = url.set_username(own.username());
        let _ = url.set_password(own.password());
    }
    opens(&format!("apphost-health-{}", instance.name), url, limit).await
}

/// Whether an AMQP open to `url` completes within `limit` (the broker's health; the benchmark's too).
pub(crate) async fn opens(container_id: &str, url: url::Url, limit: Duration) -> bool {
    let open = async {
        let mut connection = fe2o3_amqp::Connection::open(container_id.to_owned(), url).await.ok()?;
        let _ = connection.close().await;
        Some(())
    };
    tokio::time::timeout(limit, open).await.is_ok_and(|opened| opened.is_some())
}

/// Whether the PostgreSQL server on `port` accepts connections, asked as
/// `user` on `database`: `pg_isready`'s answer (libpq's `PQping`) without its
/// process. Only the startup message goes out; the first answer decides, and
/// the connection is closed there (at a password prompt, which PostgreSQL
/// does not log).
async fn postgres_ready(port: u16, user: &str, database: &str, limit: Duration) -> bool {
    let Ok(Some((answer, stream))) = tokio::time::timeout(limit, postgres_answer(port, user, database)).await else {
        return false;
    };
    // Off the probe's clock, and bounded by it.
    tokio::spawn(tokio::time::timeout(limit, leave(stream, answer == PgAnswer::LoggedIn)));
    match answer {
        PgAnswer::Authentication | PgAnswer::LoggedIn => true,
        PgAnswer::Error { sqlstate } => sqlstate != "57P03",
        PgAnswer::Other(_) => false,
    }
}

/// Leaves as a client may: logged in already (trust), with a Terminate; at
/// a password prompt, by closing. Either way it reads what the server still
/// sends: a socket closed on unread data resets the connection, and
/// PostgreSQL logs "could not receive data from client" for that.
async fn leave(mut stream: TcpStream, logged_in: bool) {
    if logged_in {
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
    }
    let _ = stream.shutdown().await;
    let mut rest = [0u8; 1024];
    while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
}

/// The first message a PostgreSQL server sends back to a startup message.
#[derive(Debug, PartialEq, Eq)]
enum PgAnswer {
    /// An authentication request: it takes clients.
    Authentication,
    /// `AuthenticationOk` (no password asked): it takes clients.
    LoggedIn,
    /// An ErrorResponse. SQLSTATE 57P03 (`cannot_connect_now`: starting up,
    /// shutting down, in recovery) is the one `pg_isready` takes for "not
    /// accepting connections"; any other (a wrong database, too many
    /// clients) comes from a server that is up, as `pg_isready` says too.
    Error { sqlstate: String },
    /// Any other message type: not a PostgreSQL server.
    Other(u8),
}

/// Sends the startup message for `user` on `database` to `port` and reads
/// the first answer, whole; `None` when the connection fails or closes first.
async fn postgres_answer(port: u16, user: &str, database: &str) -> Option<(PgAnswer, TcpStream)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(&startup_message(user, database)).await.ok()?;
    // A message: its type byte, then its length (itself included) in 4 bytes.
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !matches!(head[0], b'R' | b'E') {
        return Some((PgAnswer::Other(head[0]), stream));
    }
    // Bounded: an authentication request or an error is a few hundred bytes.
    let mut body = vec![0u8; length.saturating_sub(4).min(8192)];
    stream.read_exact(&mut body).await.ok()?;
    let answer = match head[0] {
        b'R' if body.starts_with(&[0, 0, 0, 0]) => PgAnswer::LoggedIn,
        b'R' => PgAnswer::Authentication,
        _ => PgAnswer::Error {
            sqlstate: body
                .split(|b| *b == 0)
                .find_map(|field| field.strip_prefix(b"C"))
                .map(|code| String::from_utf8_lossy(code).into_owned())
                .unwrap_or_default(),
        },
    };
    Some((answer, stream))
}

/// A protocol 3.0 StartupMessage for `user` on `database`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // 3 << 16: protocol 3.0
    for (key, value) in [("user", user), ("database", database), ("application_name", "apphost-health")] {
        for text in [key, value] {
            body.extend(text.bytes().filter(|b| *b != 0));
            body.push(0);
        }
    }
    body.push(0);
    let mut message = u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes().to_vec();
    message.extend(body);
    message
}

/// What a line of a `kind` resource says is wrong, if it is one of the known troubles.
/// Each kind names its own troubles ([`crate::kinds::ResourceKind::troubles`]); the first
/// match of each becomes an event (the dashboard's timeline, `apphost logs --events`)
/// and a marked line in the resource's log.
pub(super) fn trouble(kind: crate::topology::Kind, line: &str) -> Option<&'static str> {
    kind.spec().troubles().iter().find(|(pattern, _)| line.contains(pattern)).map(|(_, what)| *what)
}

/// Watches `instance`'s output (from `next_seq` on) for the known troubles.
pub(super) async fn watch_troubles(
    instance: Instance,
    shared: Arc<Shared>,
    logs: LogStore,
    out: Output,
    mut next_seq: u64,
) {
    let name = instance.name.clone();
    if instance.resource.kind.spec().troubles().is_empty() {
        return;
    }
    let mut told = std::collections::HashSet::new();
    loop {
        for line in logs.since(Some(&name), next_seq) {
            next_seq = line.seq + 1;
            if let Some(what) = trouble(instance.resource.kind, &line.text)
                && told.insert(what)
            {
                shared.event(&name, what);
                out.system(what);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Kind;

    /// A listener that never answers (as a stopped broker: the kernel still
    /// completes the TCP handshake) does not pass.
    #[tokio::test]
    async fn an_amqp_peer_that_never_answers_fails_the_check() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("amqp://u:p@{}", silent.local_addr().unwrap())).unwrap();
        assert!(!opens("t", url, Duration::from_millis(500)).await);
    }

    /// A real PostgreSQL takes the startup message and asks to authenticate
    /// (one with another protocol version gets no such answer: checked by
    /// mutation); stopped, it fails.
    #[tokio::test]
    async fn a_postgres_server_answers_the_startup_message_and_is_ready() {
        let pg = testkit::postgres::Postgres::start_private();
        let (answer, stream) = postgres_answer(pg.port(), "postgres", "postgres").await.unwrap();
        assert_eq!(answer, PgAnswer::LoggedIn, "the test server trusts loopback");
        leave(stream, true).await;
        assert!(postgres_ready(pg.port(), "postgres", "no_such_database", Duration::from_secs(5)).await);
        // A probe a second must not write a line a second to the server's log.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = pg.log_text();
        for noise in ["could not receive data", "unexpected EOF", "connection reset"] {
            assert!(!log.contains(noise), "the probe left `{noise}` in the server's log:\n{log}");
        }
        let port = pg.port();
        drop(pg);
        assert!(!postgres_ready(port, "postgres", "postgres", Duration::from_secs(5)).await, "a stopped server");
    }

    /// As `pg_isready`: "starting up" (57P03) is not ready, another error is
    /// a server that is up; silence and a peer that is not PostgreSQL fail.
    #[tokio::test]
    async fn a_postgres_server_starting_up_or_silent_is_not_ready() {
        async fn answering(reply: Option<Vec<u8>>) -> bool {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut peer, _) = listener.accept().await.unwrap();
                let mut startup = vec![0u8; 4];
                peer.read_exact(&mut startup).await.unwrap();
                let length = u32::from_be_bytes(startup[..4].try_into().unwrap()) as usize;
                let mut body = vec![0u8; length - 4];
                peer.read_exact(&mut body).await.unwrap();
                assert_eq!(&body[..4], &[0, 3, 0, 0], "protocol 3.0");
                assert!(body.windows(8).any(|w| w == b"user\0app"), "the user travels");
                match reply {
                    Some(reply) => peer.write_all(&reply).await.unwrap(),
                    None => tokio::time::sleep(Duration::from_secs(5)).await,
                }
                peer
            });
            let ready = postgres_ready(port, "app", "db", Duration::from_millis(500)).await;
            server.abort();
            ready
        }
        let error = |code: &str| {
            let fields = format!("SFATAL\0C{code}\0Mthe database system is starting up\0\0");
            let mut message = vec![b'E'];
            message.extend(u32::try_from(fields.len() + 4).unwrap().to_be_bytes());
            message.extend(fields.bytes());
            message
        };
        assert!(answering(Some(vec![b'R', 0, 0, 0, 8, 0, 0, 0, 3])).await, "asked for a password: up");
        assert!(!answering(Some(error("57P03"))).await, "starting up");
        assert!(answering(Some(error("3D000"))).await, "no such database: up");
        assert!(!answering(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await, "not PostgreSQL");
        assert!(!answering(None).await, "silent");
    }

    #[test]
    fn a_broker_blocking_producers_on_a_full_disk_is_told() {
        // As Artemis 2.40.0 printed it on this machine with the disk 90.2 % used.
        let line = "2026-11-27 10:53:35,205 WARN  [org.apache.activemq.artemis.core.server] AMQ222212: Disk Full! Blocking message production on address 'entity-items'. Clients will report blocked.";
        assert!(trouble(Kind::Artemis, line).is_some_and(|w| w.contains("disk full")));
        // The disk scan of a broker below apphost's floor, as Artemis 2.40.0 prints it.
        let scan = "2026-12-01 20:20:58,881 WARN  [org.apache.activemq.artemis.core.server] AMQ224128: Free storage space is at 72.8GB which is below the configured <min-disk-free>. System will start blocking producers.";
        assert!(trouble(Kind::Artemis, scan).is_some_and(|w| w.contains("min-disk-free")));
        assert_eq!(trouble(Kind::Artemis, "AMQ221007: Server is now active"), None);
        assert_eq!(trouble(Kind::Project, line), None);
    }
}
