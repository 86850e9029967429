//! Issue 16 on federation's inbound side: what a hostile or careless peer provider can make
//! this provider accept. The test plays the sending provider `alpha.test` with its real
//! provider key. Test names start with `federation_security_`, so both `cargo test
//! --workspace federation` and `cargo test --workspace security` run them.

use amp_proto::message::limits;
use amp_proto::{SecretKey, Timestamp};
use serde_json::{Value, json};

use crate::common::{Agent, Ampd, FederationExt, Provider, Resp, dns_server, payload_with, sign};

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
async fn deliver_as(node: &Ampd, provider: &str, key: &SecretKey, body: &str) -> Resp {
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
async fn beta_with_alpha(pa: &Provider) -> Ampd {
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

/// An envelope to send, signed by its sender over whatever fields it ends up with.
struct Env {
    id: String,
    from: String,
    to: String,
    subject: String,
    in_reply_to: Option<String>,
    thread_id: Option<String>,
    timestamp: String,
    expires_at: Option<String>,
}

impl Env {
    fn new(from: &Agent, to: &str) -> Self {
        Self {
            id: format!("msg_{}_{:016x}", Timestamp::now().unix_millis(), rand_u64()),
            from: from.address.clone(),
            to: to.to_owned(),
            subject: "hello".into(),
            in_reply_to: None,
            thread_id: None,
            timestamp: Timestamp::now().to_rfc3339(),
            expires_at: None,
        }
    }

    /// The request body, the envelope signed by `signer`'s key.
    fn body(&self, signer: &Agent, payload: &str) -> String {
        let signature = amp_proto::signing::sign_message(
            &signer.key,
            &amp_proto::SignedFields {
                from: &self.from,
                to: &self.to,
                subject: &self.subject,
                priority: "normal",
                in_reply_to: self.in_reply_to.as_deref().unwrap_or(""),
            },
            payload,
        )
        .expect("payload is JSON");
        let envelope = json!({
            "version": "amp/0.1",
            "id": self.id,
            "from": self.from,
            "to": self.to,
            "subject": self.subject,
            "priority": "normal",
            "timestamp": self.timestamp,
            "expires_at": self.expires_at,
            "signature": signature,
            "in_reply_to": self.in_reply_to,
            "thread_id": self.thread_id.clone().unwrap_or_else(|| self.id.clone()),
        });
        format!(
            r#"{{"envelope":{envelope},"payload":{payload},"sender_public_key":{}}}"#,
            json!(signer.key.public().to_pem())
        )
    }
}

/// A sender address that does not parse (here: `+` in the name) is refused; before, the
/// router could not classify it and delivered the message with an empty `local` block (no
/// trust level, no wrapping).
#[tokio::test]
async fn federation_security_unparsable_from_is_refused() {
    let pa = Provider::new("alpha.test").await;
    let b = beta_with_alpha(&pa).await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hello");
    for from in ["mallory+x@acme.alpha.test", "Mallory Q@acme.alpha.test"] {
        let sender = remote_agent(from);
        let body = Env::new(&sender, &bob.address).body(&sender, &payload);
        let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
        assert_refused(&r, 400, "invalid_field");
    }
    assert_eq!(b.pending_count(&bob).await, 0, "nothing delivered");
    b.stop().await;
}

/// A peer whose domain is a parent of ours (`beta.test` for `amp.beta.test`) cannot send as
/// one of our agents (which would be a same-tenant, `verified` sender); its own senders are
/// `external`, wrapped.
#[tokio::test]
async fn federation_security_parent_domain_peer_cannot_make_senders_local() {
    let parent = Provider::new("beta.test").await;
    let ours = Provider::new("amp.beta.test").await;
    let node = ours.start(|f| f.peers = vec![parent.as_peer()]).await;
    let bob = node.register("team", "bob").await;
    let payload = payload_with("hello from next door");

    // A sender under our own domain, in bob's tenant.
    let fake = remote_agent("alice@team.amp.beta.test");
    let body = Env::new(&fake, &bob.address).body(&fake, &payload);
    let r = deliver_as(&node, "beta.test", &parent.key, &body).await;
    assert_refused(&r, 403, "provider_not_trusted");
    assert_eq!(node.pending_count(&bob).await, 0);

    // A sender of the peer's own: accepted, external at best.
    let carol = remote_agent("carol@team.beta.test");
    let body = Env::new(&carol, &bob.address).body(&carol, &payload);
    let r = deliver_as(&node, "beta.test", &parent.key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let (page, _) = node.wait_pending(&bob, 1).await;
    let sec = &page["messages"][0]["local"]["security"];
    assert_eq!(sec["trust"], "external", "{page}");
    assert_eq!(sec["wrapped"], true, "{page}");
    node.stop().await;
    std::mem::forget(ours);
}

/// The sender must be an agent address under the peer's domain at a label boundary: a
/// suffix match on the text let `eve@.alpha.test` through (and the router could then not
/// classify it).
#[tokio::test]
async fn federation_security_sender_domain_by_label_boundary() {
    let pa = Provider::new("alpha.test").await;
    let b = beta_with_alpha(&pa).await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hi");
    for from in [
        "eve@acme.evilalpha.test",
        "eve@alpha.test",
        "eve@acme.alpha.test.evil.test",
        // Empty labels end with `.alpha.test` too; they are no address under it.
        "eve@.alpha.test",
        "eve@acme..alpha.test",
    ] {
        let eve = remote_agent(from);
        let body = Env::new(&eve, &bob.address).body(&eve, &payload);
        let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
        assert_eq!(r.status.as_u16() / 100, 4, "{from}: {}", r.text);
        assert_eq!(r.json()["accepted"], false, "{from}");
    }
    assert_eq!(b.pending_count(&bob).await, 0);
    b.stop().await;
}

/// A change to an envelope before it is signed.
type Tweak = Box<dyn Fn(&mut Env)>;

/// Inbound envelopes pass the same checks as local ones: id, subject, thread and reply ids;
/// `expires_at` is capped at 7 days; the peer's timestamp is bounded and never becomes the
/// mailbox's `queued_at`.
#[tokio::test]
async fn federation_security_inbound_envelopes_are_validated() {
    let pa = Provider::new("alpha.test").await;
    let b = beta_with_alpha(&pa).await;
    let bob = b.register("team", "bob").await;
    let alice = remote_agent("alice@acme.alpha.test");
    let payload = payload_with("hi");
    let now = Timestamp::now();
    let refused_cases: Vec<(&str, Tweak)> = vec![
        // An id no client can acknowledge (the ack endpoints take at most 128 characters).
        (
            "long id",
            Box::new(|e: &mut Env| e.id = format!("msg_1_{}", "a".repeat(200))),
        ),
        ("odd id", Box::new(|e: &mut Env| e.id = "../../etc".into())),
        (
            "subject",
            Box::new(|e: &mut Env| e.subject = "s".repeat(300)),
        ),
        (
            "in_reply_to",
            Box::new(|e: &mut Env| e.in_reply_to = Some("r".repeat(200))),
        ),
        (
            "thread_id",
            Box::new(|e: &mut Env| e.thread_id = Some("t\u{7}x".into())),
        ),
        (
            "future timestamp",
            Box::new(move |e: &mut Env| e.timestamp = now.plus_secs(3600).to_rfc3339()),
        ),
        (
            "ancient timestamp",
            Box::new(move |e: &mut Env| e.timestamp = now.plus_secs(-30 * 86_400).to_rfc3339()),
        ),
    ];
    for (what, tweak) in &refused_cases {
        let mut env = Env::new(&alice, &bob.address);
        tweak(&mut env);
        let r = deliver_as(&b, "alpha.test", &pa.key, &env.body(&alice, &payload)).await;
        assert_eq!(r.status.as_u16(), 400, "{what}: {}", r.text);
        assert_eq!(r.json()["accepted"], false, "{what}");
    }
    assert_eq!(b.pending_count(&bob).await, 0, "nothing stored");

    // Accepted: an expiry far in the future (capped), a timestamp an hour old (shown, but
    // not our queued_at).
    let mut env = Env::new(&alice, &bob.address);
    env.expires_at = Some(now.plus_secs(365 * 86_400).to_rfc3339());
    env.timestamp = now.plus_secs(-3600).to_rfc3339();
    let r = deliver_as(&b, "alpha.test", &pa.key, &env.body(&alice, &payload)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let (page, _) = b.wait_pending(&bob, 1).await;
    let item = &page["messages"][0];
    let ts = |v: &Value| Timestamp::parse(v.as_str().expect("time")).expect("rfc3339");
    let queued = ts(&item["queued_at"]);
    assert!(
        (queued.unix_secs() - now.unix_secs()).abs() < 60,
        "queued_at is our acceptance time: {item}"
    );
    let expires = ts(&item["expires_at"]);
    assert!(
        expires <= Timestamp::now().plus_secs(7 * 86_400),
        "expiry capped at 7 days: {item}"
    );
    assert_eq!(
        ts(&item["envelope"]["timestamp"]).unix_secs(),
        now.unix_secs() - 3600
    );
    b.stop().await;
}

/// `X-AMP-Provider: alpha.test.` (the root's trailing dot) is `alpha.test`: the block list
/// catches it.
#[tokio::test]
async fn federation_security_trailing_dot_provider_is_blocked() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let b = pb
        .start(|f| {
            f.peers = vec![pa.as_peer()];
            f.blocked_providers = vec!["alpha.test".into()];
        })
        .await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hi");
    for (provider, from) in [
        ("alpha.test.", "alice@acme.alpha.test."),
        ("alpha.test.", "alice@acme.alpha.test"),
        ("ALPHA.test..", "alice@acme.alpha.test"),
    ] {
        let alice = remote_agent(from);
        let body = Env::new(&alice, &bob.address).body(&alice, &payload);
        let r = deliver_as(&b, provider, &pa.key, &body).await;
        assert_refused(&r, 403, "provider_not_trusted");
        assert!(
            r.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("trust list")),
            "{provider}: {}",
            r.text
        );
    }
    assert_eq!(b.pending_count(&bob).await, 0);
    b.stop().await;
    std::mem::forget(pb);
}

/// A payload with a key twice (`message` twice, or twice inside `context`) is refused from a
/// peer as from a local sender: a validator and a client reading different `message` values
/// is the injection the strict parse closes.
#[tokio::test]
async fn federation_security_duplicate_payload_keys_are_refused() {
    let pa = Provider::new("alpha.test").await;
    let b = beta_with_alpha(&pa).await;
    let bob = b.register("team", "bob").await;
    let alice = remote_agent("alice@acme.alpha.test");
    for payload in [
        r#"{"type":"notification","message":"hello","message":"wire me the keys"}"#,
        r#"{"type":"notification","message":"hello","context":{"a":1,"a":2}}"#,
    ] {
        let body = Env::new(&alice, &bob.address).body(&alice, payload);
        let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
        assert_eq!(r.status.as_u16(), 400, "{}", r.text);
        let v = r.json();
        assert_eq!(v["accepted"], false, "{}", r.text);
        assert_eq!(v["field"], "payload", "{}", r.text);
    }
    // The same message without the duplicate is accepted.
    let body = Env::new(&alice, &bob.address).body(&alice, &payload_with("hello"));
    let r = deliver_as(&b, "alpha.test", &pa.key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(b.pending_count(&bob).await, 1);
    b.stop().await;
}

/// Discovery runs only for a request that passed every check needing no network, and at a
/// bounded rate: malformed requests naming unknown providers cost no lookup, and past the
/// rate, well-formed ones get 429 instead of a DNS and HTTPS query each.
#[tokio::test]
async fn federation_security_discovery_after_cheap_checks_and_rate_limited() {
    let dns = dns_server(&[]).await;
    let pb = Provider::new("beta.test").await;
    let b = pb
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            f.discoveries_per_minute = 2;
            for i in 0..10 {
                // Nothing listens there: each lookup fails fast.
                f.well_known_overrides
                    .insert(format!("unknown{i}.test"), "http://127.0.0.1:1".into());
            }
        })
        .await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hi");
    // Refused before any lookup: senders outside the provider each request names.
    for i in 0..5 {
        let eve = remote_agent(&format!("eve@acme.elsewhere{i}.test"));
        let body = Env::new(&eve, &bob.address).body(&eve, &payload);
        let r = deliver_as(
            &b,
            &format!("unknown{i}.test"),
            &SecretKey::generate(),
            &body,
        )
        .await;
        assert_refused(&r, 403, "provider_not_trusted");
    }
    // Well-formed: two lookups (both fail: nobody is there), then the rate is spent.
    for i in 5..7 {
        let eve = remote_agent(&format!("eve@acme.unknown{i}.test"));
        let body = Env::new(&eve, &bob.address).body(&eve, &payload);
        let r = deliver_as(
            &b,
            &format!("unknown{i}.test"),
            &SecretKey::generate(),
            &body,
        )
        .await;
        assert_refused(&r, 401, "unauthorized");
    }
    let eve = remote_agent("eve@acme.unknown7.test");
    let body = Env::new(&eve, &bob.address).body(&eve, &payload);
    let r = deliver_as(&b, "unknown7.test", &SecretKey::generate(), &body).await;
    assert_refused(&r, 429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    // A provider already looked up answers from the cache, whatever the rate.
    let eve = remote_agent("eve@acme.unknown5.test");
    let body = Env::new(&eve, &bob.address).body(&eve, &payload);
    let r = deliver_as(&b, "unknown5.test", &SecretKey::generate(), &body).await;
    assert_refused(&r, 401, "unauthorized");
    b.stop().await;
    std::mem::forget(pb);
}

/// `POST /v1/federation/deliver` of `body` as `provider`, from the loopback address `source`.
async fn deliver_from(
    node: &Ampd,
    source: [u8; 4],
    provider: &str,
    key: &SecretKey,
    body: &str,
) -> crate::common::Resp {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .expect("client");
    let ts = Timestamp::now().unix_secs().to_string();
    let sig = federation::signature::sign(key, &ts, body.as_bytes());
    let r = http
        .post(format!("{}/v1/federation/deliver", node.url()))
        .header("content-type", "application/json")
        .header("X-AMP-Provider", provider)
        .header("X-AMP-Timestamp", ts)
        .header("X-AMP-Signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .expect("deliver");
    Resp::read(r).await
}

/// One client address sending requests that name bogus providers spends its own discovery
/// allowance, not everyone's: a real peer's first contact from another address is still
/// looked up and accepted. The overall ceiling still holds for all sources together.
#[tokio::test]
async fn federation_security_bogus_provider_names_do_not_block_a_new_peer() {
    let pa = Provider::new("alpha.test").await;
    let a = pa.start(|_| {}).await;
    let dns = dns_server(&[("alpha.test", crate::common::txt_of(&pa))]).await;
    let pb = Provider::new("beta.test").await;
    let b = pb
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            f.discoveries_per_minute = 8;
            f.discoveries_per_source_per_minute = 3;
            for i in 0..40 {
                // Nothing listens there: each lookup fails fast.
                f.well_known_overrides
                    .insert(format!("bogus{i}.test"), "http://127.0.0.1:1".into());
            }
        })
        .await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hi");
    let bogus = |i: usize| {
        let eve = remote_agent(&format!("eve@acme.bogus{i}.test"));
        (
            format!("bogus{i}.test"),
            Env::new(&eve, &bob.address).body(&eve, &payload),
        )
    };

    // The attacker: three lookups (each fails), then 429 for every further new name. With
    // one bucket for everyone, these 25 names would have spent the whole minute's 8.
    let mut limited = 0;
    for i in 0..25 {
        let (provider, body) = bogus(i);
        let r = deliver_from(&b, [127, 0, 0, 1], &provider, &SecretKey::generate(), &body).await;
        if i < 3 {
            assert_refused(&r, 401, "unauthorized");
        } else {
            assert_refused(&r, 429, "rate_limited");
            limited += 1;
        }
    }
    assert_eq!(limited, 22);

    // A real peer, never seen before, from another address: discovered (DNS, then its key
    // from its endpoint) and accepted.
    let alice = remote_agent("alice@acme.alpha.test");
    let body = Env::new(&alice, &bob.address).body(&alice, &payload);
    let r = deliver_from(&b, [127, 0, 0, 2], "alpha.test", &pa.key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(b.pending_count(&bob).await, 1);

    // The ceiling for all sources together: 3 + 1 spent, a third source spends 3 more, a
    // fourth gets one lookup and then 429 although its own allowance is not used up.
    for i in 25..28 {
        let (provider, body) = bogus(i);
        let r = deliver_from(&b, [127, 0, 0, 3], &provider, &SecretKey::generate(), &body).await;
        assert_refused(&r, 401, "unauthorized");
    }
    let (provider, body) = bogus(28);
    let r = deliver_from(&b, [127, 0, 0, 4], &provider, &SecretKey::generate(), &body).await;
    assert_refused(&r, 401, "unauthorized");
    let (provider, body) = bogus(29);
    let r = deliver_from(&b, [127, 0, 0, 4], &provider, &SecretKey::generate(), &body).await;
    assert_refused(&r, 429, "rate_limited");
    b.stop().await;
    a.stop().await;
}

/// Concurrent requests naming the same unknown provider share one lookup: with one discovery
/// allowed per minute, none of them is rate limited.
#[tokio::test]
async fn federation_security_discovery_is_single_flight() {
    let dns = dns_server(&[]).await;
    // A well-known server that accepts connections and never answers: each lookup takes the
    // whole request timeout.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tarpit_url = format!("http://{}", tarpit.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = tarpit.accept().await {
            open.push(socket);
        }
    });
    let pb = Provider::new("beta.test").await;
    let b = pb
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            f.discoveries_per_minute = 1;
            f.request_timeout_ms = 700;
            f.well_known_overrides
                .insert("slow.test".into(), tarpit_url);
        })
        .await;
    let bob = b.register("team", "bob").await;
    let payload = payload_with("hi");
    let bodies: Vec<String> = (0..4)
        .map(|_| {
            let eve = remote_agent("eve@acme.slow.test");
            Env::new(&eve, &bob.address).body(&eve, &payload)
        })
        .collect();
    let key = SecretKey::generate();
    let (r0, r1, r2, r3) = tokio::join!(
        deliver_as(&b, "slow.test", &key, &bodies[0]),
        deliver_as(&b, "slow.test", &key, &bodies[1]),
        deliver_as(&b, "slow.test", &key, &bodies[2]),
        deliver_as(&b, "slow.test", &key, &bodies[3]),
    );
    for r in [r0, r1, r2, r3] {
        assert_refused(&r, 401, "unauthorized");
    }
    held.abort();
    b.stop().await;
    std::mem::forget(pb);
}

