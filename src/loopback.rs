//! HTTP to this machine's loopback: the control API, health probes, metrics
//! and the scenarios' load. Such a call never goes through a proxy (a
//! system `HTTP_PROXY` would otherwise receive the session's bearer token,
//! and could not reach 127.0.0.1 anyway), and what apphost starts is told
//! the same (`NO_PROXY`).

use std::time::Duration;

/// Where what `apphost up` starts listens and is reached.
pub const ADDRESS: &str = "127.0.0.1";

/// What `NO_PROXY` always covers.
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// A client for loopback calls; `timeout` bounds each whole request.
pub fn client(timeout: Option<Duration>) -> reqwest::Client {
    // A few idle connections per host are kept, not all a burst opened: 200 concurrent
    // requests would otherwise leave 200 connections and their buffers for 90 s.
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(8)
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = match timeout {
        Some(timeout) => builder.timeout(timeout),
        None => builder,
    };
    builder.build().expect("an HTTP client")
}

/// `NO_PROXY` for a child: whatever apphost was given (`NO_PROXY` or
/// `no_proxy`), and loopback.
pub fn no_proxy() -> String {
    let given = std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).unwrap_or_default();
    let mut hosts: Vec<String> = given.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
    for host in LOOPBACK {
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_owned());
        }
    }
    hosts.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_proxy_keeps_what_was_given_and_adds_loopback() {
        let hosts = super::no_proxy();
        for host in ["127.0.0.1", "localhost", "::1"] {
            assert!(hosts.split(',').any(|h| h == host), "{hosts}");
        }
    }
}
