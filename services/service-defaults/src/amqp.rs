//! An AMQP 1.0 connection and session, opened with a bound on the whole
//! handshake and closed without waiting long for a dead peer.

use std::time::Duration;

use fe2o3_amqp::{Connection, Session, connection::ConnectionHandle, session::SessionHandle};
use url::Url;

use crate::{Secret, config::mask_url};

#[derive(Clone, Debug)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port`; the credentials are used for SASL PLAIN.
    pub url: Secret<Url>,
    /// Advertised to the peer; a silent peer is declared dead after this long.
    pub idle_timeout: Duration,
    /// Bounds TCP connect, SASL, open, begin and attach together.
    pub connect_timeout: Duration,
    /// The AMQP container id; links are named after it.
    pub container_id: String,
}

impl AmqpSettings {
    pub fn new(url: Secret<Url>, container_prefix: &str) -> Self {
        Self {
            url,
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            container_id: format!("{container_prefix}-{}", uuid::Uuid::new_v4()),
        }
    }

    pub fn masked_url(&self) -> String {
        mask_url(self.url.expose())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to the broker at {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("the broker at {url} did not complete the handshake within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

pub struct AmqpSession {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
}

impl AmqpSession {
    /// Opens a connection and a session, then runs `attach` (a link attach)
    /// on it, all within `connect_timeout`.
    pub async fn open_with<L, F>(settings: &AmqpSettings, attach: F) -> Result<(Self, L), AmqpError>
    where
        F: AsyncFnOnce(&mut SessionHandle<()>) -> Result<L, String>,
    {
        let url = settings.masked_url();
        let open = async {
            let failed = |reason: String| AmqpError::Open { url: url.clone(), reason };
            let idle_ms = u32::try_from(settings.idle_timeout.as_millis()).unwrap_or(u32::MAX);
            let mut connection = Connection::builder()
                .container_id(settings.container_id.clone())
                .idle_time_out(idle_ms)
                .open(settings.url.expose().clone())
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut session = match Session::begin(&mut connection).await {
                Ok(session) => session,
                Err(e) => {
                    let _ = connection.close().await;
                    return Err(failed(e.to_string()));
                }
            };
            match attach(&mut session).await {
                Ok(link) => Ok((Self { connection, session }, link)),
                Err(reason) => {
                    Self { connection, session }.close().await;
                    Err(failed(reason))
                }
            }
        };
        tokio::time::timeout(settings.connect_timeout, open)
            .await
            .map_err(|_| AmqpError::Timeout { url: url.clone(), timeout: settings.connect_timeout })?
    }

    /// Ends the session and closes the connection, giving a dead peer 2 s at most.
    pub async fn close(mut self) {
        let polite = async {
            let _ = self.session.end().await;
            let _ = self.connection.close().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), polite).await;
    }
}
