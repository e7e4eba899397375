//! Every diagnostic, rendered as the user sees it (snapshots), and the model
//! a valid file turns into.

use std::{path::Path, time::Duration};

use miette::{GraphicalReportHandler, GraphicalTheme};

use super::*;

fn render(text: &str) -> String {
    let err = parse_str(Path::new("apphost.yaml"), text).expect_err("the file should be refused");
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, &err)
        .unwrap();
    out
}

#[test]
fn unknown_key_suggests_the_closest() {
    insta::assert_snapshot!(render("resources:\n  db:\n    kind: postgres\n    imgae: postgres:16\n"));
}

#[test]
fn unknown_top_level_key() {
    insta::assert_snapshot!(render("resource:\n  db: { kind: postgres }\n"));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(render("resources:\n  db:\n    kind: postgres\n    persistent: sometimes\n"));
}

#[test]
fn unknown_kind() {
    insta::assert_snapshot!(render("resources:\n  db:\n    kind: postgress\n"));
}

#[test]
fn unknown_reference() {
    insta::assert_snapshot!(render(
        "resources:\n  sender-db: { kind: postgres }\n  sender:\n    kind: project\n    references: [sender-bd]\n"
    ));
}

#[test]
fn wait_cycle_is_printed() {
    insta::assert_snapshot!(render(
        "resources:\n  a: { kind: executable, command: a, wait_for: [b] }\n  b: { kind: executable, command: b, wait_for: [c] }\n  c: { kind: executable, command: c, wait_for: [a] }\n"
    ));
}

#[test]
fn duplicate_host_port() {
    insta::assert_snapshot!(render(
        "resources:\n  one: { kind: postgres, ports: [\"15432:5432\"] }\n  two: { kind: postgres, ports: [\"15432:5432\"] }\n"
    ));
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(render(
        "resources:\n  api:\n    kind: project\n    health: { http: /health, interval: soon }\n"
    ));
}

#[test]
fn invalid_yaml() {
    insta::assert_snapshot!(render("resources:\n  db: { kind: postgres\n"));
}

#[test]
fn duplicate_resource() {
    insta::assert_snapshot!(render("resources:\n  db: { kind: postgres }\n  db: { kind: artemis }\n"));
}

#[test]
fn several_problems_are_reported_together() {
    let text = render("resources:\n  api:\n    kind: project\n    references: [nope]\n    wait_for: [nada]\n");
    assert!(text.contains("`nope`") && text.contains("`nada`"), "{text}");
    assert!(text.contains("2 problems"), "{text}");
}

#[test]
fn the_demo_file_is_valid_and_ordered() {
    let t = load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/apphost.yaml"))).unwrap();
    assert_eq!(t.name, "outbox-demo");
    let names: Vec<&str> = t.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sender-db", "receiver-db", "broker", "sender", "receiver"]);
    assert_eq!(graph::waves(&t), vec![vec!["sender-db", "receiver-db", "broker"], vec!["sender", "receiver"]]);
    let broker = t.resource("broker").unwrap();
    assert_eq!(broker.health.as_ref().unwrap().start_period, Duration::from_secs(60));
    assert_eq!(t.metrics_from, ["sender", "receiver"]);
}

#[test]
fn kinds_get_their_default_ports_and_probes() {
    let t = parse_str(
        Path::new("x.yaml"),
        "resources:\n  db: { kind: postgres, ports: [\"15432:5432\"], database: app }\n  mq: { kind: artemis }\n  api: { kind: project }\n",
    )
    .unwrap();
    let db = t.resource("db").unwrap();
    assert_eq!(db.port("tcp").map(|p| (p.host, p.target)), Some((Some(15432), Some(5432))));
    assert_eq!(db.health.as_ref().unwrap().check, Check::PgIsReady { port: "tcp".into() });
    let mq = t.resource("mq").unwrap();
    assert!(mq.port("amqp").is_some() && mq.port("core").is_some());
    assert_eq!(mq.health.as_ref().unwrap().check, Check::Amqp { port: "amqp".into() });
    let api = t.resource("api").unwrap();
    assert_eq!(api.health.as_ref().unwrap().check, Check::Http { path: "/health/ready".into(), port: "http".into() });
    assert_eq!(api.restart.policy, RestartPolicy::OnFailure);
}

