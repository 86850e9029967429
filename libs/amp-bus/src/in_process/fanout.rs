//! Subject subscriptions for `notify`: best-effort, bounded per subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::subjects::{has_wildcards, matches};
use crate::{BusMessage, Subscription};

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct FanoutState {
    next_id: u64,
    /// Literal patterns, looked up by subject: per-agent subjects are the common case.
    exact: HashMap<String, Vec<Subscriber>>,
    /// Patterns with wildcards, matched one by one.
    wildcard: Vec<(String, Subscriber)>,
}

/// Every live subscription of one bus.
pub(super) struct Fanout {
    buffer: usize,
    closed: CancellationToken,
    state: Mutex<FanoutState>,
}

impl Fanout {
    pub(super) fn new(buffer: usize, closed: CancellationToken) -> Self {
        Self {
            buffer,
            closed,
            state: Mutex::new(FanoutState::default()),
        }
    }

    pub(super) fn subscriptions(&self) -> usize {
        let state = self.state.lock();
        state.exact.values().map(Vec::len).sum::<usize>() + state.wildcard.len()
    }

    pub(super) fn subscribe(self: &Arc<Self>, pattern: &str) -> InProcessSubscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        let subscriber = Subscriber { id, tx };
        if has_wildcards(pattern) {
            state.wildcard.push((pattern.to_owned(), subscriber));
        } else {
            state
                .exact
                .entry(pattern.to_owned())
                .or_default()
                .push(subscriber);
        }
        InProcessSubscription {
            fanout: Arc::clone(self),
            pattern: pattern.to_owned(),
            id,
            rx,
        }
    }

    pub(super) fn notify(&self, message: BusMessage) {
        let subject = message.subject.as_str();
        let state = self.state.lock();
        let exact = state.exact.get(subject).into_iter().flatten();
        let wildcard = state
            .wildcard
            .iter()
            .filter(|(pattern, _)| matches(pattern, subject))
            .map(|(_, subscriber)| subscriber);
        for subscriber in exact.chain(wildcard) {
            // A hint is allowed to be lost; a slow subscriber must not stall the notifier.
            if let Err(mpsc::error::TrySendError::Full(_)) = subscriber.tx.try_send(message.clone())
            {
                tracing::debug!(subject, "subscriber buffer full, notify hint dropped");
                metrics::counter!("amp_bus_notify_dropped_total").increment(1);
            }
        }
    }

    fn unsubscribe(&self, pattern: &str, id: u64) {
        let mut state = self.state.lock();
        if has_wildcards(pattern) {
            state.wildcard.retain(|(_, subscriber)| subscriber.id != id);
        } else if let Some(subscribers) = state.exact.get_mut(pattern) {
            subscribers.retain(|subscriber| subscriber.id != id);
            if subscribers.is_empty() {
                state.exact.remove(pattern);
            }
        }
    }

    pub(super) fn close(&self) {
        let mut state = self.state.lock();
        state.exact.clear();
        state.wildcard.clear();
    }
}

/// A subscription on the in-process bus; unsubscribes on drop.
pub(super) struct InProcessSubscription {
    fanout: Arc<Fanout>,
    pattern: String,
    id: u64,
    rx: mpsc::Receiver<BusMessage>,
}

#[async_trait::async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<BusMessage> {
        tokio::select! {
            biased;
            () = self.fanout.closed.cancelled() => None,
            message = self.rx.recv() => message,
        }
    }
}

impl Drop for InProcessSubscription {
    fn drop(&mut self) {
        self.fanout.unsubscribe(&self.pattern, self.id);
    }
}
