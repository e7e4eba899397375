//! The receiver's settings, from the environment only (`docs/contracts.md`).

use std::{net::IpAddr, time::Duration};

use service_defaults::{
    Secret,
    config::{self, ConfigError, ConnectionString, Env, connection_string, duration_var, parse_var},
};
use url::Url;

pub const DATABASE: &str = "receiver-db";
pub const BROKER: &str = "broker";

/// The default batch wait. Each batch is a durable commit on a disk the
/// sender's database shares, and a disposition the broker journals: at 0,
/// a batch at 480 messages/s is one or two messages. With the whole stack
/// under `apphost bench --only closed,open --rates 480,2800` (3 runs each,
/// one invocation per value, this machine), at 0 / 1 / 3 / 10 ms:
/// - 2,800 POST/s: requests refused (503) 564+999+296 / 99+110+29 / 0+0+31 /
///   0+34+0; `POST` p99 36–50 / 16–27 / 9–12 / 11–14 ms; end-to-end p99
///   26–53 / 19–53 / 17–18 / 24–30 ms;
/// - 480/s: the broker's, the receiver's and its database's CPU 61 / 48 / 36
///   / 26 % of a core (medians); end-to-end p99 5.6–6.7 / 7.0–11.7 / 8.4–9.0 /
///   14.1–14.4 ms (the goal is 50);
/// - beyond what the stack takes (4,244/s, a third refused), 0 against 3 ms
///   (`--rates 4244`): 24,779 against 23,065 acknowledged per run (medians)
///   and end-to-end p99 48 against 83 ms. Under overload the wait costs a little.
pub const BATCH_WAIT: Duration = Duration::from_millis(3);

#[derive(Clone, Debug)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub database: ConnectionString,
    pub pool_size: u32,
    pub broker: Secret<Url>,
    pub masked_broker: String,
    /// The queue consumed (anycast).
    pub address: String,
    /// Link credit: messages the broker may push before we settle.
    pub credit: u32,
    /// Messages committed per database transaction, at most.
    pub batch_size: usize,
    /// How long to wait for more messages to fill a batch ([`BATCH_WAIT`]
    /// by default); 0 takes what has arrived.
    pub batch_wait: Duration,
    pub idle_timeout: Duration,
}

impl Settings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let database = connection_string(env, DATABASE, "postgres://user:password@127.0.0.1:5432/receiver")?;
        let broker = connection_string(env, BROKER, "amqp://user:password@127.0.0.1:5672")?;
        let credit: u32 = parse_var(env, "RECEIVER_CREDIT", "a positive number of messages", 500u32)?.max(1);
        Ok(Self {
            host: parse_var(env, "HOST", "an IP address to listen on", IpAddr::from([0, 0, 0, 0]))?,
            port: config::http_port(env, crate::DEFAULT_PORT)?,
            database,
            pool_size: parse_var(env, "DB_POOL_SIZE", "a positive number of connections", 8u32)?.max(1),
            masked_broker: broker.masked(),
            broker: broker.url,
            address: parse_var(env, "RECEIVER_ADDRESS", "a queue name", "entity-items".to_owned())?,
            credit,
            batch_size: parse_var(env, "RECEIVER_BATCH_SIZE", "a positive number of messages", 200usize)?
                .clamp(1, credit as usize),
            batch_wait: duration_var(env, "RECEIVER_BATCH_WAIT", BATCH_WAIT)?,
            idle_timeout: duration_var(env, "AMQP_IDLE_TIMEOUT", Duration::from_secs(20))?,
        })
    }
}
