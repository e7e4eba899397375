//! The receiver's settings, from the environment only (`docs/contracts.md`).

use std::{net::IpAddr, time::Duration};

use service_defaults::{
    Secret,
    config::{self, ConfigError, ConnectionString, Env, connection_string, duration_var, parse_var},
};
use url::Url;

pub const DATABASE: &str = "receiver-db";
pub const BROKER: &str = "broker";

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
    /// How long to wait for more messages to fill a batch. 0 takes what has
    /// arrived: the next batch gathers while this one commits, and no message
    /// waits for others that are not coming.
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
            batch_wait: duration_var(env, "RECEIVER_BATCH_WAIT", Duration::ZERO)?,
            idle_timeout: duration_var(env, "AMQP_IDLE_TIMEOUT", Duration::from_secs(20))?,
        })
    }
}
