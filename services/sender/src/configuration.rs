//! The sender's settings, from the environment only (`docs/contracts.md`).

use std::{net::IpAddr, time::Duration};

use outbox::{BrokerSettings, RelaySettings};
use service_defaults::config::{self, ConfigError, ConnectionString, Env, connection_string, duration_var, parse_var};

/// The names under which apphost (or a person) passes the connection strings.
pub const DATABASE: &str = "sender-db";
pub const BROKER: &str = "broker";

#[derive(Clone, Debug)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub database: ConnectionString,
    pub pool_size: u32,
    pub db_acquire_timeout: Duration,
    /// API requests served at once; the next is refused with 503 at once.
    pub max_in_flight_requests: usize,
    /// Tasks writing the `POST`s without an `Idempotency-Key`, and the most
    /// items one of them writes in one statement (see [`crate::writes`]).
    pub writers: usize,
    pub write_batch: usize,
    pub broker: BrokerSettings,
    pub relay: RelaySettings,
    /// Relay tasks in this process (they share the table safely).
    pub relays: usize,
    /// How long an `Idempotency-Key` and its answer are kept.
    pub idempotency_retention: Duration,
}

impl Settings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let database = connection_string(env, DATABASE, "postgres://user:password@127.0.0.1:5432/sender")?;
        let broker_cs = connection_string(env, BROKER, "amqp://user:password@127.0.0.1:5672")?;
        let defaults = RelaySettings::default();
        let relay = RelaySettings {
            batch_size: parse_var(env, "OUTBOX_BATCH_SIZE", "a positive number of rows", defaults.batch_size)?.max(1),
            max_in_flight: parse_var(
                env,
                "OUTBOX_MAX_IN_FLIGHT",
                "a positive number of messages",
                defaults.max_in_flight,
            )?
            .max(1),
            poll_interval: duration_var(env, "OUTBOX_POLL_INTERVAL", defaults.poll_interval)?,
            send_timeout: duration_var(env, "OUTBOX_SEND_TIMEOUT", defaults.send_timeout)?,
            max_attempts: parse_var(
                env,
                "OUTBOX_MAX_ATTEMPTS",
                "a positive number of attempts",
                defaults.max_attempts,
            )?
            .max(1),
            retry_base: duration_var(env, "OUTBOX_RETRY_BASE", defaults.retry_base)?,
            retry_max: duration_var(env, "OUTBOX_RETRY_MAX", defaults.retry_max)?,
            broker_dedup: parse_var(env, "OUTBOX_BROKER_DEDUP", "true or false", defaults.broker_dedup)?,
            durable_delete: parse_var(env, "OUTBOX_DURABLE_DELETE", "true or false", defaults.durable_delete)?,
            ..defaults
        };
        let mut broker = BrokerSettings::new(
            broker_cs.url,
            parse_var(env, "OUTBOX_ADDRESS", "a queue name", "entity-items".to_owned())?,
        );
        broker.amqp.idle_timeout = duration_var(env, "AMQP_IDLE_TIMEOUT", broker.amqp.idle_timeout)?;
        let pool_size = parse_var(env, "DB_POOL_SIZE", "a positive number of connections", 16u32)?.max(1);
        let writers = parse_var(env, "DB_WRITERS", "a positive number of writers", 4usize)?.max(1);
        let write_batch = parse_var(env, "DB_WRITE_BATCH", "a positive number of items", 64usize)?.max(1);
        // Four times four requests per connection or the writers' queue (a batch
        // per writer), whichever is more: a refusal should mean overload, not a
        // pause of a tenth of a second, which a client then waits out for a second
        // (`Retry-After: 1`). At 64 (four per connection alone), 3,305 POST/s
        // offered, well below what the stack holds, refused 30 and 10 requests of
        // 19,830 in a hiccup; at 256, none (0972d99, `apphost bench --only open
        // --rates 2975,3305`, and again at 3305,3800). At 256, 300 s at 4,530/s
        // refused 434 requests, in bursts as a pause passed; at 1,024, 300 s at
        // 4,838/s refused none (`apphost bench --no-build --only closed,sustained`
        // with and without `HTTP_MAX_IN_FLIGHT=1024`, 2026-12-08, 0d1d839).
        let default_in_flight = (pool_size as usize * 4).max(writers * write_batch) * 4;
        let max_in_flight_requests =
            parse_var(env, "HTTP_MAX_IN_FLIGHT", "a positive number of requests", default_in_flight)?.max(1);
        Ok(Self {
            host: parse_var(env, "HOST", "an IP address to listen on", IpAddr::from([0, 0, 0, 0]))?,
            port: config::http_port(env, crate::DEFAULT_PORT)?,
            database,
            pool_size,
            db_acquire_timeout: duration_var(env, "DB_ACQUIRE_TIMEOUT", Duration::from_secs(2))?,
            max_in_flight_requests,
            writers,
            write_batch,
            broker,
            relay,
            relays: parse_var(env, "OUTBOX_RELAYS", "a number of relay tasks", 4usize)?.max(1),
            idempotency_retention: duration_var(env, "IDEMPOTENCY_RETENTION", Duration::from_secs(24 * 3600))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::Settings;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let needed = [
            ("ConnectionStrings__sender-db", "postgres://user:password@127.0.0.1:5432/sender"),
            ("ConnectionStrings__broker", "amqp://user:password@127.0.0.1:5672"),
        ];
        let env: HashMap<String, String> =
            needed.iter().chain(vars).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(&env).expect("valid settings")
    }

    #[test]
    fn requests_in_flight_default_to_the_writers_queue_or_four_per_connection_whichever_is_more() {
        assert_eq!(settings(&[]).max_in_flight_requests, 1024);
        assert_eq!(settings(&[("DB_POOL_SIZE", "100")]).max_in_flight_requests, 1600);
        assert_eq!(settings(&[("DB_WRITERS", "1"), ("DB_WRITE_BATCH", "8")]).max_in_flight_requests, 256);
        assert_eq!(settings(&[("HTTP_MAX_IN_FLIGHT", "3")]).max_in_flight_requests, 3);
    }
}
