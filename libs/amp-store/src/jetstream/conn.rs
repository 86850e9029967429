//! The NATS primitives the store is built from: streams and KV-layout buckets, compare-and-set
//! writes, direct gets (single and batched) and stream API calls. Every write returns after
//! JetStream acknowledged it; every failure becomes [`Error::Unavailable`].
//!
//! Buckets use the KV layout (`KV_<bucket>` stream, subjects `$KV.<bucket>.<key>`, one
//! value per key, direct gets), so `nats kv` tools can read them, but are written here with
//! explicit headers: `Nats-Expected-Last-Subject-Sequence` for compare-and-set and `Nats-TTL`
//! for entries the server must drop on its own. Deleting a key purges its subject (no marker
//! left behind); a compare-and-set delete writes a `KV-Operation: DEL` marker with a TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::JetStreamStoreConfig;
use crate::{Error, Result};

/// Dedup window of every stream.
pub(super) const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Most messages asked for in one batched direct get.
pub(super) const MAX_BATCH: usize = 256;

/// A message as read back: its stream sequence, subject, headers and body.
#[derive(Debug)]
pub(super) struct Raw {
    pub(super) seq: u64,
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

impl Raw {
    /// A header's value.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether this is a KV delete or purge marker (or a server-made one), not a value.
    fn is_marker(&self) -> bool {
        matches!(self.header("KV-Operation"), Some("DEL" | "PURGE"))
            || self.header("Nats-Marker-Reason").is_some()
    }
}

/// A page of a batched read: the messages and how many matching ones follow the last.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) messages: Vec<Raw>,
    pub(super) pending: u64,
}

/// The current value of a key and the revision to compare against (0: the subject is empty).
#[derive(Debug)]
pub(super) struct Current {
    pub(super) value: Option<Bytes>,
    pub(super) revision: u64,
}

/// What a compare-and-set write expects.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    /// No condition.
    Any,
    /// The key's last revision is this one (0: the key has no message at all).
    Revision(u64),
}

/// A compare-and-set write lost against another writer.
#[derive(Debug)]
pub(super) struct Conflict;

pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

/// A connection and the names under the configured prefix.
pub(super) struct Conn {
    pub(super) client: async_nats::Client,
    js: jetstream::Context,
    /// Mailbox and receipt writes: plain publishes, or atomic batches when `publish_batch`
    /// is raised.
    batches: amp_nats::BatchPublisher,
    prefix: String,
    op_timeout: Duration,
    /// Replicated streams (`replicas` above 1): reads that must see every write acknowledged
    /// before them go to the stream leader, or read again until the replica that answers a
    /// direct get has caught up with it (see [`Conn::get`], and the mailbox listing). A direct get
    /// may be answered by any replica (`allow_direct`), including a follower that has not
    /// applied a write its leader already acknowledged.
    consistent: bool,
    /// Where batched direct gets are answered, made on the first one.
    replies: tokio::sync::OnceCell<Arc<BatchReplies>>,
}

/// The answers to batched direct gets: one subscription (`<inbox>.*`) for the connection,
/// each get's messages handed to it by the token ending its reply subject. A subscription
/// per get would cost a SUB and an UNSUB on top of each read (and a change to the server's
/// subject index both times); counts, presence and mailbox pages are such reads.
struct BatchReplies {
    /// `_INBOX.<unique>`.
    base: String,
    next: AtomicU64,
    waiting:
        parking_lot::Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<async_nats::Message>>>,
}

/// One get's place in [`BatchReplies`]; leaving it (answered, timed out or cancelled) drops
/// whatever else arrives for it.
struct Waiting {
    replies: Arc<BatchReplies>,
    token: u64,
    rx: tokio::sync::mpsc::UnboundedReceiver<async_nats::Message>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.replies.waiting.lock().remove(&self.token);
    }
}

