//! The sender fuzzed from its own OpenAPI document by an independent tool,
//! schemathesis (PyPI; `.ci/setup` installs it into the cache's venv).

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;
use testkit::Postgres;

use crate::helpers::{TestApp, dead_broker};

fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("APPHOST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/apphost"));
        home.join("venv/bin/schemathesis")
    })
}

/// Every operation, valid and invalid input alike: no 5xx, every answer as
/// the document says (status, content type, headers, schema), invalid input
/// refused, and the items in the database are exactly those answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_from_the_openapi_document_finds_nothing_and_writes_only_what_it_acknowledged() {
    let tool = schemathesis();
    assert!(tool.exists(), "{} is missing: `.ci/setup` installs schemathesis", tool.display());
    let db = Postgres::shared().fresh_database().await;
    let app = TestApp::spawn(&db, &dead_broker(), "q").await;
    let har = std::env::temp_dir().join(format!("sender-fuzz-{}.har", uuid::Uuid::new_v4().simple()));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis.toml");
    let run = tokio::process::Command::new(&tool)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{}/openapi.json", app.base))
        .args(["--checks", "all", "--max-examples", "60", "--seed", "20261128", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--report", "har", "--report-har-path"])
        .arg(&har)
        .env("NO_COLOR", "1")
        // It keeps a cache (`.schemathesis/`) where it runs: not in the tree.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "schemathesis found problems:\n{said}\n{}", String::from_utf8_lossy(&run.stderr));

    let report: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let _ = std::fs::remove_file(&har);
    let entries = report["log"]["entries"].as_array().unwrap();
    let mut acknowledged = BTreeSet::new();
    for entry in entries {
        let status = entry["response"]["status"].as_u64().unwrap_or_default();
        assert!(status < 500, "a 5xx: {entry}");
        if entry["request"]["method"] == "POST" && status == 201 {
            let body: Value = serde_json::from_str(entry["response"]["content"]["text"].as_str().unwrap()).unwrap();
            acknowledged.insert(body["id"].as_str().unwrap().to_owned());
        }
    }
    let stored: BTreeSet<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM entity_items")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    assert!(entries.len() > 100, "the fuzzer sent {} requests", entries.len());
    assert_eq!(
        stored,
        acknowledged,
        "stored exactly what was answered 201 ({} of {} requests)",
        acknowledged.len(),
        entries.len()
    );
}
