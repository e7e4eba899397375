//! From YAML text to a [`Topology`], one [`Diag`] for the first problem met.
//! Kind defaults (ports, health probes) are filled in here, so everything
//! downstream sees a complete resource.

use std::{path::Path, time::Duration};

use super::{
    Check, Condition, Diag, Kind, Named, Port, Probe, Resource, Restart, RestartPolicy, RuntimeChoice, Shutdown,
    Topology, WaitFor, parse_duration,
    yaml::{Node, Source, check_keys, did_you_mean},
};

const TOP_KEYS: &[&str] = &["name", "runtime", "resources", "dashboard"];
const RESOURCE_KEYS: &[&str] = &[
    "kind",
    "image",
    "command",
    "package",
    "args",
    "working_dir",
    "env",
    "ports",
    "persistent",
    "references",
    "wait_for",
    "health",
    "restart",
    "replicas",
    "shutdown",
    "runtime",
    "database",
    "user",
];
const PROBE_KEYS: &[&str] =
    &["http", "tcp", "exec", "log", "amqp", "pg_isready", "port", "interval", "timeout", "retries", "start_period"];

pub fn parse(path: &Path, text: &str) -> Result<Topology, Diag> {
    let src = Source::new(text);
    let docs = src.parse()?;
    let Some(doc) = docs.first() else {
        return Err(Diag::new("the file is empty", (0, 0).into(), "expected `resources:`")
            .help("start with `resources:` and one entry per resource; `apphost schema` prints the format"));
    };
    let root = src.node(doc);
    let entries = root.mapping(&src)?;
    check_keys(&entries, TOP_KEYS, "the file")?;

    let mut topology = Topology {
        name: default_app_name(path),
        file: path.to_owned(),
        runtime: RuntimeChoice::Auto,
        resources: Vec::new(),
        metrics_from: Vec::new(),
    };
    let mut saw_resources = false;
    for (key, key_node, value) in &entries {
        match key.as_str() {
            "name" => {
                let name = value.string()?;
                if !valid_name(&name) {
                    return Err(Diag::new(format!("`{name}` is not a valid app name"), value.span, "invalid name")
                        .help("use lowercase letters, digits and `-`, starting with a letter"));
                }
                topology.name = name;
            }
            "runtime" => topology.runtime = runtime(value)?,
            "resources" => {
                saw_resources = true;
                let entries = value.mapping(&src)?;
                if entries.len() > super::MAX_RESOURCES {
                    return Err(Diag::new(
                        format!("{} resources; at most {} are supported", entries.len(), super::MAX_RESOURCES),
                        key_node.span,
                        "too many",
                    )
                    .help("split the stack into several apps, each with its own `name:`"));
                }
                for (name, key_node, body) in entries {
                    topology.resources.push(resource(&src, name, key_node, body)?);
                }
            }
            "dashboard" => {
                let dash = value.mapping(&src)?;
                check_keys(&dash, &["metrics_from"], "`dashboard`")?;
                for (_, _, v) in dash {
                    topology.metrics_from = v.strings(&src)?.into_iter().map(|(s, _)| s).collect();
                }
            }
            _ => unreachable!("keys checked above"),
        }
    }
    if !saw_resources {
        return Err(Diag::new("the file has no `resources:`", root.span, "expected `resources:` here"));
    }
    Ok(topology)
}

fn default_app_name(path: &Path) -> String {
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().to_lowercase()))
        .unwrap_or_else(|| "app".into());
    let cleaned: String = dir.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if valid_name(&cleaned) { cleaned } else { "app".into() }
}

/// Lowercase letters, digits and `-`, starting with a letter: safe as a
/// container name, a label, a file name and part of an environment variable.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn runtime(node: &Node<'_>) -> Result<RuntimeChoice, Diag> {
    let text = node.string()?;
    RuntimeChoice::parse(&text).ok_or_else(|| {
        Diag::new(format!("unknown runtime `{text}`"), node.span, "expected `auto`, `docker` or `process`")
    })
}

fn duration(node: &Node<'_>) -> Result<Duration, Diag> {
    let text = node.scalar_text().ok_or_else(|| node.wrong_type("a duration such as `10s`"))?;
    parse_duration(&text).ok_or_else(|| {
        Diag::new(format!("`{text}` is not a duration"), node.span, "bad duration")
            .help("write a number with a unit: `500ms`, `10s`, `2m`, `1h`, or `1m30s`")
    })
}