impl BatchReplies {
    /// Subscribes on a fresh inbox of `client` and starts handing its messages out. The
    /// task ends with the subscription (the connection closed) or with the last reference.
    async fn start(client: &async_nats::Client) -> Result<Arc<Self>> {
        let base = client.new_inbox();
        let mut sub = client
            .subscribe(format!("{base}.*"))
            .await
            .map_err(|e| unavailable("subscribe", e))?;
        let this = Arc::new(Self {
            base,
            next: AtomicU64::new(1),
            waiting: parking_lot::Mutex::new(HashMap::new()),
        });
        let weak: Weak<Self> = Arc::downgrade(&this);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(this) = weak.upgrade() else { return };
                let token = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(tx) = token.and_then(|t| this.waiting.lock().get(&t).cloned()) {
                    // The get may have given up meanwhile: then nobody wants it.
                    let _ = tx.send(msg);
                }
            }
        });
        Ok(this)
    }

    /// A place for one get's answer, and the reply subject that reaches it.
    fn wait(self: &Arc<Self>) -> (String, Waiting) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.waiting.lock().insert(token, tx);
        (
            format!("{}.{token}", self.base),
            Waiting {
                replies: Arc::clone(self),
                token,
                rx,
            },
        )
    }
}

/// How many times a read answered by a lagging replica is made again before it goes ahead
/// anyway (the waits double from 1 ms up to 64 ms: about half a second in all; a follower
/// further behind than that is logged).
pub(super) const CATCH_UP_TRIES: u32 = 12;

