//! Messages as a client sends them: [`Msg`] holds the signed fields, the raw payload text and
//! the unsigned extras, signs them with [`amp_proto::signing`] exactly as a client does, and
//! renders the `POST /v1/route` body in either form (flat or envelope) with the payload
//! appended as raw text, so its bytes travel unchanged. Also the checks of what comes back:
//! a route answer, a server-made id, a pending page (ids, an item, payload bytes, a
//! signature a recipient can verify).

use amp_proto::signing::{SignedFields, canonical_string, payload_hash, sign_message};
use amp_proto::{PublicKey, SecretKey, Timestamp};
use serde_json::{Value, json};

use crate::agent::Agent;

/// A payload with nothing special about it.
pub const PLAIN: &str = r#"{"type":"notification","message":"Hello"}"#;

/// The client timestamp of an envelope body, which the server must override.
pub const CLIENT_TIMESTAMP: &str = "2021-02-03T04:05:06Z";

/// `{"type":"notification","message":<text>}` with `text` JSON-escaped.
pub fn payload_with(text: &str) -> String {
    format!(
        r#"{{"type":"notification","message":{}}}"#,
        serde_json::to_string(text).expect("string")
    )
}

/// Appends `,"payload":<raw>` to a serialised JSON object.
///
/// # Panics
/// When `obj` is not an object.
pub fn with_payload(obj: &Value, raw_payload: &str) -> String {
    let s = obj.to_string();
    let head = s.strip_suffix('}').expect("object");
    if head.ends_with('{') {
        format!(r#"{head}"payload":{raw_payload}}}"#)
    } else {
        format!(r#"{head},"payload":{raw_payload}}}"#)
    }
}

/// A message to send: the signed fields, the raw payload text and the unsigned extras.
#[derive(Clone, Debug)]
pub struct Msg {
    /// The recipient address.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The priority; unset is `normal` in the signature and absent from a flat body.
    pub priority: Option<String>,
    /// The raw payload JSON text.
    pub payload: String,
    /// The message replied to.
    pub in_reply_to: Option<String>,
    /// The thread.
    pub thread_id: Option<String>,
    /// A client-chosen id.
    pub id: Option<String>,
    /// An expiry (RFC 3339).
    pub expires_at: Option<String>,
    /// An `idempotency_key` (spec-next 04, 08).
    pub idempotency_key: Option<String>,
}

impl Msg {
    /// A message to `to` about `subject` with the [`PLAIN`] payload.
    pub fn new(to: &str, subject: &str) -> Self {
        Self {
            to: to.to_owned(),
            subject: subject.to_owned(),
            priority: None,
            payload: PLAIN.to_owned(),
            in_reply_to: None,
            thread_id: None,
            id: None,
            expires_at: None,
            idempotency_key: None,
        }
    }

    /// An `idempotency_key` (spec-next 04, 08): top level in the flat body, in the envelope
    /// of the envelope body.
    pub fn key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }

    /// The raw payload text.
    pub fn payload(mut self, raw: &str) -> Self {
        self.payload = raw.to_owned();
        self
    }

    /// The priority.
    pub fn priority(mut self, p: &str) -> Self {
        self.priority = Some(p.to_owned());
        self
    }

    /// A reply to `id`.
    pub fn reply_to(mut self, id: &str) -> Self {
        self.in_reply_to = Some(id.to_owned());
        self
    }

    /// In thread `id`.
    pub fn thread(mut self, id: &str) -> Self {
        self.thread_id = Some(id.to_owned());
        self
    }

    /// A client-chosen id.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// An expiry.
    pub fn expires(mut self, at: &str) -> Self {
        self.expires_at = Some(at.to_owned());
        self
    }

    /// The client signature (primary hash form) by `from`.
    ///
    /// # Panics
    /// When the payload is not JSON.
    pub fn sign(&self, from: &Agent) -> String {
        self.sign_with(&from.key, &from.address)
    }

    /// The signature by `signer`'s key with `from` as the signed sender address.
    ///
    /// # Panics
    /// When the payload is not JSON.
    pub fn sign_as(&self, signer: &Agent, from: &str) -> String {
        self.sign_with(&signer.key, from)
    }

    /// The signature by `key` with `from` as the signed sender address.
    ///
    /// # Panics
    /// When the payload is not JSON.
    pub fn sign_with(&self, key: &SecretKey, from: &str) -> String {
        sign_message(
            key,
            &SignedFields {
                from,
                to: &self.to,
                subject: &self.subject,
                priority: self.priority.as_deref().unwrap_or("normal"),
                in_reply_to: self.in_reply_to.as_deref().unwrap_or(""),
            },
            &self.payload,
        )
        .expect("payload is JSON")
    }

    /// The flat body (spec 08, AI Maestro): `from` derived from the key.
    pub fn flat(&self, signature: Option<&str>) -> String {
        self.flat_with(signature, Value::Null)
    }

    /// [`flat`](Self::flat) with the members of `extra` (an object: options, …) added last,
    /// replacing any of the same name.
    pub fn flat_with(&self, signature: Option<&str>, extra: Value) -> String {
        let mut o = json!({ "to": self.to, "subject": self.subject });
        if let Some(p) = &self.priority {
            o["priority"] = json!(p);
        }
        if let Some(r) = &self.in_reply_to {
            o["in_reply_to"] = json!(r);
        }
        if let Some(t) = &self.thread_id {
            o["thread_id"] = json!(t);
        }
        if let Some(i) = &self.id {
            o["id"] = json!(i);
        }
        if let Some(e) = &self.expires_at {
            o["expires_at"] = json!(e);
        }
        if let Some(k) = &self.idempotency_key {
            o["idempotency_key"] = json!(k);
        }
        if let Some(s) = signature {
            o["signature"] = json!(s);
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                o[k] = v;
            }
        }
        with_payload(&o, &self.payload)
    }

    /// The envelope body (plugin): [`CLIENT_TIMESTAMP`], which the server must override.
    pub fn envelope(&self, from: &str, signature: Option<&str>) -> String {
        let mut env = json!({
            "version": "amp/0.1",
            "from": from,
            "to": self.to,
            "subject": self.subject,
            "priority": self.priority.as_deref().unwrap_or("normal"),
            "timestamp": CLIENT_TIMESTAMP,
            "thread_id": self.thread_id,
            "in_reply_to": self.in_reply_to,
            "expires_at": self.expires_at,
        });
        if let Some(i) = &self.id {
            env["id"] = json!(i);
        }
        if let Some(k) = &self.idempotency_key {
            env["idempotency_key"] = json!(k);
        }
        if let Some(s) = signature {
            env["signature"] = json!(s);
        }
        with_payload(&json!({ "envelope": env }), &self.payload)
    }
}

