//! The reference for the sender's write path: `pgbench` running the
//! statement one `POST /api/EntityItems` runs, one transaction, on the
//! sender's own database, on tables of the same shape (`LIKE … INCLUDING
//! ALL`: columns, defaults, constraints, indexes) that no relay reads, so the
//! reference measures the database and nothing else.

use std::{path::Path, process::Stdio, time::Duration};

/// The statement of one POST without an `Idempotency-Key` (the bench's), as
/// the sender sends it for an item written alone
/// (`sender::writes::INSERT_WITH_EVENTS`): the item, returned, and its
/// outbox row with the event the database builds from it, one implicit
/// transaction. On the bench's tables, its parameters as `pgbench`
/// variables in arrays of one; ids are time-ordered like the UUIDv7 the
/// sender makes.
fn script() -> String {
    let statement = sender::writes::INSERT_WITH_EVENTS
        .replace("INSERT INTO entity_items", "INSERT INTO bench_entity_items")
        .replace("INSERT INTO outbox", "INSERT INTO bench_outbox")
        .replace("$1", "ARRAY[bench_uuid()]")
        .replace("$2", "ARRAY['bench ' || :value]")
        .replace("$3", "ARRAY[:value]")
        .replace("$4", "ARRAY[bench_uuid()]")
        .replace("$5", "'EntityItemCreated'")
        .replace("$6", "ARRAY[NULL]");
    format!("\\set value random(1, 1000000)\n{statement};\n")
}

const SETUP: &str = "
DROP TABLE IF EXISTS bench_entity_items, bench_outbox;
CREATE TABLE bench_entity_items (LIKE entity_items INCLUDING ALL);
CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL);
";

/// Time-ordered ids, like the UUIDv7 the sender makes.
const BENCH_UUID: &str = "
CREATE OR REPLACE FUNCTION bench_uuid() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
          || '7' || substr(md5(random()::text), 1, 19))::uuid
$$;
";

const TEARDOWN: &str = "DROP TABLE IF EXISTS bench_entity_items, bench_outbox; DROP FUNCTION IF EXISTS bench_uuid();";

/// Makes a reference's `tables` and `bench_uuid()`.
async fn set_up(pool: &sqlx::PgPool, tables: &'static str) -> Result<(), String> {
    for statements in [tables, BENCH_UUID] {
        sqlx::raw_sql(statements)
            .execute(pool)
            .await
            .map_err(|e| format!("cannot make the reference's tables: {e}"))?;
    }
    Ok(())
}

/// Messages in one transaction of the receiver's reference: its default
/// batch, the largest it commits at once, so the cost per message is the
/// lowest the receiver's statements reach.
pub const RECEIVER_BATCH: usize = 200;

/// The receiver's transaction for a batch of [`RECEIVER_BATCH`] new messages,
/// as `receiver::store` runs it (`INSERT_INBOX`, then `INSERT_ITEMS`, one
/// transaction), on the bench's tables. The arrays it binds are made in the
/// database: message ids ordered like the sender's UUIDv7 (one per
/// transaction, numbered), item ids by `bench_uuid()`, no trace ids.
fn receiver_script() -> String {
    let n = RECEIVER_BATCH;
    let message_ids = format!("(SELECT array_agg(:p || '.' || lpad(g::text, 4, '0')) FROM generate_series(1, {n}) g)");
    let inbox = receiver::store::INSERT_INBOX
        .replace("INSERT INTO inbox", "INSERT INTO bench_inbox")
        .replace("$1", &message_ids)
        .replace("$2", &format!("array_fill('EntityItemCreated'::text, ARRAY[{n}])"))
        .replace("$3", &format!("array_fill(NULL::text, ARRAY[{n}])"));
    let items = receiver::store::INSERT_ITEMS
        .replace("entity_items", "bench_entity_items")
        .replace("$1", &format!("(SELECT array_agg(bench_uuid()) FROM generate_series(1, {n}))"))
        .replace("$2", &format!("(SELECT array_agg('bench ' || g) FROM generate_series(1, {n}) g)"))
        .replace("$3", &format!("(SELECT array_agg(g::numeric) FROM generate_series(1, {n}) g)"))
        .replace("$4", &format!("array_fill(now(), ARRAY[{n}])"))
        .replace("$5", &message_ids);
    format!("SELECT bench_uuid()::text AS p \\gset\nBEGIN;\n{inbox};\n{items};\nEND;\n")
}