fn resource(src: &Source<'_>, name: String, key: Node<'_>, body: Node<'_>) -> Result<Resource, Diag> {
    if !valid_name(&name) {
        return Err(Diag::new(format!("`{name}` is not a valid resource name"), key.span, "invalid name")
            .help("use lowercase letters, digits, `-` and `_`, starting with a letter"));
    }
    let entries = body.mapping(src)?;
    check_keys(&entries, RESOURCE_KEYS, &format!("resource `{name}`"))?;
    let field = |k: &str| entries.iter().find(|(key, _, _)| key == k).map(|(_, _, v)| *v);

    let Some(kind_node) = field("kind") else {
        return Err(Diag::new(format!("resource `{name}` has no `kind`"), key.span, "missing `kind`")
            .help(format!("add `kind:` with one of {}", Kind::names().join(", "))));
    };
    let kind_text = kind_node.string()?;
    let Some(kind) = Kind::parse(&kind_text) else {
        let mut diag = Diag::new(format!("unknown kind `{kind_text}`"), kind_node.span, "unknown kind");
        diag.help = Some(match did_you_mean(&kind_text, Kind::names().into_iter()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("kinds: {}", Kind::names().join(", ")),
        });
        return Err(diag);
    };

    let mut r = Resource {
        name: name.clone(),
        span: key.span,
        kind,
        image: None,
        command: None,
        package: None,
        args: Vec::new(),
        working_dir: None,
        env: Vec::new(),
        ports: default_ports(kind),
        persistent: false,
        references: Vec::new(),
        wait_for: Vec::new(),
        health: None,
        restart: Restart {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        },
        replicas: 1,
        shutdown: Shutdown { signal: kind.spec().stop_signal(), grace: Duration::from_secs(10) },
        runtime: RuntimeChoice::Auto,
        database: None,
        user: None,
    };
    let mut explicit_health = None;
    for (k, _, v) in &entries {
        match k.as_str() {
            "kind" => {}
            "image" => r.image = Some(v.string()?),
            "command" => r.command = Some(v.string()?),
            "package" => r.package = Some(v.string()?),
            "args" => r.args = v.strings(src)?.into_iter().map(|(s, _)| s).collect(),
            "working_dir" => r.working_dir = Some(v.string()?.into()),
            "env" => {
                for (name, _, value) in v.mapping(src)? {
                    let text = value
                        .scalar_text()
                        .filter(|_| !value.is_null())
                        .ok_or_else(|| value.wrong_type("a string, number or boolean"))?;
                    r.env.push((name, text));
                }
            }
            "ports" => {
                for (i, p) in v.sequence(src)?.into_iter().enumerate() {
                    let port = port(src, &p, kind, i)?;
                    match r.ports.iter_mut().find(|existing| existing.name == port.name) {
                        Some(existing) => {
                            existing.host = port.host.or(existing.host);
                            existing.target = port.target.or(existing.target);
                            existing.span = port.span;
                        }
                        None => r.ports.push(port),
                    }
                }
            }
            "persistent" => r.persistent = v.boolean()?,
            "references" => {
                r.references = v.strings(src)?.into_iter().map(|(name, span)| Named { name, span }).collect();
            }
            "wait_for" => r.wait_for = wait_for(src, v)?,
            "health" => explicit_health = Some(probe(src, v)?),
            "restart" => r.restart = restart(src, v, r.restart.clone())?,
            "replicas" => r.replicas = v.integer(1, 64)? as u32,
            "shutdown" => r.shutdown = shutdown(src, v, r.shutdown.clone())?,
            "runtime" => r.runtime = runtime(v)?,
            "database" => r.database = Some(v.string()?),
            "user" => r.user = Some(v.string()?),
            _ => unreachable!("keys checked above"),
        }
    }
    r.health =
        explicit_health.or_else(|| kind.spec().default_check(&r).map(|check| Probe { check, ..default_timing() }));
    Ok(r)
}