impl Conn {
    /// Connects (failing over between `urls`).
    pub(super) async fn connect(config: &JetStreamStoreConfig) -> Result<Self> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.op_timeout))
            .name("amp-store")
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics::gauge!("amp_nats_connected", "client" => "store").set(1.0);
                        tracing::info!("store NATS connected");
                    }
                    async_nats::Event::Disconnected => {
                        metrics::gauge!("amp_nats_connected", "client" => "store").set(0.0);
                        metrics::counter!("amp_nats_disconnects_total", "client" => "store")
                            .increment(1);
                        tracing::warn!("store NATS disconnected");
                    }
                    other => tracing::debug!(event = %other, "store NATS client event"),
                }
            });
        let client = amp_nats::connect(&config.urls, &config.security, options)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        // Connected from here on until a Disconnected event says otherwise.
        metrics::gauge!("amp_nats_connected", "client" => "store").set(1.0);
        let js = jetstream::ContextBuilder::new()
            .timeout(config.op_timeout)
            .build(client.clone());
        Ok(Self {
            batches: amp_nats::BatchPublisher::new(client.clone(), config.publish_batch),
            client,
            js,
            prefix: config.prefix.clone(),
            op_timeout: config.op_timeout,
            consistent: config.replicas > 1,
            replies: tokio::sync::OnceCell::new(),
        })
    }

    /// The JetStream context (for the object store of [`super::JetStreamBlobs`]).
    pub(super) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// A stream or bucket name under the prefix: `AMP_MAILBOX` or `<prefix>_AMP_MAILBOX`.
    pub(super) fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }

    /// A subject under the prefix: `amp.mbox.x` or `<prefix>.amp.mbox.x`.
    pub(super) fn subject(&self, subject: &str) -> String {
        if self.prefix.is_empty() {
            subject.to_owned()
        } else {
            format!("{}.{subject}", self.prefix)
        }
    }

    /// Creates or updates a message stream (limits retention, file storage, direct gets,
    /// per-message TTL) capturing `subjects`.
    pub(super) async fn ensure_stream(
        &self,
        name: &str,
        subjects: &str,
        replicas: usize,
        description: &str,
    ) -> Result<()> {
        let config = stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects: vec![subjects.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DEDUP_WINDOW,
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            allow_message_ttl: true,
            // Atomic batches when `publish_batch` is raised (see `publish_batched`).
            allow_atomic_publish: true,
            max_bytes: -1,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            max_message_size: -1,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .map_err(|e| unavailable(&format!("create or update stream {name}"), e))?;
        Ok(())
    }

    /// Whether stream `name` exists.
    pub(super) async fn stream_exists(&self, name: &str) -> Result<bool> {
        use jetstream::context::GetStreamErrorKind;
        match self.js.get_stream(name).await {
            Ok(_) => Ok(true),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(false)
                }
                _ => Err(unavailable(&format!("stream info of {name}"), e)),
            },
        }
    }

    /// Creates or updates a bucket in the KV layout: `KV_<bucket>`, one value per key, file
    /// storage, per-message TTL allowed.
    pub(super) async fn ensure_bucket(
        &self,
        bucket: &str,
        replicas: usize,
        description: &str,
    ) -> Result<()> {
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_messages_per_subject: 1,
            duplicate_window: DEDUP_WINDOW,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            allow_message_ttl: true,
            max_bytes: -1,
            max_messages: -1,
            max_consumers: -1,
            max_message_size: -1,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .map_err(|e| unavailable(&format!("create or update bucket {bucket}"), e))?;
        Ok(())
    }

    /// Publishes and waits for the stream's ack. `Ok(Err(Conflict))` when an expected last
    /// subject sequence did not hold.
    pub(super) async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<std::result::Result<jetstream::publish::PublishAck, Conflict>> {
        let ack = async {
            self.js
                .publish_with_headers(subject, headers, payload)
                .await?
                .await
        };
        let ack = ack.await;
        amp_nats::space::note(match &ack {
            Ok(_) => None,
            Err(e) => Some(amp_nats::space::is_space_refusal(None, &e.to_string())),
        });
        match ack {
            Ok(ack) => Ok(Ok(ack)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(Err(Conflict))
            }
            // 10164: the same check as reported by clustered streams of recent servers
            // ("wrong last sequence"), which the client does not classify.
            Err(e) if e.to_string().contains("wrong last sequence") => Ok(Err(Conflict)),
            Err(e) => Err(unavailable("JetStream publish", e)),
        }
    }

    /// Publishes to `stream` and waits for the stream's ack; with `publish_batch` above 1, in
    /// one atomic batch with the other writes to that stream under way (one request and one
    /// acknowledgement for all of them; on a single-replica stream each is still its own
    /// fsync).
    /// `Ok(Err(Conflict))` when an expected last subject sequence did not hold.
    pub(super) async fn publish_batched(
        &self,
        stream: &str,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<std::result::Result<amp_nats::Published, Conflict>> {
        match self
            .batches
            .publish(stream, subject, headers, payload)
            .await
        {
            Ok(p) => Ok(Ok(p)),
            Err(amp_nats::PublishError::WrongLastSequence) => Ok(Err(Conflict)),
            Err(e) => Err(unavailable("JetStream publish", e)),
        }
    }

    /// Writes `key` of `bucket`, if the expectation holds; returns the new revision.
    pub(super) async fn kv_put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<std::result::Result<u64, Conflict>> {
        let mut headers = HeaderMap::new();
        if let Expect::Revision(r) = expect {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                r.to_string().as_str(),
            );
        }
        if let Some(ttl) = ttl {
            headers.insert("Nats-TTL", ttl_header(ttl).as_str());
        }
        Ok(self
            .publish(format!("$KV.{bucket}.{key}"), headers, value)
            .await?
            .map(|ack| ack.sequence))
    }

    /// [`kv_put`](Self::kv_put) of JSON.
    pub(super) async fn kv_put_json<T: serde::Serialize>(
        &self,
        bucket: &str,
        key: &str,
        value: &T,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<std::result::Result<u64, Conflict>> {
        self.kv_put(bucket, key, to_json(value)?, expect, ttl).await
    }

    /// Deletes `key` if its revision is still `revision`; `Err(Conflict)` when another
    /// writer (or taker) got there first. The subject is then purged, so nothing is left
    /// behind (a later delete-if on the same revision still fails: the subject is empty).
    pub(super) async fn kv_delete_if(
        &self,
        bucket: &str,
        key: &str,
        revision: u64,
    ) -> Result<std::result::Result<(), Conflict>> {
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            revision.to_string().as_str(),
        );
        let subject = format!("$KV.{bucket}.{key}");
        match self.publish(subject.clone(), headers, Bytes::new()).await? {
            Ok(_) => {
                self.purge(&format!("KV_{bucket}"), &subject, None).await?;
                Ok(Ok(()))
            }
            Err(c) => Ok(Err(c)),
        }
    }

    /// Deletes `key` (its subject purged: nothing is left behind).
    pub(super) async fn kv_delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.purge(
            &format!("KV_{bucket}"),
            &format!("$KV.{bucket}.{key}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// The current value of `key` and its revision.
    pub(super) async fn kv_get(&self, bucket: &str, key: &str) -> Result<Current> {
        let raw = self
            .get(
                &format!("KV_{bucket}"),
                json!({ "last_by_subj": format!("$KV.{bucket}.{key}") }),
            )
            .await?;
        Ok(match raw {
            None => Current {
                value: None,
                revision: 0,
            },
            Some(raw) if raw.is_marker() => Current {
                value: None,
                revision: raw.seq,
            },
            Some(raw) => Current {
                value: Some(raw.payload),
                revision: raw.seq,
            },
        })
    }

    /// The live values of keys `a` and `b` of `bucket` in one batched direct get
    /// (`multi_last`) instead of one read each. Only for streams whose direct gets see every
    /// acknowledged write (not [`replicated`](Self::replicated)): it does not go through
    /// the leader.
    pub(super) async fn kv_get_two(
        &self,
        bucket: &str,
        a: &str,
        b: &str,
    ) -> Result<(Option<Bytes>, Option<Bytes>)> {
        let (sa, sb) = (format!("$KV.{bucket}.{a}"), format!("$KV.{bucket}.{b}"));
        let found = self
            .multi_last(&format!("KV_{bucket}"), &[sa.clone(), sb.clone()])
            .await?;
        let mut out = (None, None);
        for raw in found.into_iter().filter(|r| !r.is_marker()) {
            if raw.subject == sa {
                out.0 = Some(raw.payload);
            } else if raw.subject == sb {
                out.1 = Some(raw.payload);
            }
        }
        Ok(out)
    }

    /// The value of `key` as JSON, with its revision.
    pub(super) async fn kv_get_json<T: for<'a> serde::Deserialize<'a>>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(Option<T>, u64)> {
        let c = self.kv_get(bucket, key).await?;
        let value = match c.value {
            Some(b) => Some(from_json(&b)?),
            None => None,
        };
        Ok((value, c.revision))
    }

    /// Every live `(key, value)` under `prefix.` (or the whole bucket when `prefix` is
    /// empty), in write order. Costs one round trip per [`MAX_BATCH`] keys.
    pub(super) async fn kv_scan(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, Bytes)>> {
        let stream = format!("KV_{bucket}");
        let filter = if prefix.is_empty() {
            format!("$KV.{bucket}.>")
        } else {
            format!("$KV.{bucket}.{prefix}.>")
        };
        let strip = format!("$KV.{bucket}.");
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let batch = self.batch(&stream, &filter, start, MAX_BATCH).await?;
            let Some(last) = batch.messages.last() else {
                break;
            };
            start = last.seq + 1;
            for raw in batch.messages {
                if raw.is_marker() {
                    continue;
                }
                if let Some(key) = raw.subject.strip_prefix(&strip) {
                    out.push((key.to_owned(), raw.payload));
                }
            }
            if batch.pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `n` messages of `stream` on subjects matching `filter` with sequence at or
    /// after `start`, oldest first: one batched direct get (server 2.11+).
    pub(super) async fn batch(
        &self,
        stream: &str,
        filter: &str,
        start: u64,
        n: usize,
    ) -> Result<Batch> {
        let request = json!({ "seq": start, "next_by_subj": filter, "batch": n.max(1) });
        self.batched_direct_get(stream, request).await
    }

    /// One batched direct get: the messages until the end-of-batch status (204) or "none"
    /// (404), and the count of matching messages after the last (from the closing status;
    /// without it, older servers, from the last message).
    async fn batched_direct_get(&self, stream: &str, request: serde_json::Value) -> Result<Batch> {
        let replies = self
            .replies
            .get_or_try_init(|| BatchReplies::start(&self.client))
            .await?;
        let (reply_to, mut waiting) = replies.wait();
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                reply_to,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| unavailable("direct get", e))?;
        let mut out = Batch::default();
        loop {
            let msg = tokio::time::timeout(self.op_timeout, waiting.rx.recv())
                .await
                .map_err(|_| Error::Unavailable(format!("direct get on {stream} timed out")))?
                .ok_or_else(|| Error::Unavailable("direct get: subscription closed".into()))?;
            match msg.status.map(u16::from) {
                None => {
                    let raw = raw_from(msg)?;
                    out.pending = raw
                        .header("Nats-Num-Pending")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    out.messages.push(raw);
                }
                // End of batch (204) or nothing at all (404).
                Some(204) => {
                    if let Some(p) = msg
                        .headers
                        .as_ref()
                        .and_then(|h| header(h, "Nats-Num-Pending"))
                        .and_then(|v| v.parse().ok())
                    {
                        out.pending = p;
                    }
                    break;
                }
                Some(404) => break,
                Some(code) => {
                    return Err(Error::Unavailable(format!(
                        "direct get on {stream}: status {code} {:?}",
                        msg.description
                    )));
                }
            }
        }
        Ok(out)
    }

    /// One message (`{"seq": n}`, `{"last_by_subj": s}`, `{"seq": n, "next_by_subj": s}`)
    /// as of every write acknowledged before the call: from the stream leader on a
    /// replicated store, by a direct get otherwise (the only replica is the leader). `None`
    /// when not found.
    pub(super) async fn get(
        &self,
        stream: &str,
        request: serde_json::Value,
    ) -> Result<Option<Raw>> {
        if self.consistent {
            self.leader_get(stream, &request).await
        } else {
            self.direct_get(stream, request).await
        }
    }

    /// [`get`](Self::get) through the leader (`STREAM.MSG.GET`): answered by the stream's
    /// leader only.
    async fn leader_get(&self, stream: &str, request: &serde_json::Value) -> Result<Option<Raw>> {
        use jetstream::stream::RawMessageErrorKind;
        let what = || format!("leader get on {stream}");
        let handle = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| unavailable(&what(), e))?;
        let mut b = handle.raw_message_builder();
        if let Some(seq) = request.get("seq").and_then(serde_json::Value::as_u64) {
            b = b.sequence(seq);
        }
        if let Some(s) = request
            .get("last_by_subj")
            .and_then(serde_json::Value::as_str)
        {
            b = b.last_by_subject(s);
        }
        if let Some(s) = request
            .get("next_by_subj")
            .and_then(serde_json::Value::as_str)
        {
            b = b.next_by_subject(s);
        }
        match b.send().await {
            Ok(m) => Ok(Some(Raw {
                seq: m.sequence,
                subject: m.subject.to_string(),
                headers: m.headers,
                payload: m.payload,
            })),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(&what(), e)),
        }
    }

    /// Whether the streams are replicated, so that a direct get may be answered by a follower
    /// behind its leader (see [`get`](Self::get)).
    pub(super) fn replicated(&self) -> bool {
        self.consistent
    }

    /// The last message of each of `subjects` that has one (one batched direct get,
    /// `multi_last`), in stream order.
    pub(super) async fn multi_last(&self, stream: &str, subjects: &[String]) -> Result<Vec<Raw>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let request = json!({ "multi_last": subjects, "batch": subjects.len() });
        Ok(self.batched_direct_get(stream, request).await?.messages)
    }

    /// One direct get (`{"seq": n}`, `{"last_by_subj": s}`, …); `None` when not found.
    async fn direct_get(&self, stream: &str, request: serde_json::Value) -> Result<Option<Raw>> {
        let msg = self
            .client
            .request(
                format!("$JS.API.DIRECT.GET.{stream}"),
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| unavailable(&format!("direct get on {stream}"), e))?;
        match msg.status.map(u16::from) {
            None => Ok(Some(raw_from(msg)?)),
            Some(404) => Ok(None),
            Some(code) => Err(Error::Unavailable(format!(
                "direct get on {stream}: status {code} {:?}",
                msg.description
            ))),
        }
    }

    /// Deletes one message of a stream; `false` when it was not there.
    pub(super) async fn delete_message(&self, stream: &str, seq: u64) -> Result<bool> {
        let reply = self
            .api(
                &format!("STREAM.MSG.DELETE.{stream}"),
                json!({ "seq": seq, "no_erase": true }),
            )
            .await?;
        Ok(reply.get("success").and_then(|v| v.as_bool()) == Some(true))
    }

    /// Purges messages of `stream` on subjects matching `filter` (below `below`, when
    /// given); returns how many went.
    pub(super) async fn purge(
        &self,
        stream: &str,
        filter: &str,
        below: Option<u64>,
    ) -> Result<u64> {
        let mut request = json!({ "filter": filter });
        if let Some(seq) = below {
            request["seq"] = json!(seq);
        }
        let reply = self.api(&format!("STREAM.PURGE.{stream}"), request).await?;
        Ok(reply.get("purged").and_then(|v| v.as_u64()).unwrap_or(0))
    }

    /// A JetStream API call; fails on a transport error or an API error other than "not
    /// found" (which the callers treat as done).
    async fn api(&self, what: &str, request: serde_json::Value) -> Result<serde_json::Value> {
        let msg = self
            .client
            .request(format!("$JS.API.{what}"), Bytes::from(request.to_string()))
            .await
            .map_err(|e| unavailable(what, e))?;
        let reply: serde_json::Value = serde_json::from_slice(&msg.payload)
            .map_err(|e| unavailable(&format!("{what}: bad reply"), e))?;
        if let Some(err) = reply.get("error") {
            // 10037: no message found (already deleted); 10043: sequence not found (the
            // same, for a sequence the server no longer tracks, e.g. the stream's last).
            // 10057 with "no message found": a delete of a sequence below the stream's first
            // (the message was the first and is gone already).
            let code = err.get("err_code").and_then(|v| v.as_u64());
            let description = err.get("description").and_then(|v| v.as_str());
            if matches!(code, Some(10037 | 10043))
                || (code == Some(10057) && description == Some("no message found"))
            {
                return Ok(json!({ "success": false }));
            }
            return Err(Error::Unavailable(format!("{what}: {err}")));
        }
        Ok(reply)
    }

    /// Whether JetStream takes a write of `PROBE_BYTES` now: written to `key` of `bucket`
    /// and purged again. A success also clears [`amp_nats::space::out_of_space`].
    pub(super) async fn probe_space(&self, bucket: &str, key: &str) -> bool {
        /// As large as a big message, so that room for the probe is room for real writes.
        const PROBE_BYTES: usize = 64 * 1024;
        let put = self
            .kv_put(
                bucket,
                key,
                Bytes::from(vec![0u8; PROBE_BYTES]),
                Expect::Any,
                None,
            )
            .await;
        let ok = matches!(put, Ok(Ok(_)));
        if ok {
            let _ = self
                .purge(
                    &format!("KV_{bucket}"),
                    &format!("$KV.{bucket}.{key}"),
                    None,
                )
                .await;
        }
        ok
    }

    /// Whether the server answers JetStream requests.
    pub(super) async fn ping(&self) -> bool {
        self.js.query_account().await.is_ok()
    }

    /// Drains the connection.
    pub(super) async fn close(&self) {
        match tokio::time::timeout(Duration::from_secs(5), self.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "store NATS drain failed"),
            Err(_) => tracing::warn!("store NATS drain timed out"),
        }
    }
}

