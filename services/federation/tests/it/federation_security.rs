//! Issue 16 on federation's inbound side: what a hostile or careless peer provider can make
//! this provider accept. The test plays the sending provider `alpha.test` with its real
//! provider key. Test names start with `federation_security_`, so both `cargo test
//! --workspace federation` and `cargo test --workspace security` run them.

use amp_proto::message::limits;
use amp_proto::{SecretKey, Timestamp};
use serde_json::{Value, json};

use crate::common::{Agent, Node, Provider, Resp, sign};

/// A remote agent (only its key matters).
fn remote_agent(address: &str) -> Agent {
    Agent {
        address: address.to_owned(),
        api_key: String::new(),
        key: SecretKey::generate(),
    }
}

/// A federation request body: `envelope` (signed by `from`, then `tweak`ed), raw payload,
/// sender key.
fn body_with(from: &Agent, to: &str, payload: &str, tweak: impl FnOnce(&mut Value)) -> String {
    let id = format!("msg_{}_{:016x}", Timestamp::now().unix_millis(), rand_u64());
    let mut envelope = json!({
        "version": "amp/0.1",
        "id": id,
        "from": from.address,
        "to": to,
        "subject": "hello",
        "priority": "normal",
        "timestamp": Timestamp::now().to_rfc3339(),
        "signature": sign(from, to, "hello", payload, None),
        "in_reply_to": null,
        "thread_id": id,
    });
    tweak(&mut envelope);
    format!(
        r#"{{"envelope":{envelope},"payload":{payload},"sender_public_key":{}}}"#,
        json!(from.key.public().to_pem())
    )
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `POST /v1/federation/deliver` of `body` as `provider`, signed with `key`.
async fn deliver_as(node: &Node, provider: &str, key: &SecretKey, body: &str) -> Resp {
    let ts = Timestamp::now().unix_secs().to_string();
    let sig = federation::signature::sign(key, &ts, body.as_bytes());
    node.deliver_raw(
        &[
            ("X-AMP-Provider", provider.to_owned()),
            ("X-AMP-Timestamp", ts),
            ("X-AMP-Signature", sig),
        ],
        body,
    )
    .await
}

#[track_caller]
fn assert_refused(r: &Resp, status: u16, error: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], error, "{}", r.text);
    assert_eq!(v["accepted"], false, "{}", r.text);
}

/// Beta (`beta.test`) with alpha pinned as a static peer.
async fn beta_with_alpha(pa: &Provider) -> Node {
    let pb = Provider::new("beta.test").await;
    let node = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    std::mem::forget(pb);
    node
}

/// The spec's 512 KiB bound on a whole message holds for messages from peers too.
#[tokio::test]
async fn federation_security_total_message_bound_inbound() {
    let pa = Provider::new("alpha.test").await;
    let b = beta_with_alpha(&pa).await;
    let bob = b.register("team", "bob").await;
    let alice = remote_agent("alice@acme.alpha.test");
    let head = r#"{"type":"notification","message":"short","blob":""}"#;
    let padded = |n: usize| {
        format!(
            r#"{{"type":"notification","message":"short","blob":"{}"}}"#,
            "x".repeat(n - head.len())
        )
    };
    let over = padded(limits::TOTAL_BYTES - 64);
    let body = body_with(&alice, &bob.address, &over, |_| {});
    assert!(body.len() < 532_480, "under the body limit");
    let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
    assert_refused(&r, 413, "invalid_request");
    // A message within the bound is accepted.
    let fits = padded(400_000);
    let body = body_with(&alice, &bob.address, &fits, |_| {});
    let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(b.pending_count(&bob).await, 1);
    b.stop().await;
}