fn default_ports(kind: Kind) -> Vec<Port> {
    let port =
        |&(name, target): &(&str, Option<u16>)| Port { name: name.into(), target, host: None, span: (0, 0).into() };
    kind.spec().default_ports().iter().map(port).collect()
}

/// `8080`, `"15432:5432"`, or `{ name, host, target }`.
fn port(src: &Source<'_>, node: &Node<'_>, kind: Kind, index: usize) -> Result<Port, Diag> {
    let number = |n: &Node<'_>| n.integer(0, 65535).map(|p| p as u16);
    let (name, host, target) = if let Ok(entries) = node.mapping(src) {
        check_keys(&entries, &["name", "host", "target"], "a port")?;
        let mut name = None;
        let (mut host, mut target) = (None, None);
        for (k, _, v) in &entries {
            match k.as_str() {
                "name" => name = Some(v.string()?),
                "host" => host = Some(number(v)?),
                _ => target = Some(number(v)?),
            }
        }
        (name, host, target)
    } else {
        let text = node
            .scalar_text()
            .ok_or_else(|| node.wrong_type("a port such as `8080`, `\"15432:5432\"` or a mapping"))?;
        let bad = || {
            Diag::new(format!("`{text}` is not a port"), node.span, "bad port")
                .help("write `TARGET`, `\"HOST:TARGET\"` (quoted) or `{ name: http, host: 8080, target: 80 }`")
        };
        match text.split_once(':') {
            Some((h, t)) => (None, Some(h.parse().map_err(|_| bad())?), Some(t.parse().map_err(|_| bad())?)),
            None => {
                let p: u16 = text.parse().map_err(|_| bad())?;
                // For a process the one number is the port it listens on.
                if kind.spec().listens_on_host() { (None, Some(p), None) } else { (None, None, Some(p)) }
            }
        }
    };
    let name = name.unwrap_or_else(|| {
        // An unnamed port with a well-known target takes that port's name.
        default_ports(kind)
            .into_iter()
            .find(|d| d.target.is_some() && d.target == target)
            .map(|d| d.name)
            .unwrap_or_else(|| if index == 0 { "http".into() } else { format!("port{index}") })
    });
    Ok(Port { name, target, host, span: node.span })
}

fn condition(node: &Node<'_>) -> Result<Condition, Diag> {
    match node.string()?.as_str() {
        "started" => Ok(Condition::Started),
        "healthy" => Ok(Condition::Healthy),
        "completed" | "completed_successfully" => Ok(Condition::Completed),
        other => Err(Diag::new(format!("unknown condition `{other}`"), node.span, "unknown condition")
            .help("use `started`, `healthy` or `completed`")),
    }
}

/// `[a, b]` (healthy) or `{ a: healthy, b: started }`.
fn wait_for(src: &Source<'_>, node: &Node<'_>) -> Result<Vec<WaitFor>, Diag> {
    if let Ok(items) = node.strings(src) {
        return Ok(items
            .into_iter()
            .map(|(name, span)| WaitFor { name, condition: Condition::Healthy, span })
            .collect());
    }
    let entries =
        node.mapping(src).map_err(|_| node.wrong_type("a list of resources or a mapping of resource to condition"))?;
    entries
        .into_iter()
        .map(|(name, key, value)| Ok(WaitFor { name, condition: condition(&value)?, span: key.span }))
        .collect()
}

