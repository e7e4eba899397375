//! The load's HTTP/1.1 client: a request written whole in one `write`, its
//! answer read into a buffer the connection keeps and parsed in place by
//! `httparse` (the parser hyper itself uses), on connections kept for the
//! next request. A generator on the machine it measures takes its CPU from
//! what it measures: `pgbench`'s client, the reference, is C and costs
//! little, and reqwest, general and pooled (a URL parsed, a request built
//! and a connection task woken for each), cost the closed loop 0.036 ms of
//! the 0.32 ms an item cost the machine (`apphost bench`, 5d1cb81).
//!
//! The load runs on a single-threaded runtime of its own ([`Client::run`]):
//! on apphost's runtime its requests and answers woke one worker from another
//! (`futex` and `epoll_wait` were 10 % and 17 % of apphost's samples in a
//! closed loop), where one thread only ever wakes itself.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The most an answer's head and body may take; a bigger one is an error,
/// not a buffer that grows without bound.
const MOST_ANSWER: usize = 1 << 20;

/// How long one request may take, from its write to its whole answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong, as the load counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// No whole answer within [`TIMEOUT`].
    Timeout,
    /// The connection failed or closed before the whole answer came.
    Request,
    /// The answer was not HTTP/1.1 this client reads (or too big).
    Body,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Request => "request",
            Failure::Body => "body",
        }
    }
}

/// One kept connection and the buffer its answers are read into.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// Where an answer's parts are in its connection's buffer.
struct Answer {
    status: u16,
    body: std::ops::Range<usize>,
    /// The server said it closes the connection after this answer.
    closes: bool,
}

impl Connection {
    async fn open(authority: &str) -> Result<Self, Failure> {
        let stream = TcpStream::connect(authority).await.map_err(|_| Failure::Connect)?;
        // Requests are written whole: nothing to gain from Nagle's wait.
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        Ok(Self { stream, buffer: Vec::with_capacity(4096) })
    }

    /// Writes `request` and reads its answer. `Err(None)` when the
    /// connection was found closed before any of the answer came.
    async fn exchange(&mut self, request: &[u8]) -> Result<Answer, Option<Failure>> {
        self.buffer.clear();
        self.stream.write_all(request).await.map_err(|_| None)?;
        loop {
            if let Some(answer) = parse(&self.buffer)? {
                return Ok(answer);
            }
            if self.buffer.len() >= MOST_ANSWER {
                return Err(Some(Failure::Body));
            }
            self.buffer.reserve(4096);
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) if self.buffer.is_empty() => return Err(None),
                Ok(0) | Err(_) => return Err(Some(Failure::Request)),
                Ok(_) => {}
            }
        }
    }
}

/// The answer in `buffer` once it is whole; an answer this client cannot
/// read (chunked, no length, not HTTP) is a [`Failure::Body`].
fn parse(buffer: &[u8]) -> Result<Option<Answer>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer).map_err(|_| Failure::Body)? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let (mut length, mut closes) = (None, false);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).map_err(|_| Failure::Body)?;
            length = Some(text.trim().parse::<usize>().map_err(|_| Failure::Body)?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            closes = header.value.eq_ignore_ascii_case(b"close");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Body);
        }
    }
    let length = length.ok_or(Failure::Body)?;
    if head + length > MOST_ANSWER {
        return Err(Failure::Body);
    }
    let status = response.code.ok_or(Failure::Body)?;
    Ok((buffer.len() >= head + length).then_some(Answer { status, body: head..head + length, closes }))
}

/// A client for one server (`http://host:port`), keeping every connection
/// it opened for the next request: a connection is opened only when every
/// kept one is busy. Clones share the connections. So it holds as many as
/// requests were ever unanswered at once (at most `load::MOST_OPEN` in an
/// open loop), as a client under steady load does: a pool keeping 8 idle,
/// as the loopback client does, closed the rest after each rise and opened
/// them again at the next, one TCP connection for every two requests at
/// 4,000 POST/s (`nstat TcpActiveOpens` around `apphost bench --only open
/// --rates 4000`), each a connect for the load and an accept and a
/// connection task for the sender.
#[derive(Clone)]
pub struct Client {
    authority: Arc<str>,
    idle: Arc<Mutex<Vec<Connection>>>,
    /// The load's own single-threaded runtime, on a thread of its own until the last clone goes.
    runtime: tokio::runtime::Handle,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl Client {
    /// A client for `base` (`http://host:port`, nothing after it).
    pub fn new(base: &str) -> Result<Self, String> {
        let authority = base
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| format!("the load speaks plain HTTP to `http://host:port`, not to `{base}`"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the load's runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| format!("the load's thread: {e}"))?;
        Ok(Self {
            authority: authority.into(),
            idle: Arc::new(Mutex::new(Vec::new())),
            runtime: handle,
            _stop: Arc::new(stop),
        })
    }

    /// Runs `work` on the load's own thread, where the connections it opens
    /// are driven; what it returned (its panic, if it panicked).
    pub async fn run<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        match self.runtime.spawn(work).await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled only by the runtime's end, which waits for the last clone of `self`.
            Err(e) => unreachable!("the load's runtime ended under it: {e}"),
        }
    }