#[test]
fn restart_shutdown_and_wait_conditions_parse() {
    let t = parse_str(
        Path::new("x.yaml"),
        "resources:\n  job: { kind: executable, command: migrate, restart: no }\n  api:\n    kind: executable\n    command: api\n    wait_for: { job: completed }\n    restart: { policy: always, max_restarts: 2, backoff: 500ms }\n    shutdown: { signal: SIGINT, grace: 1m30s }\n",
    )
    .unwrap();
    assert_eq!(t.resource("job").unwrap().restart.policy, RestartPolicy::No);
    let api = t.resource("api").unwrap();
    assert_eq!(api.wait_for[0].condition, Condition::Completed);
    assert_eq!(api.restart.max_restarts, 2);
    assert_eq!(api.restart.backoff, Duration::from_millis(500));
    assert_eq!(api.shutdown.signal, libc::SIGINT);
    assert_eq!(api.shutdown.grace, Duration::from_secs(90));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("10"), None, "a unit is required");
    assert_eq!(parse_duration("5 min"), None);
}

/// A `grace` alone keeps the kind's stop signal: PostgreSQL's SIGTERM is a
/// "smart" shutdown that waits for every client, so its kind stops it with SIGINT.
#[test]
fn a_grace_alone_keeps_the_kinds_stop_signal() {
    let t = parse_str(
        Path::new("x.yaml"),
        "resources:\n  db: { kind: postgres, shutdown: { grace: 5s } }\n  api: { kind: project, shutdown: { grace: 2s } }\n",
    )
    .unwrap();
    let db = &t.resource("db").unwrap().shutdown;
    assert_eq!((db.signal, db.grace), (libc::SIGINT, std::time::Duration::from_secs(5)));
    let api = &t.resource("api").unwrap().shutdown;
    assert_eq!((api.signal, api.grace), (libc::SIGTERM, std::time::Duration::from_secs(2)));
}

/// Hostile files are refused quickly, with bounded memory and a clear message.
#[test]
fn hostile_files_are_refused_with_bounded_work() {
    // Billion laughs: nine levels of nine aliases.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        laughs.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 9].join(", ")));
    }
    laughs.push_str("resources: {}\n");
    assert!(render(&laughs).contains("alias expansion exceeded"), "{}", render(&laughs));
    // Nesting far deeper than any real file.
    let deep = format!("resources: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert!(render(&deep).contains("recursion limit exceeded"));
    // More resources than supported: refused by count, pointing at `resources:` only.
    let many: String =
        (0..MAX_RESOURCES + 1).map(|i| format!("  r{i}: {{ kind: executable, command: \"true\" }}\n")).collect();
    let text = render(&format!("resources:\n{many}"));
    assert!(
        text.contains(&format!("{} resources; at most {MAX_RESOURCES} are supported", MAX_RESOURCES + 1)),
        "{text}"
    );
    assert!(text.lines().count() < 30, "the report does not print the whole file:\n{text}");
}

#[test]
fn a_file_too_large_or_not_a_file_is_refused_before_it_is_read() {
    let dir = std::env::temp_dir().join(format!("apphost-big-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("apphost.yaml");
    std::fs::write(&big, format!("resources: {{}}\n#{}\n", "x".repeat(MAX_FILE_BYTES as usize))).unwrap();
    let refused = load(&big).unwrap_err().to_string();
    assert!(refused.contains("is 1.0 MiB; a topology file is a regular file of at most 1048576 bytes"), "{refused}");
    let refused = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(refused.contains("not a regular file"), "{refused}");
    std::fs::remove_dir_all(dir).unwrap();
}
