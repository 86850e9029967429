//! Removing what every consumer of an ingress stream has settled.
//!
//! The ingress streams keep messages by limits, not as work queues: on a work queue every
//! ack deletes its message, and JetStream writes (and, with `sync_interval: always`, fsyncs)
//! a tombstone for each, one more disk flush per pack on the hottest path of the cluster.
//! Instead each bound consumer runs [`purge_settled`]: every [`PURGE_EVERY`] it reads the
//! ack floor of every consumer of its stream and purges the stream below the lowest one, one
//! request (one flush) for everything settled in the interval.
//!
//! Nothing unsettled is ever removed: a message at or below a consumer's ack floor was acked
//! or terminated (dead-lettered) by that consumer, and the lowest floor of all consumers is
//! used; a consumer with a filter subject, which skips what it does not match, stops the
//! purge for the stream (logged once), as does a stream with no consumer. A stream created
//! as a work queue by an earlier version keeps its retention (JetStream cannot change it in
//! place) and needs no purge: the task sees its retention and ends.

use std::sync::Weak;
use std::time::Duration;

use async_nats::jetstream::stream::RetentionPolicy;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// How often a consumer purges what its stream's consumers settled.
pub(crate) const PURGE_EVERY: Duration = Duration::from_secs(1);

/// What one pass found to do.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Messages below the lowest ack floor were purged: this many.
    Below(u64),
    /// Nothing settled since the last pass, or nothing safe to remove.
    Nothing,
    /// The stream is a work queue (acks delete): nothing to purge, ever.
    WorkQueue,
}

/// The first sequence to keep: one past the lowest ack floor, when above the stream's first
/// sequence; `floors` are the consumers' (`None`: a consumer that must not be purged past).
fn keep_from(first_seq: u64, messages: u64, floors: &[Option<u64>]) -> Option<u64> {
    if messages == 0 || floors.is_empty() || floors.iter().any(Option::is_none) {
        return None;
    }
    let lowest = floors.iter().flatten().copied().min()?;
    let keep = lowest.checked_add(1)?;
    (keep > first_seq).then_some(keep)
}

/// Purges `stream` below its consumers' lowest ack floor every [`PURGE_EVERY`], until
/// `stop` is cancelled or the bus closes. Failures are logged at debug and retried.
pub(crate) async fn purge_settled(shared: Weak<Shared>, stream: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut filtered_told = false;
    loop {
        let closed = match shared.upgrade() {
            Some(s) => s.closed.clone(),
            None => return,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = closed.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match pass(&shared, &stream, &mut filtered_told).await {
            Ok(Pass::WorkQueue) => return,
            Ok(Pass::Nothing) => {}
            Ok(Pass::Below(purged)) => {
                metrics::counter!("amp_bus_settled_purged_total", "stream" => stream.clone())
                    .increment(purged);
            }
            Err(e) => {
                tracing::debug!(stream = %stream, error = %e, "settled messages not purged; retried")
            }
        }
    }
}

/// One look at `stream`, and the purge it calls for (`Pass::Below` then holds how many
/// messages went).
async fn pass(shared: &Shared, stream: &str, filtered_told: &mut bool) -> Result<Pass, String> {
    // `get_stream` answers with the stream's info (state included): one request.
    let handle = shared
        .js
        .get_stream(stream)
        .await
        .map_err(|e| e.to_string())?;
    let info = handle.cached_info();
    if info.config.retention != RetentionPolicy::Limits {
        return Ok(Pass::WorkQueue);
    }
    let (first_seq, messages) = (info.state.first_sequence, info.state.messages);
    if messages == 0 {
        return Ok(Pass::Nothing);
    }
    let mut floors = Vec::new();
    let mut consumers = handle.consumers();
    while let Some(c) = consumers.try_next().await.map_err(|e| e.to_string())? {
        let unfiltered = c.config.filter_subject.is_empty() && c.config.filter_subjects.is_empty();
        if !unfiltered && !*filtered_told {
            *filtered_told = true;
            tracing::warn!(stream = %stream, consumer = %c.name, "a consumer with a filter subject: settled messages are not purged from this stream");
        }
        floors.push(unfiltered.then_some(c.ack_floor.stream_sequence));
    }
    let Some(keep) = keep_from(first_seq, messages, &floors) else {
        return Ok(Pass::Nothing);
    };
    let done = handle
        .purge()
        .sequence(keep)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Pass::Below(done.purged))
}

#[cfg(test)]
mod tests {
    use super::keep_from;

    #[test]
    fn purges_below_the_lowest_floor_only() {
        // Two consumers: the slower one decides.
        assert_eq!(keep_from(1, 10, &[Some(8), Some(5)]), Some(6));
        // Nothing settled past the first message.
        assert_eq!(keep_from(6, 5, &[Some(5), Some(9)]), None);
        // A consumer that has settled nothing yet.
        assert_eq!(keep_from(1, 10, &[Some(0)]), None);
        // No consumer, an empty stream, a filtered consumer: nothing.
        assert_eq!(keep_from(1, 10, &[]), None);
        assert_eq!(keep_from(1, 0, &[Some(9)]), None);
        assert_eq!(keep_from(1, 10, &[Some(9), None]), None);
        // Everything settled.
        assert_eq!(keep_from(3, 8, &[Some(10)]), Some(11));
    }
}