const RECEIVER_SETUP: &str = "
DROP TABLE IF EXISTS bench_entity_items, bench_inbox;
CREATE TABLE bench_inbox (LIKE inbox INCLUDING ALL);
CREATE TABLE bench_entity_items (LIKE entity_items INCLUDING ALL);
ALTER TABLE bench_entity_items ADD FOREIGN KEY (message_id) REFERENCES bench_inbox (message_id);
";

const RECEIVER_TEARDOWN: &str =
    "DROP TABLE IF EXISTS bench_entity_items, bench_inbox; DROP FUNCTION IF EXISTS bench_uuid();";

/// Messages a second the receiver's statements store in its database, in
/// transactions of [`RECEIVER_BATCH`], from `clients` for `duration`.
pub async fn receiver_messages(url: &str, clients: usize, duration: Duration, scratch: &Path) -> Result<f64, String> {
    let pool = sqlx::PgPool::connect(url).await.map_err(|e| format!("cannot reach the receiver's database: {e}"))?;
    set_up(&pool, RECEIVER_SETUP).await?;
    let result = run_script(url, ("pgbench-receiver.sql", &receiver_script()), clients, duration, &[], scratch).await;
    let _ = sqlx::raw_sql(RECEIVER_TEARDOWN).execute(&pool).await;
    pool.close().await;
    let text = result?;
    parse_tps(&text).map(|tps| tps * RECEIVER_BATCH as f64).ok_or_else(|| format!("pgbench said no tps: {text}"))
}

/// Transactions a second that `pgbench` got with `clients` for `duration`.
pub async fn tps(url: &str, clients: usize, duration: Duration, scratch: &Path) -> Result<f64, String> {
    let pool = sqlx::PgPool::connect(url).await.map_err(|e| format!("cannot reach the sender's database: {e}"))?;
    set_up(&pool, SETUP).await?;
    let result = run(url, clients, duration, scratch).await;
    let _ = sqlx::raw_sql(TEARDOWN).execute(&pool).await;
    pool.close().await;
    result
}

/// `pgbench` at a fixed `rate` (open loop: `--rate`, 8 clients) for
/// `duration`: each transaction's time from its start to its commit
/// (schedule lag not counted), p50 and p99 in seconds. The sender's
/// `created_at` is its transaction's start, so this is the part of the
/// outbox lag before the relay can see a row: a floor under it.
pub async fn commit_latency(url: &str, rate: f64, duration: Duration, scratch: &Path) -> Result<(f64, f64), String> {
    let pool = sqlx::PgPool::connect(url).await.map_err(|e| format!("cannot reach the sender's database: {e}"))?;
    set_up(&pool, SETUP).await?;
    let prefix = scratch.join("pgbench-log");
    let rate_args = [format!("--rate={rate:.0}"), "--log".to_owned(), format!("--log-prefix={}", prefix.display())];
    let result = run_with(url, 8, duration, &rate_args, scratch).await;
    let _ = sqlx::raw_sql(TEARDOWN).execute(&pool).await;
    pool.close().await;
    result?;
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for entry in std::fs::read_dir(scratch).map_err(|e| e.to_string())?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("pgbench-log.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        for micros in text.lines().filter_map(transaction_micros) {
            latencies.saturating_record(micros.max(1));
        }
        let _ = std::fs::remove_file(entry.path());
    }
    if latencies.is_empty() {
        return Err("pgbench logged no transaction".into());
    }
    let at = |q| latencies.value_at_quantile(q) as f64 / 1e6;
    Ok((at(0.5), at(0.99)))
}

/// A line of `pgbench --log` under `--rate`: `client_id transaction_no time
/// script_no time_epoch time_us schedule_lag`; `time` counts from when the
/// transaction was due, so its schedule lag comes off. Skipped transactions
/// say `skipped`.
fn transaction_micros(line: &str) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let time: u64 = fields.get(2)?.parse().ok()?;
    let lag: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(time.saturating_sub(lag))
}

async fn run(url: &str, clients: usize, duration: Duration, scratch: &Path) -> Result<f64, String> {
    let text = run_with(url, clients, duration, &[], scratch).await?;
    parse_tps(&text).ok_or_else(|| format!("pgbench said no tps: {text}"))
}

