//! One AMQP connection, session and sender link to the outbox's address.
//!
//! The link is thrown away on any fault and rebuilt by the relay with backoff:
//! an AMQP link has no state worth repairing, and every unsettled row is still
//! in the outbox to be sent again.

use fe2o3_amqp::{
    Sender,
    types::{messaging::Target, primitives::Symbol},
};
use service_defaults::{
    Secret,
    amqp::{AmqpError, AmqpSession, AmqpSettings},
};
use url::Url;

#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub amqp: AmqpSettings,
    /// The anycast address (queue) the messages go to.
    pub address: String,
}

impl BrokerSettings {
    pub fn new(url: Secret<Url>, address: impl Into<String>) -> Self {
        Self { amqp: AmqpSettings::new(url, "outbox-relay"), address: address.into() }
    }

    pub fn masked_url(&self) -> String {
        self.amqp.masked_url()
    }
}

/// The open link the relay sends on.
pub struct Link {
    session: AmqpSession,
    pub sender: Sender,
}

impl Link {
    pub async fn open(settings: &BrokerSettings) -> Result<Self, AmqpError> {
        let target = Target::builder()
            .address(settings.address.clone())
            // Artemis: an anycast address (a queue), created on first use.
            .capabilities(vec![Symbol::from("queue")])
            .build();
        let name = format!("{}-sender", settings.amqp.container_id);
        let (session, sender) = AmqpSession::open_with(&settings.amqp, async |session| {
            Sender::builder().name(name).target(target).attach(session).await.map_err(|e| e.to_string())
        })
        .await?;
        Ok(Self { session, sender })
    }

    /// Detaches and closes politely, but never waits long for a dead peer.
    pub async fn close(self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.sender.close()).await;
        self.session.close().await;
    }
}