    /// `POST path` with a JSON body; what `read` makes of the status and body.
    pub async fn post_json<T>(
        &self,
        path: &str,
        body: &[u8],
        read: impl FnOnce(u16, &[u8]) -> T,
    ) -> Result<T, Failure> {
        use std::io::Write;
        let mut request = Vec::with_capacity(160 + body.len());
        let _ = write!(
            request,
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.authority,
            body.len()
        );
        request.extend_from_slice(body);
        self.send(&request, read).await
    }

    /// `GET path`; what `read` makes of the status and body.
    pub async fn get<T>(&self, path: &str, read: impl FnOnce(u16, &[u8]) -> T) -> Result<T, Failure> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.authority);
        self.send(request.as_bytes(), read).await
    }

    async fn send<T>(&self, request: &[u8], read: impl FnOnce(u16, &[u8]) -> T) -> Result<T, Failure> {
        let kept = self.idle.lock().expect("idle connections").pop();
        let exchanged = tokio::time::timeout(TIMEOUT, async {
            // A kept connection the server closed while it idled fails before any of
            // the answer came: the request is written once more on a new one.
            if let Some(mut connection) = kept {
                match connection.exchange(request).await {
                    Ok(answer) => return Ok((connection, answer)),
                    Err(Some(failure)) => return Err(failure),
                    Err(None) => {}
                }
            }
            let mut connection = Connection::open(&self.authority).await?;
            let answer = connection.exchange(request).await.map_err(|f| f.unwrap_or(Failure::Request))?;
            Ok((connection, answer))
        })
        .await
        .map_err(|_| Failure::Timeout)?;
        let (connection, answer) = exchanged?;
        let read = read(answer.status, &connection.buffer[answer.body]);
        if !answer.closes {
            self.idle.lock().expect("idle connections").push(connection);
        }
        Ok(read)
    }

    /// How many connections are kept idle now.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("idle connections").len()
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, Failure, parse};

    fn whole(buffer: &[u8]) -> Answer {
        parse(buffer).expect("readable").expect("whole")
    }

    #[test]
    fn an_answer_is_whole_only_once_its_body_is() {
        let text = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"id\":1}";
        assert!(parse(text).unwrap().is_none(), "8 of 9 bytes");
        let mut full = text.to_vec();
        full.push(b'\n');
        let answer = whole(&full);
        assert_eq!((answer.status, &full[answer.body], answer.closes), (201, &b"{\"id\":1}\n"[..], false));
        assert!(parse(b"HTTP/1.1 201 Cre").unwrap().is_none(), "a head in part");
    }

    #[test]
    fn an_answer_this_client_cannot_read_is_a_failure_not_a_wait() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let unbounded = b"HTTP/1.1 200 OK\r\n\r\n";
        let huge = b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n";
        for text in [&chunked[..], unbounded, huge, b"SSH-2.0-OpenSSH\r\n\r\n"] {
            assert_eq!(parse(text).err(), Some(Failure::Body), "{}", String::from_utf8_lossy(text));
        }
        let closing = whole(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((closing.status, closing.closes), (503, true));
    }

    /// A server answering each connection's first request, then closing it
    /// without saying so (as one does whose idle timeout passed); how many
    /// connections it took.
    async fn one_answer_a_connection() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            }
        });
        (base, accepted)
    }

    #[tokio::test]
    async fn a_kept_connection_found_closed_is_replaced_and_the_request_still_answered() {
        let (base, accepted) = one_answer_a_connection().await;
        let client = super::Client::new(&base).unwrap();
        for n in 1..=3 {
            let body = client.get("/", |status, body| (status, body.to_vec())).await;
            assert_eq!(body, Ok((200, b"ok".to_vec())), "request {n}");
            assert_eq!(client.idle(), 1, "the connection is kept for the next request");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "a new connection for each");
    }

    #[test]
    fn only_plain_http_to_a_host_and_port_is_taken() {
        assert!(super::Client::new("http://127.0.0.1:8080").is_ok());
        assert!(super::Client::new("http://127.0.0.1:8080/").is_ok());
        for base in ["https://127.0.0.1:8080", "http://127.0.0.1:8080/api", "127.0.0.1:8080", "http://"] {
            assert!(super::Client::new(base).is_err(), "{base}");
        }
    }
}