/// Runs the POST's script with `clients` for `duration` (and `extra`
/// arguments); returns what `pgbench` printed.
async fn run_with(
    url: &str,
    clients: usize,
    duration: Duration,
    extra: &[String],
    scratch: &Path,
) -> Result<String, String> {
    run_script(url, ("pgbench-post.sql", &script()), clients, duration, extra, scratch).await
}

/// Runs `script` (written to the scratch file named first) with `clients`
/// for `duration` (and `extra` arguments); returns what `pgbench` printed.
async fn run_script(
    url: &str,
    (name, script): (&str, &str),
    clients: usize,
    duration: Duration,
    extra: &[String],
    scratch: &Path,
) -> Result<String, String> {
    let url = url::Url::parse(url).map_err(|e| format!("the database URL: {e}"))?;
    let file = scratch.join(name);
    crate::statedir::write_private(&file, script.as_bytes()).map_err(|e| format!("{}: {e}", file.display()))?;
    let pgbench = local_install::pg_bin_dir().map_err(|e| e.to_string())?.join("pgbench");
    // Generated passwords are alphanumeric: nothing in them is percent-encoded.
    let password = url.password().unwrap_or_default().to_owned();
    let output = tokio::process::Command::new(&pgbench)
        .args(["--no-vacuum", "--protocol=prepared", "--file"])
        .arg(&file)
        .args(["--client", &clients.to_string(), "--jobs", &clients.clamp(1, 2).to_string()])
        .args(["--time", &duration.as_secs().max(1).to_string()])
        .args(extra)
        .args(["--host", url.host_str().unwrap_or("127.0.0.1")])
        .args(["--port", &url.port().unwrap_or(5432).to_string()])
        .args(["--username", url.username()])
        .arg(url.path().trim_start_matches('/'))
        // Never on the command line.
        .env("PGPASSWORD", password)
        .current_dir(scratch)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", pgbench.display()))?;
    if !output.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `tps = 1818.123456 (without initial connection time)`.
fn parse_tps(text: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logged_transaction_counts_from_its_start_not_from_when_it_was_due() {
        assert_eq!(super::transaction_micros("3 17 5210 0 1796352615 924000 1200"), Some(4010));
        assert_eq!(super::transaction_micros("3 18 skipped 0 1796352615 924000 1200"), None);
    }

    #[test]
    fn the_script_is_the_senders_statement_on_the_bench_tables() {
        let script = super::script();
        assert!(!script.contains('$'), "every parameter is a pgbench variable: {script}");
        only_variables(&script, &["value"]);
        assert!(!script.contains("INTO entity_items") && !script.contains("INTO outbox"), "{script}");
        assert!(script.contains("INTO bench_entity_items") && script.contains("INTO bench_outbox"), "{script}");
    }

    /// pgbench reads any `:name` outside a `::` cast as a variable: only `names` may appear.
    fn only_variables(script: &str, names: &[&str]) {
        let bytes = script.as_bytes();
        for (i, _) in script.match_indices(':') {
            let cast = bytes.get(i + 1) == Some(&b':') || (i > 0 && bytes[i - 1] == b':');
            let named = bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
            let known = names.iter().any(|n| script[i + 1..].starts_with(n));
            assert!(cast || !named || known, "a stray variable at {i}: {script}");
        }
    }

    #[test]
    fn the_receivers_script_is_its_two_statements_on_the_bench_tables() {
        let script = super::receiver_script();
        assert!(!script.contains('$'), "every parameter is made in the database: {script}");
        only_variables(&script, &["p "]);
        assert!(script.starts_with("SELECT bench_uuid()::text AS p \\gset\nBEGIN;\n"), "{script}");
        assert!(script.contains("INSERT INTO bench_inbox") && script.contains("INSERT INTO bench_entity_items"));
        assert!(script.contains("applied = bench_entity_items.applied + 1"), "{script}");
        assert!(!script.contains(" inbox ") && !script.contains(" entity_items"), "{script}");
        assert_eq!(script.matches("generate_series(1, 200)").count(), 5, "{script}");
    }

    #[test]
    fn tps_is_read_from_pgbench_output() {
        let text = "latency average = 17.6 ms\ninitial connection time = 21.3 ms\ntps = 1818.123456 (without initial connection time)\n";
        assert_eq!(super::parse_tps(text), Some(1818.123456));
        assert_eq!(super::parse_tps("nothing"), None);
    }
}
