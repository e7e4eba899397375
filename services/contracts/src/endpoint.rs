//! Where a resource answers, as `apphost ps --json`, the control API and the
//! dashboard carry it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The port's name in `apphost.yaml` (`http`, `tcp`, `amqp`, …).
    pub name: String,
    /// `http://127.0.0.1:PORT` for an HTTP port, `tcp://127.0.0.1:PORT` otherwise.
    pub url: String,
}

impl Endpoint {
    /// The endpoint of port `name` on loopback port `port`.
    pub fn loopback(name: &str, port: u16) -> Self {
        Self::at("127.0.0.1", name, port)
    }

    /// The endpoint of port `name` at `host:port` (a service's name on a network of containers).
    pub fn at(host: &str, name: &str, port: u16) -> Self {
        let scheme = if name == "http" { "http" } else { "tcp" };
        Self { name: name.to_owned(), url: format!("{scheme}://{host}:{port}") }
    }

    /// The `http` endpoint's URL among `endpoints`.
    pub fn http(endpoints: &[Endpoint]) -> Option<&str> {
        endpoints.iter().find(|e| e.name == "http").map(|e| e.url.as_str())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}
