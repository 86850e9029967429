//! Packs: several ingress publishes carried by one JetStream message.
//!
//! On a single-replica file stream with the server's `sync_interval: always`, JetStream
//! writes and fsyncs every stored message on its own, atomic batches included (they save
//! round trips, not flushes), and a work queue's ack is another write. Under load most of
//! the server's CPU goes to that. A pack is one stream message holding every publish that
//! queued up for the stream while the previous pack was being stored: one write, one fsync,
//! one delivery and one ack for all of them, the way a database's group commit shares one
//! log flush. A lone publish goes out at once as a pack of one: no timer, no added latency.
//!
//! Only publishes without a dedup id are packed (JetStream's `Nats-Msg-Id` dedup is per
//! stream message): their consumer must be idempotent, as the router is (the mailbox write
//! is keyed by recipient and message id).
//!
//! On the consumer side a pack becomes one [`Delivery`](crate::Delivery) per member, each
//! settled on its own; the stream message is settled when its last member is (see
//! `consumer::PackAcker`): acked when every member was acked (or dead-lettered on its own),
//! nak'ed with the longest delay asked for when any member was nak'ed. A nak therefore
//! brings the whole pack back, members already acked included: at least once, per member.
//!
//! # Format
//! The stream message has the header [`PACK_HEADER`] (`1`, the format version) and the body
//! `AMPPACK1`, a big-endian `u32` member count, then per member: `u16` length and bytes of
//! its subject (as the caller gave it, unprefixed), `u16` length and bytes of its reply
//! subject (empty: none), `u16` header count and per header a `u16`-prefixed name and a
//! `u32`-prefixed value, and a `u32`-prefixed payload. Decoding checks every length against
//! what is left, so a damaged pack is refused whole (and dead-lettered), never misread.

use std::sync::Arc;

use async_nats::{Client, HeaderMap};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Marks a packed stream message; its value is the format version.
pub(crate) const PACK_HEADER: &str = "Amp-Pack";
/// The one format version.
const VERSION: &str = "1";
const MAGIC: &[u8; 8] = b"AMPPACK1";
/// Room kept under the server's `max_payload` for the pack's own headers.
const HEADROOM: usize = 4 * 1024;

/// One member of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The caller's subject (unprefixed).
    pub(crate) subject: String,
    /// Where the publisher waits for the outcome, if it does.
    pub(crate) reply_to: Option<String>,
    /// The bus headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
}

impl Member {
    /// Bytes this member takes in a pack.
    fn encoded_len(&self) -> usize {
        2 + self.subject.len()
            + 2
            + self.reply_to.as_ref().map_or(0, String::len)
            + 2
            + self
                .headers
                .iter()
                .map(|(n, v)| 2 + n.len() + 4 + v.len())
                .sum::<usize>()
            + 4
            + self.payload.len()
    }
}

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
#[error("damaged pack: {0}")]
pub(crate) struct Damaged(&'static str);

/// The body of a pack of `members`. Every field must fit its length prefix (checked by
/// [`Packer::publish`] before a member is queued).
fn encode(members: &[&Member]) -> Bytes {
    let size = MAGIC.len() + 4 + members.iter().map(|m| m.encoded_len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(MAGIC);
    out.put_u32(u32::try_from(members.len()).unwrap_or(u32::MAX));
    for m in members {
        put16(&mut out, m.subject.as_bytes());
        put16(&mut out, m.reply_to.as_deref().unwrap_or("").as_bytes());
        out.put_u16(u16::try_from(m.headers.len()).unwrap_or(u16::MAX));
        for (name, value) in &m.headers {
            put16(&mut out, name.as_bytes());
            put32(&mut out, value.as_bytes());
        }
        put32(&mut out, &m.payload);
    }
    out.freeze()
}

fn put16(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(b);
}

fn put32(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.put_slice(b);
}

/// The members of a pack body.
///
/// Fails on anything but a well-formed pack, consumed exactly.
pub(crate) fn decode(body: &Bytes) -> Result<Vec<Member>, Damaged> {
    let mut r = Reader { body, at: 0 };
    if r.take(MAGIC.len())? != MAGIC.as_slice() {
        return Err(Damaged("not a pack"));
    }
    let count = r.u32()? as usize;
    // Every member takes at least 12 bytes: a count beyond that is a lie.
    if count == 0 || count > body.len() / 12 {
        return Err(Damaged("member count"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let subject = r.string16()?;
        let reply = r.string16()?;
        let n = usize::from(r.u16()?);
        let mut headers = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = r.string16()?;
            let len = r.u32()? as usize;
            let value = std::str::from_utf8(r.take(len)?)
                .map_err(|_| Damaged("header value"))?
                .to_owned();
            headers.push((name, value));
        }
        let len = r.u32()? as usize;
        let start = r.at;
        r.take(len)?;
        members.push(Member {
            subject,
            reply_to: (!reply.is_empty()).then_some(reply),
            headers,
            payload: body.slice(start..start + len),
        });
    }
    if r.at != body.len() {
        return Err(Damaged("trailing bytes"));
    }
    Ok(members)
}

struct Reader<'a> {
    body: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.body.len())
            .ok_or(Damaged("truncated"))?;
        let out = &self.body[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, Damaged> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Damaged> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string16(&mut self) -> Result<String, Damaged> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?)
            .map(str::to_owned)
            .map_err(|_| Damaged("not UTF-8"))
    }
}

