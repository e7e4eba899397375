//! Checks across resources: references and waits that name something, no
//! wait cycle, no host port used twice, fields that fit their kind.

use std::collections::HashMap;

use super::{Check, Diag, Topology, graph, yaml::did_you_mean};
use crate::kinds::{Field, Kind};

pub fn validate(t: &Topology) -> Vec<Diag> {
    let mut problems = Vec::new();
    let names: Vec<&str> = t.resources.iter().map(|r| r.name.as_str()).collect();
    let unknown = |name: &str, span, what: &str| {
        let mut d = Diag::new(format!("{what} `{name}` is not a resource of this file"), span, "unknown resource");
        d.help = Some(match did_you_mean(name, names.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("resources: {}", names.join(", ")),
        });
        d
    };

    for r in &t.resources {
        for reference in &r.references {
            if reference.name == r.name {
                problems.push(Diag::new(format!("`{}` references itself", r.name), reference.span, "self-reference"));
            } else if !names.contains(&reference.name.as_str()) {
                problems.push(unknown(&reference.name, reference.span, "reference"));
            }
        }
        for wait in &r.wait_for {
            if wait.name == r.name {
                problems.push(Diag::new(format!("`{}` waits for itself", r.name), wait.span, "self-wait"));
            } else if !names.contains(&wait.name.as_str()) {
                problems.push(unknown(&wait.name, wait.span, "`wait_for` target"));
            }
        }
        let misuse = |field: &str, kinds: &str| {
            Diag::new(
                format!("`{field}` does not apply to a `{}` resource", r.kind.as_str()),
                r.span,
                format!("a {} resource", r.kind.as_str()),
            )
            .help(format!("`{field}` is for {kinds}"))
        };
        problems.extend(r.kind.spec().check(r));
        let set = |field: Field| match field {
            Field::Image => r.image.is_some(),
            Field::Command => r.command.is_some(),
            Field::Package => r.package.is_some(),
            Field::Database => r.database.is_some(),
            Field::User => r.user.is_some(),
            Field::Replicas => r.replicas > 1,
        };
        for field in Field::ALL.into_iter().filter(|f| set(*f) && !r.kind.spec().fields().contains(f)) {
            problems.push(misuse(field.as_str(), &takers(field)));
        }
        if let Some(probe) = &r.health {
            let port = match &probe.check {
                Check::Tcp { port } | Check::Http { port, .. } | Check::Amqp { port } | Check::PgIsReady { port } => {
                    Some(port)
                }
                _ => None,
            };
            if let Some(port) = port.filter(|p| r.port(p).is_none()) {
                problems.push(
                    Diag::new(
                        format!("the health check of `{}` uses port `{port}`, which it does not have", r.name),
                        r.span,
                        "unknown port",
                    )
                    .help(format!(
                        "ports of `{}`: {}",
                        r.name,
                        r.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                );
            }
        }
    }

    // A fixed host port can be bound once; replicas of a resource each need their own.
    let mut hosts: HashMap<u16, (&str, &str)> = HashMap::new();
    for r in &t.resources {
        for p in &r.ports {
            let Some(host) = p.host.filter(|h| *h != 0) else { continue };
            if let Some((other, other_port)) = hosts.insert(host, (&r.name, &p.name)) {
                problems.push(
                    Diag::new(format!("host port {host} is used twice"), p.span, "already used")
                        .help(format!("`{other}` ({other_port}) uses it too; give one of them another port or leave `host` out to pick a free one")),
                );
            }
            if r.replicas > 1 {
                problems.push(
                    Diag::new(
                        format!("{} replicas of `{}` cannot share host port {host}", r.replicas, r.name),
                        p.span,
                        "fixed port",
                    )
                    .help("leave `host` out: each replica gets a free port"),
                );
            }
        }
    }

    if let Some(cycle) = graph::find_cycle(t) {
        let first = t.resource(&cycle[0]).expect("cycle names resources");
        let span = first.wait_for.iter().find(|w| w.name == cycle[1]).map_or(first.span, |w| w.span);
        problems.push(
            Diag::new(format!("`wait_for` has a cycle: {}", cycle.join(" → ")), span, "this wait closes the cycle")
                .help("a resource cannot start until everything it waits for has; remove one of these waits"),
        );
    }
    for name in &t.metrics_from {
        if !names.contains(&name.as_str()) {
            problems.push(
                Diag::new(
                    format!("`dashboard.metrics_from` names `{name}`, which is not a resource"),
                    (0, 0).into(),
                    "here",
                )
                .help(format!("resources: {}", names.join(", "))),
            );
        }
    }
    problems
}

/// The kinds that take `field`, as a help text says them: "postgres and artemis resources".
fn takers(field: Field) -> String {
    let names: Vec<&str> =
        Kind::ALL.into_iter().filter(|k| k.spec().fields().contains(&field)).map(Kind::as_str).collect();
    let list = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    // A container's command is its image's: what it runs is changed with `args`.
    let note = if field == Field::Command { " (containers take `args`)" } else { "" };
    format!("{list} resources{note}")
}