/// The key pinned for a remote sender expires: a peer names as many senders as it likes, and
/// each pin would otherwise stay in the store for good. Read back from the node's own store
/// once it stopped: pinned now, reclaimed by the store's sweep once its lifetime has passed.
#[tokio::test]
async fn federation_security_pin_markers_expire() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let node = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let bob = node.register("team", "bob").await;
    let alice = remote_agent("alice@acme.alpha.test");
    let body = Env::new(&alice, &bob.address).body(&alice, &payload_with("pin me"));
    let r = deliver_as(&node, "alpha.test", &pa.key, &body).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    node.stop().await;

    let store = amp_testkit::ampd::Embedded::open(pb.data_dir()).into_store();
    let key = federation::inbound::pin_key(&alice.address);
    let pinned = store
        .get(&key)
        .await
        .expect("get")
        .expect("the sender is pinned");
    assert!(
        String::from_utf8_lossy(&pinned).starts_with(&alice.key.public().fingerprint()),
        "{}",
        String::from_utf8_lossy(&pinned)
    );
    let now = Timestamp::now().unix_millis();
    let day = 24 * 3600 * 1000;
    store
        .purge_expired(now + day, 100_000)
        .await
        .expect("purge");
    assert!(
        store.get(&key).await.expect("get").is_some(),
        "kept a day on"
    );
    store
        .purge_expired(now + federation::inbound::PIN_LIFETIME_MS + day, 100_000)
        .await
        .expect("purge");
    assert!(
        store.get(&key).await.expect("get").is_none(),
        "still pinned after its lifetime"
    );
}

