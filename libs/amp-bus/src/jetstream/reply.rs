//! Outcomes back to a waiting publisher ([`crate::BusBackend::publish_for_reply`]).
//!
//! A publisher that wants the consumer's outcome adds [`REPLY_HEADER`] to its JetStream
//! publish: a subject of this bus's reply inbox, `<prefix>.amp.reply.<instance>.<token>`. One
//! core NATS subscription per bus (`<prefix>.amp.reply.<instance>.*`, made on first use) hands
//! each reply to the publish waiting for that token.
//!
//! The consumer offers its reply before acking. Without confirmation it is a core publish
//! (lost if the publisher is gone: the publisher then answers from what the broker proved).
//! With confirmation it is a core request, and the inbox answers `1` only once the waiting
//! publish has taken the reply (it will answer its caller with it), `0` when nobody waits (the
//! publish timed out, was cancelled, or its process died: then no answer comes at all). The
//! decision is made under one lock on both sides, so a reply is never both taken and counted
//! as untaken: a consumer whose failure nobody took reports it another way (a bounce).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Carries the reply subject on a published message; hidden from consumers.
pub(crate) const REPLY_HEADER: &str = "Amp-Reply-To";
/// How long a consumer waits for the inbox to say whether its reply was taken.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// A reply and the way to say it was taken.
type Handoff = (Bytes, oneshot::Sender<()>);

/// The reply inbox of one bus.
pub(crate) struct Inbox {
    /// `<prefix>.amp.reply.<instance>`.
    base: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Handoff>>>,
}

impl Inbox {
    /// Subscribes under `root` (`<prefix>.amp.reply`) with a fresh instance token, and starts
    /// the task that hands replies over. The task ends with the subscription (bus closed).
    ///
    /// Fails when the subscription cannot be made.
    pub(crate) async fn start(client: &async_nats::Client, root: String) -> Result<Arc<Self>> {
        // `_INBOX.<nuid>`: a unique token per connection.
        let inbox = client.new_inbox();
        let instance = inbox.rsplit('.').next().unwrap_or("0").to_owned();
        let base = format!("{root}.{instance}");
        let mut sub = client
            .subscribe(format!("{base}.*"))
            .await
            .map_err(|e| Error::Backend(format!("reply inbox subscribe: {e}")))?;
        let this = Arc::new(Self {
            base,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&this);
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(inbox) = weak.upgrade() else { return };
                let token = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                let handed = token.and_then(|t| inbox.hand_over(t, msg.payload.clone()));
                let Some(answer_to) = msg.reply else {
                    continue;
                };
                let client = client.clone();
                tokio::spawn(async move {
                    // Taken once the waiting publish has the reply in hand.
                    let taken = match handed {
                        Some(rx) => rx.await.is_ok(),
                        None => false,
                    };
                    let answer = Bytes::from_static(if taken { b"1" } else { b"0" });
                    if let Err(e) = client.publish(answer_to, answer).await {
                        tracing::debug!(error = %e, "reply confirmation not sent");
                    }
                });
            }
        });
        Ok(this)
    }

    /// Registers a waiting publish: the subject to put in [`REPLY_HEADER`], and the waiter.
    pub(crate) fn register(self: &Arc<Self>) -> (String, Waiter) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(token, tx);
        (
            format!("{}.{token}", self.base),
            Waiter {
                inbox: Arc::clone(self),
                token,
                rx: Some(rx),
            },
        )
    }

    /// Gives `reply` to the publish waiting for `token`, under the lock that its timeout takes
    /// too. Returns what says it was taken, or `None` when nobody waits.
    fn hand_over(&self, token: u64, reply: Bytes) -> Option<oneshot::Receiver<()>> {
        let mut waiting = self.waiting.lock();
        let tx = waiting.remove(&token)?;
        let (taken_tx, taken_rx) = oneshot::channel();
        tx.send((reply, taken_tx)).ok()?;
        Some(taken_rx)
    }
}

/// A publish waiting for its reply. Dropping it gives up (the reply is then not taken).
pub(crate) struct Waiter {
    inbox: Arc<Inbox>,
    token: u64,
    rx: Option<oneshot::Receiver<Handoff>>,
}

impl Waiter {
    /// The reply, if it comes within `wait`.
    pub(crate) async fn wait(mut self, wait: Duration) -> Option<Bytes> {
        let rx = self.rx.as_mut()?;
        let handoff = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(handoff)) => Some(handoff),
            Ok(Err(_)) => None,
            Err(_) => {
                // Decided under the inbox's lock: still registered means never handed over.
                if self.inbox.waiting.lock().remove(&self.token).is_some() {
                    None
                } else {
                    self.rx.as_mut().and_then(|rx| rx.try_recv().ok())
                }
            }
        }?;
        let (reply, taken) = handoff;
        let _ = taken.send(());
        Some(reply)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.inbox.waiting.lock().remove(&self.token);
    }
}