fn probe(src: &Source<'_>, node: &Node<'_>) -> Result<Probe, Diag> {
    let entries = node.mapping(src)?;
    check_keys(&entries, PROBE_KEYS, "`health`")?;
    let field = |k: &str| entries.iter().find(|(key, _, _)| key == k).map(|(_, _, v)| *v);
    let port = match field("port") {
        Some(p) => p.scalar_text().ok_or_else(|| p.wrong_type("a port name"))?,
        None => "http".to_owned(),
    };
    let checks: Vec<Check> = [
        field("http").map(|v| v.string().map(|path| Check::Http { path, port: port.clone() })),
        field("tcp")
            .map(|v| v.scalar_text().ok_or_else(|| v.wrong_type("a port name")).map(|port| Check::Tcp { port })),
        field("amqp")
            .map(|v| v.scalar_text().ok_or_else(|| v.wrong_type("a port name")).map(|port| Check::Amqp { port })),
        field("pg_isready")
            .map(|v| v.scalar_text().ok_or_else(|| v.wrong_type("a port name")).map(|port| Check::PgIsReady { port })),
        field("exec").map(|v| match v.strings(src) {
            Ok(list) if !list.is_empty() => Ok(Check::Exec { command: list.into_iter().map(|(s, _)| s).collect() }),
            _ => v.string().map(|cmd| Check::Exec { command: vec!["sh".into(), "-c".into(), cmd] }),
        }),
        field("log").map(|v| {
            let pattern = v.string()?;
            regex::Regex::new(&pattern)
                .map_err(|e| Diag::new("not a valid regular expression", v.span, "bad pattern").help(e.to_string()))?;
            Ok(Check::Log { pattern })
        }),
    ]
    .into_iter()
    .flatten()
    .collect::<Result<_, Diag>>()?;
    let check = match <[Check; 1]>::try_from(checks) {
        Ok([check]) => check,
        Err(_) => {
            return Err(Diag::new(
                "`health` needs exactly one check",
                node.span,
                "one of `http`, `tcp`, `exec`, `log`, `amqp`, `pg_isready`",
            )
            .help("e.g. `health: { http: /health/ready }` or `health: { log: \"ready\" }`"));
        }
    };
    let mut p = Probe { check, ..default_timing() };
    if let Some(v) = field("interval") {
        p.interval = duration(&v)?;
    }
    if let Some(v) = field("timeout") {
        p.timeout = duration(&v)?;
    }
    if let Some(v) = field("retries") {
        p.retries = v.integer(1, 1000)? as u32;
    }
    if let Some(v) = field("start_period") {
        p.start_period = duration(&v)?;
    }
    Ok(p)
}

fn default_timing() -> Probe {
    Probe {
        check: Check::Tcp { port: String::new() },
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
        retries: 3,
        start_period: Duration::ZERO,
    }
}

fn restart(src: &Source<'_>, node: &Node<'_>, mut current: Restart) -> Result<Restart, Diag> {
    let policy = |n: &Node<'_>| match n.string()?.as_str() {
        "no" | "never" => Ok(RestartPolicy::No),
        "on_failure" | "on-failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        other => Err(Diag::new(format!("unknown restart policy `{other}`"), n.span, "unknown policy")
            .help("use `no`, `on_failure` or `always`")),
    };
    // YAML 1.2 reads a bare `no` as a string; `false` means no restarts too.
    if let Ok(false) = node.boolean() {
        current.policy = RestartPolicy::No;
        return Ok(current);
    }
    if node.string().is_ok() {
        current.policy = policy(node)?;
        return Ok(current);
    }
    let entries =
        node.mapping(src).map_err(|_| node.wrong_type("a policy (`no`, `on_failure`, `always`) or a mapping"))?;
    check_keys(&entries, &["policy", "max_restarts", "backoff", "max_backoff", "reset_after"], "`restart`")?;
    for (k, _, v) in &entries {
        match k.as_str() {
            "policy" => current.policy = policy(v)?,
            "max_restarts" => current.max_restarts = v.integer(0, 10_000)? as u32,
            "backoff" => current.backoff = duration(v)?,
            "max_backoff" => current.max_backoff = duration(v)?,
            _ => current.reset_after = duration(v)?,
        }
    }
    Ok(current)
}

/// `current` is the kind's default: what the file leaves out stays as it is
/// (a `grace` alone must not turn PostgreSQL's SIGINT into a SIGTERM).
fn shutdown(src: &Source<'_>, node: &Node<'_>, current: Shutdown) -> Result<Shutdown, Diag> {
    let entries = node.mapping(src)?;
    check_keys(&entries, &["signal", "grace"], "`shutdown`")?;
    let mut s = current;
    for (k, _, v) in &entries {
        match k.as_str() {
            "signal" => {
                let text = v.string()?;
                s.signal = signal_number(&text).ok_or_else(|| {
                    Diag::new(format!("unknown signal `{text}`"), v.span, "unknown signal")
                        .help("use SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL")
                })?;
            }
            _ => s.grace = duration(v)?,
        }
    }
    Ok(s)
}

pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "KILL" => libc::SIGKILL,
        _ => return None,
    })
}
