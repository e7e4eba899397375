//! Where the start-up time went, as `systemd-analyze critical-chain` shows
//! it: from the instance that became healthy last, back through the
//! dependency each one waited for last, with when each started and how long
//! it took from its start to healthy.

use chrono::{DateTime, Utc};

use super::Event;

/// One link of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub instance: String,
    /// Seconds from the start of `up` to this instance starting, and to it being healthy.
    pub started: f64,
    pub healthy: f64,
}

/// The chain that ended at the last instance to become healthy, last first.
/// `waits_for(instance)` gives the instances it waits for. (A project's time
/// from started to healthy includes waiting for its build, if it was not done.)
pub fn critical_chain(history: &[Event], began: DateTime<Utc>, waits_for: impl Fn(&str) -> Vec<String>) -> Vec<Link> {
    let seconds = |at: DateTime<Utc>| (at - began).num_milliseconds() as f64 / 1000.0;
    // The first `starting` and the first `healthy` of each instance since `began`.
    let first = |instance: &str, what: &str| {
        history.iter().find(|e| e.resource == instance && e.message == what && e.at >= began).map(|e| seconds(e.at))
    };
    let mut healthy: Vec<(String, f64)> = Vec::new();
    for e in history.iter().filter(|e| e.message == "healthy" && e.at >= began) {
        if !healthy.iter().any(|(name, _)| *name == e.resource) {
            healthy.push((e.resource.clone(), seconds(e.at)));
        }
    }
    let Some(mut current) = healthy.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(n, _)| n.clone()) else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    while chain.len() < 64 {
        let (Some(started), Some(ready)) = (first(&current, "starting"), first(&current, "healthy")) else { break };
        chain.push(Link { instance: current.clone(), started, healthy: ready });
        // The dependency that was ready last before this one started held it back
        // (within 0.1 s: its `healthy` event may be recorded just after the start it allowed).
        let next = waits_for(&current)
            .into_iter()
            .filter_map(|dep| first(&dep, "healthy").filter(|h| *h <= started + 0.1).map(|h| (dep, h)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match next {
            Some((dep, _)) => current = dep,
            None => break,
        }
    }
    chain
}

/// The chain as lines to print.
pub fn describe(total: f64, chain: &[Link]) -> Vec<String> {
    let mut lines = vec![format!("start-up: {total:.1} s to all healthy; the critical chain, last first:")];
    for link in chain {
        lines.push(format!(
            "  {:<14} healthy at +{:.1} s, {:.1} s after it started (at +{:.1} s)",
            link.instance,
            link.healthy,
            link.healthy - link.started,
            link.started
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(began: DateTime<Utc>, ms: i64, resource: &str, message: &str) -> Event {
        Event { at: began + chrono::Duration::milliseconds(ms), resource: resource.into(), message: message.into() }
    }

    #[test]
    fn the_chain_follows_the_dependency_ready_last() {
        let t = Utc::now();
        let history = vec![
            event(t, -500, "broker", "healthy"), // an earlier session's
            event(t, 10, "db", "starting"),
            event(t, 20, "broker", "starting"),
            event(t, 30, "receiver", "pending"),
            event(t, 900, "db", "healthy"),
            // Recorded just after the start it allowed: still what held the receiver back.
            event(t, 6010, "receiver", "starting"),
            event(t, 6015, "broker", "healthy"),
            event(t, 7000, "receiver", "healthy"),
            event(t, 7500, "receiver", "unhealthy"),
            event(t, 8000, "receiver", "healthy"),
        ];
        let waits = |i: &str| if i == "receiver" { vec!["db".into(), "broker".into()] } else { vec![] };
        let chain = critical_chain(&history, t, waits);
        let names: Vec<&str> = chain.iter().map(|l| l.instance.as_str()).collect();
        assert_eq!(names, ["receiver", "broker"]);
        assert_eq!((chain[0].started, chain[0].healthy), (6.01, 7.0));
        assert_eq!((chain[1].started, chain[1].healthy), (0.02, 6.015));
        let text = describe(7.0, &chain).join("\n");
        assert!(text.contains("broker         healthy at +6.0 s, 6.0 s after it started (at +0.0 s)"), "{text}");
    }
}