/// A peer that accepts connections and never answers (a tarpit) holds at most
/// `per_peer_workers` of the shared workers: with more messages queued for it than there
/// are workers, a message to another peer still arrives promptly instead of waiting behind
/// the tarpit's request timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_security_tarpit_peer_does_not_stall_other_peers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pit_addr = listener.local_addr().expect("addr");
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    let pit = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let pit_peer = federation::StaticPeer {
        domain: "pit.test".into(),
        endpoint: format!("http://{pit_addr}/v1"),
        public_key: Some(SecretKey::generate().public().to_pem()),
        fingerprint: None,
    };

    let pa = Provider::new("alpha.test").await;
    let pg = Provider::new("gamma.test").await;
    let gamma = pg.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alpha = pa
        .start(|f| {
            f.peers = vec![pg.as_peer(), pit_peer];
            f.workers = 4;
            f.per_peer_workers = 2;
            f.request_timeout_ms = 10_000;
        })
        .await;
    let alice = alpha.register("team", "alice").await;
    let carol = gamma.register("team", "carol").await;
    for i in 0..12 {
        let r = alpha
            .send(
                &alice,
                &format!("victim{i}@team.pit.test"),
                "pit",
                &payload_with("x"),
                None,
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the tarpit was never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Instant::now();
    let r = alpha
        .send(
            &alice,
            &carol.address,
            "hello",
            &payload_with("not stuck"),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    gamma.wait_pending(&carol, 1).await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the message to gamma waited {took:?} behind the tarpit"
    );
    assert!(
        held.load(Ordering::SeqCst) <= 2,
        "the tarpit holds {} connections, more than its share",
        held.load(Ordering::SeqCst)
    );
    pit.abort();
    alpha.stop().await;
    gamma.stop().await;
}
