//! Checks across resources: references and waits that name something, no
//! wait cycle, no host port used twice, fields that fit their kind.

use std::collections::HashMap;

use super::{Check, Diag, Kind, Topology, graph, yaml::did_you_mean};

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
        match r.kind {
            Kind::Container if r.image.is_none() => problems.push(
                Diag::new(format!("container `{}` has no `image`", r.name), r.span, "missing `image`")
                    .help("add `image: NAME:TAG`"),
            ),
            Kind::Executable if r.command.is_none() => problems.push(
                Diag::new(format!("executable `{}` has no `command`", r.name), r.span, "missing `command`")
                    .help("add `command: PROGRAM` (and `args:` for its arguments)"),
            ),
            _ => {}
        }
        if r.image.is_some() && matches!(r.kind, Kind::Executable | Kind::Project) {
            problems.push(misuse("image", "postgres, artemis and container resources"));
        }
        if r.command.is_some() && r.kind != Kind::Executable {
            problems.push(misuse("command", "executable resources (containers take `args`)"));
        }
        if r.package.is_some() && r.kind != Kind::Project {
            problems.push(misuse("package", "project resources"));
        }
        if r.database.is_some() && r.kind != Kind::Postgres {
            problems.push(misuse("database", "postgres resources"));
        }
        if r.user.is_some() && !matches!(r.kind, Kind::Postgres | Kind::Artemis) {
            problems.push(misuse("user", "postgres and artemis resources"));
        }
        if r.replicas > 1 && !matches!(r.kind, Kind::Project | Kind::Executable) {
            problems.push(misuse("replicas", "project and executable resources"));
        }
        if let Some(probe) = &r.health {
            let port = match &probe.check {
                Check::Tcp { port } | Check::Http { port, .. } => Some(port),
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