/// A flat route body to `to` signed by `from`, the members of `extra` (options, id, …) added,
/// the payload appended as raw text.
///
/// # Panics
/// When the payload is not JSON.
pub fn signed_body(from: &Agent, to: &str, subject: &str, payload: &str, extra: Value) -> String {
    let m = Msg::new(to, subject).payload(payload);
    m.flat_with(Some(&m.sign(from)), extra)
}

/// The ids of a pending page.
///
/// # Panics
/// When it has no `messages` array or an item no string `id`.
#[track_caller]
pub fn ids_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages array: {page}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The item with `id` in a pending page.
///
/// # Panics
/// When it is not there.
#[track_caller]
pub fn find<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {page}"))
}

/// Asserts a server-generated id, `msg_<millis>_<lowercase hex>`.
///
/// # Panics
/// When it is not one.
#[track_caller]
pub fn assert_server_id(id: &str) {
    let (ms, hex) = id
        .strip_prefix("msg_")
        .and_then(|r| r.split_once('_'))
        .unwrap_or_else(|| panic!("id {id} is not msg_<n>_<hex>"));
    assert!(
        !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()),
        "id {id}"
    );
    assert!(
        !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "id {id}"
    );
}

/// Asserts the answer to a route into a mailbox nobody is connected to: `{id, status:
/// "queued", method: "relay", basis: "mailbox_written", thread_id, queued_at, expires_at}`.
///
/// # Panics
/// When it is not that.
#[track_caller]
pub fn assert_route_answer(v: &Value) {
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["method"], "relay", "{v}");
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    assert!(v["id"].is_string(), "{v}");
    assert!(v["thread_id"].is_string(), "{v}");
    for f in ["queued_at", "expires_at"] {
        let t = v[f].as_str().unwrap_or_else(|| panic!("{f} missing: {v}"));
        assert!(Timestamp::parse(t).is_some(), "{f} not RFC 3339: {v}");
    }
}

/// Asserts the raw `payload` is in the fetched text byte for byte.
///
/// # Panics
/// When it is not.
#[track_caller]
pub fn assert_payload_verbatim(page_text: &str, raw_payload: &str) {
    assert!(
        page_text.contains(&format!(r#""payload":{raw_payload}"#)),
        "payload not preserved byte for byte.\nsent: {raw_payload}\ngot: {page_text}"
    );
}

/// Verifies a fetched item's signature as a recipient does: primary hash form over the
/// envelope fields as emitted, with `sender_public_key`.
///
/// # Panics
/// When it does not verify.
#[track_caller]
pub fn assert_recipient_can_verify(item: &Value, raw_payload: &str) {
    let env = &item["envelope"];
    let pem = item["sender_public_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no sender_public_key: {item}"));
    let key = PublicKey::parse(pem).expect("sender_public_key parses");
    let s = |k: &str| env[k].as_str().unwrap_or("").to_owned();
    let fields = SignedFields {
        from: &s("from"),
        to: &s("to"),
        subject: &s("subject"),
        priority: &s("priority"),
        in_reply_to: &s("in_reply_to"),
    };
    let hash = payload_hash(raw_payload).expect("payload");
    key.verify_b64(canonical_string(&fields, &hash).as_bytes(), &s("signature"))
        .unwrap_or_else(|e| panic!("recipient cannot verify ({e:?}): {item}"));
}
