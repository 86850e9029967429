//! Notify subscriptions: core NATS subscribe (lossy fan-out, native wildcards).

use std::sync::Arc;

use futures::StreamExt;

use super::{Shared, headers};
use crate::{BusMessage, Result, Subscription};

/// A core NATS subscription; unsubscribes on drop.
pub(crate) struct JetStreamSubscription {
    shared: Arc<Shared>,
    subscriber: async_nats::Subscriber,
}

impl JetStreamSubscription {
    /// Subscribes to `pattern` (already validated) and flushes, so the server knows the
    /// subscription before this returns and a notify from any connection after it arrives.
    pub(crate) async fn new(shared: Arc<Shared>, pattern: &str) -> Result<Self> {
        let subscriber = shared
            .client
            .subscribe(shared.names.subject(pattern))
            .await
            .map_err(|e| shared.error("subscribe", e))?;
        shared
            .client
            .flush()
            .await
            .map_err(|e| shared.error("subscribe", e))?;
        Ok(Self { shared, subscriber })
    }
}

#[async_trait::async_trait]
impl Subscription for JetStreamSubscription {
    async fn next(&mut self) -> Option<BusMessage> {
        let message = tokio::select! {
            biased;
            () = self.shared.closed.cancelled() => return None,
            message = self.subscriber.next() => message?,
        };
        Some(BusMessage {
            subject: self.shared.names.unprefixed(message.subject.as_str()),
            headers: headers::from_nats(message.headers.as_ref()),
            payload: message.payload,
        })
    }
}