/// A header's value. (Looked up by parsed name: a plain `&str` key only finds headers the
/// client did not recognise as standard.)
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let name: HeaderName = name.parse().ok()?;
    headers.get(name).map(HeaderValue::as_str)
}

fn raw_from(msg: async_nats::Message) -> Result<Raw> {
    let headers = msg.headers.unwrap_or_default();
    let get = |name: &str| header(&headers, name).map(str::to_owned);
    let seq = get("Nats-Sequence")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Corrupt("direct get reply without Nats-Sequence".into()))?;
    let subject = get("Nats-Subject").unwrap_or_default();
    Ok(Raw {
        seq,
        subject,
        headers,
        payload: msg.payload,
    })
}

/// A `Nats-TTL` value: whole seconds, at least 1.
fn ttl_header(ttl: Duration) -> String {
    format!("{}s", ttl.as_secs().max(1))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| Error::Corrupt(e.to_string()))
}

pub(super) fn from_json<T: for<'a> serde::Deserialize<'a>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A key or subject token for any string: itself when it is made of letters, digits, `-`
/// and `_` only, else `=` and its hex bytes (`=` never starts a plain token, so the
/// mapping is one-to-one).
pub(super) fn tok(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        s.to_owned()
    } else {
        let mut out = String::with_capacity(1 + 2 * s.len());
        out.push('=');
        for b in s.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The inverse of [`tok`].
pub(super) fn untok(t: &str) -> Result<String> {
    let Some(hex) = t.strip_prefix('=') else {
        return Ok(t.to_owned());
    };
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Corrupt(format!("bad key token {t}")))
        })
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Hex of a key hash.
pub(super) fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TTL for data that must last until `until` (wall clock), plus a margin so clock skew
/// between processes never drops it early.
pub(super) fn ttl_until(until: crate::Millis) -> Duration {
    let now = super::wall_ms();
    let ms = until.saturating_sub(now).max(0) as u64;
    Duration::from_millis(ms) + Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide() {
        for s in ["agt_1", "a.b", "", "=41", "x y/z", "Ω"] {
            let t = tok(s);
            assert!(!t.is_empty() && !t.contains('.'), "{t}");
            assert_eq!(untok(&t).expect("untok"), s);
        }
        assert_ne!(tok("=41"), tok("A"));
    }
}