/// One publish waiting for its pack.
struct Queued {
    /// The broker subject the pack goes to (the first member's).
    nats_subject: String,
    member: Member,
    size: usize,
    done: oneshot::Sender<Result<amp_nats::Published, amp_nats::PublishError>>,
}

/// Packs concurrent publishes, one queue (and one pack in flight) per stream. Cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct Packer {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    max_members: usize,
    queues: amp_nats::StreamQueues<Queued>,
}

impl Packer {
    /// Packs at most `max_members` publishes together (at least 1).
    pub(crate) fn new(client: Client, max_members: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                max_members: max_members.max(1),
                queues: amp_nats::StreamQueues::default(),
            }),
        }
    }

    /// The most bytes one pack may hold: the server's message limit, less headroom.
    fn max_bytes(&self) -> usize {
        let max_payload = self.inner.client.server_info().max_payload;
        max_payload.saturating_sub(HEADROOM).max(64 * 1024)
    }

    /// Stores `member` in `stream` (whose subject `nats_subject` is), in the next pack, and
    /// waits for the stream's acknowledgement of that pack.
    ///
    /// Fails as a plain publish of the pack would, or when the member cannot be packed (a
    /// field too long for its length prefix, or larger than a message may be).
    pub(crate) async fn publish(
        &self,
        stream: &str,
        nats_subject: String,
        member: Member,
    ) -> Result<amp_nats::Published, amp_nats::PublishError> {
        let too_long = member.subject.len() > usize::from(u16::MAX)
            || member
                .reply_to
                .as_ref()
                .is_some_and(|r| r.len() > usize::from(u16::MAX))
            || member.headers.len() > usize::from(u16::MAX)
            || member
                .headers
                .iter()
                .any(|(n, _)| n.len() > usize::from(u16::MAX));
        let size = member.encoded_len();
        if too_long || size + MAGIC.len() + 4 > self.max_bytes() {
            return Err(amp_nats::PublishError::Other(format!(
                "message of {size} bytes cannot be carried by the stream"
            )));
        }
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            nats_subject,
            member,
            size,
            done,
        };
        self.queue(stream)
            .send(queued)
            .map_err(|_| amp_nats::PublishError::Other("packer stopped".into()))?;
        answer
            .await
            .map_err(|_| amp_nats::PublishError::Other("packer stopped".into()))?
    }

    fn queue(&self, stream: &str) -> mpsc::UnboundedSender<Queued> {
        let inner = &self.inner;
        let max_bytes = self.max_bytes();
        inner.queues.sender(stream, |rx| {
            pack_loop(inner.client.clone(), inner.max_members, max_bytes, rx)
        })
    }
}

/// Takes what queued up for one stream and stores it as one pack, one pack at a time.
async fn pack_loop(
    client: Client,
    max_members: usize,
    max_bytes: usize,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let slot = Arc::new(Semaphore::new(1));
    // A publish taken from the queue that did not fit the previous pack.
    let mut carried: Option<Queued> = None;
    loop {
        // The slot first: while a pack is being stored, publishes queue up for the next.
        let Ok(permit) = Arc::clone(&slot).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = MAGIC.len() + 4 + first.size;
        let mut pack = vec![first];
        while pack.len() < max_members {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.size > max_bytes {
                carried = Some(next);
                break;
            }
            bytes += next.size;
            pack.push(next);
        }
        let client = client.clone();
        tokio::spawn(async move {
            store(&client, pack).await;
            drop(permit);
        });
    }
}

/// Publishes one pack and answers each of its members with the result.
async fn store(client: &Client, pack: Vec<Queued>) {
    let subject = pack
        .first()
        .map(|q| q.nats_subject.clone())
        .unwrap_or_default();
    let body = encode(&pack.iter().map(|q| &q.member).collect::<Vec<_>>());
    let mut headers = HeaderMap::new();
    headers.insert(PACK_HEADER, VERSION);
    metrics::histogram!("amp_bus_pack_members").record(pack.len() as f64);
    let result = amp_nats::publish_one(client, subject, headers, body).await;
    for q in pack {
        let _ = q.done.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize) -> Member {
        Member {
            subject: format!("amp.ingress.acme.agent{i}"),
            reply_to: i.is_multiple_of(2).then(|| format!("amp.reply.x.{i}")),
            headers: vec![
                ("traceparent".into(), format!("00-{i:032x}-{i:016x}-01")),
                ("b".into(), String::new()),
            ],
            payload: Bytes::from(format!("{{\"n\":{i}}}")),
        }
    }

    #[test]
    fn a_pack_round_trips_every_member_in_order() {
        let members: Vec<Member> = (0..5).map(member).collect();
        let body = encode(&members.iter().collect::<Vec<_>>());
        let expected = MAGIC.len() + 4 + members.iter().map(Member::encoded_len).sum::<usize>();
        assert_eq!(body.len(), expected);
        assert_eq!(decode(&body).expect("decodes"), members);
    }

    #[test]
    fn damaged_packs_are_refused_never_misread() {
        let members: Vec<Member> = (0..3).map(member).collect();
        let body = encode(&members.iter().collect::<Vec<_>>());
        // Every truncation, and a byte more.
        for cut in 0..body.len() {
            assert!(decode(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode(&Bytes::from(longer)).is_err());
        // A member count far beyond the body.
        let mut lying = body.to_vec();
        lying[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&Bytes::from(lying)).is_err());
        assert!(decode(&Bytes::from_static(b"NOTAPACK\0\0\0\x01")).is_err());
    }
}
