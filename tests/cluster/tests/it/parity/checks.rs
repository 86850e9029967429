//! The black-box checks, each written once and run against every [`Target`]: what `ampd`
//! answers is the expected value, exactly. Each check registers its own tenant. Nothing
//! waits or retries for visibility: a write answered 2xx must be readable by the very next
//! request, on whichever replica it lands.

use std::collections::BTreeSet;
use std::time::Duration;

use amp_client::{Client, Frame};
use amp_proto::{PublicKey, SecretKey, Timestamp};
use cluster_tests::parity::{DOMAIN, LIMIT, Target};
use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::json;

use super::http::{
    BODY_LIMIT, CLIENT_TIMESTAMP, Http, Msg, assert_mailbox_written, assert_payload_verbatim,
    assert_recipient_can_verify, assert_server_id, fresh_id, ids_of, payload_with, tenant,
};

/// The capabilities every deployment without federation advertises.
const CAPABILITIES: [&str; 6] = [
    "registration",
    "relay-queue",
    "websockets",
    "webhooks",
    "notify:v1",
    "notify:longpoll",
];

/// Health, info and the well-known document, through the proxy, on both prefixes.
pub(crate) async fn discovery(t: &Target) {
    let h = Http::new(&t.base);
    for prefix in ["/v1", "/api/v1"] {
        let v = h
            .call(Method::GET, &format!("{prefix}/health"), None, None)
            .await
            .ok(200);
        assert_eq!(v["status"], "healthy", "{v}");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert_eq!(v["provider"], DOMAIN, "{v}");
        assert_eq!(v["federation"], false, "{v}");
        assert!(v["agents_online"].is_u64(), "{v}");
        assert!(v["uptime_seconds"].is_u64(), "{v}");

        let v = h
            .call(Method::GET, &format!("{prefix}/info"), None, None)
            .await
            .ok(200);
        assert_eq!(v["provider"], DOMAIN, "{v}");
        assert_eq!(v["version"], "amp/0.1", "{v}");
        let pem = v["public_key"].as_str().expect("public_key");
        assert_eq!(PublicKey::parse(pem).expect("pem"), t.provider_key);
        assert_eq!(v["fingerprint"], t.provider_key.fingerprint(), "{v}");
        assert_eq!(v["capabilities"], json!(CAPABILITIES), "{v}");
        assert!(
            v["registration_modes"]
                .as_array()
                .is_some_and(|m| m.contains(&json!("open"))),
            "{v}"
        );
        assert_eq!(v["rate_limits"]["messages_per_minute"], LIMIT, "{v}");
        assert_eq!(v["rate_limits"]["api_requests_per_minute"], LIMIT, "{v}");
    }
    let r = h
        .call(Method::GET, "/.well-known/agent-messaging.json", None, None)
        .await;
    let v = r.ok(200);
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.contains("application/json"), "{ct}");
    assert_eq!(v["version"], "AMP1", "{v}");
    assert_eq!(v["endpoint"], format!("{}/v1", t.base), "{v}");
    assert_eq!(v["provider"], DOMAIN, "{v}");
    assert_eq!(v["fingerprint"], t.provider_key.fingerprint(), "{v}");
    assert_eq!(v["capabilities"], json!(CAPABILITIES), "{v}");
}

/// Registration's answer and its refusals, through the proxy.
pub(crate) async fn registration(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("Reg");
    let lc = tn.to_ascii_lowercase();
    let key = SecretKey::generate();
    let body = json!({
        "tenant": tn,
        "name": "Alice",
        "public_key": key.public().to_pem(),
        "key_algorithm": "Ed25519",
        "alias": "Alice A.",
    });
    let v = h.register_raw(&body).await.ok(201);
    let address = format!("alice@{lc}.{DOMAIN}");
    assert_eq!(v["address"], address, "{v}");
    assert_eq!(v["short_address"], address, "{v}");
    assert_eq!(v["local_name"], "alice", "{v}");
    assert_eq!(v["tenant"], lc, "{v}");
    assert!(
        v["agent_id"]
            .as_str()
            .is_some_and(|a| a.starts_with("agt_")),
        "{v}"
    );
    let api_key = v["api_key"].as_str().expect("api_key").to_owned();
    assert!(api_key.starts_with("amp_live_sk_"), "{v}");
    assert_eq!(v["provider"]["name"], DOMAIN, "{v}");
    assert_eq!(v["provider"]["endpoint"], format!("{}/v1", t.base), "{v}");
    assert_eq!(
        v["provider"]["route_url"],
        format!("{}/v1/route", t.base),
        "{v}"
    );
    assert_eq!(v["fingerprint"], key.public().fingerprint(), "{v}");
    assert!(
        v["registered_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{v}"
    );

    // The /api/v1 prefix advertises itself.
    let body = json!({
        "tenant": tn, "name": "bob",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
    });
    let v = h
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(body.to_string()),
        )
        .await
        .ok(201);
    assert_eq!(
        v["provider"]["endpoint"],
        format!("{}/api/v1", t.base),
        "{v}"
    );

    // Refusals, each the spec error body.
    for field in ["name", "public_key", "key_algorithm", "tenant"] {
        let mut body = json!({
            "tenant": tn, "name": "carol",
            "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
        });
        body.as_object_mut().expect("object").remove(field);
        h.register_raw(&body)
            .await
            .error(400, "missing_field", Some(field));
    }
    let bad_name = json!({
        "tenant": tn, "name": "bad name",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
    });
    h.register_raw(&bad_name)
        .await
        .error(400, "invalid_field", Some("name"));
    let rsa = json!({
        "tenant": tn, "name": "dave",
        "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "RSA",
    });
    h.register_raw(&rsa)
        .await
        .error(400, "invalid_field", Some("key_algorithm"));
    // Taken, in another case: 409 with suggestions, whichever replica answers.
    for _ in 0..2 {
        let taken = json!({
            "tenant": tn, "name": "ALICE",
            "public_key": SecretKey::generate().public().to_pem(), "key_algorithm": "Ed25519",
        });
        let v = h.register_raw(&taken).await.error(409, "name_taken", None);
        let suggestions = v["suggestions"].as_array().expect("suggestions");
        assert!(!suggestions.is_empty(), "{v}");
    }
    h.call(
        Method::POST,
        "/v1/register",
        None,
        Some(r#"{"tenant": "x", "#.to_owned()),
    )
    .await
    .error(400, "invalid_request", None);
    let no_type = h
        .send(
            h.request(Method::POST, "/v1/register")
                .body(bad_name.to_string()),
        )
        .await;
    assert_eq!(no_type.status, 415, "{}", no_type.text);
    assert!(no_type.json()["error"].is_string(), "{}", no_type.text);
    // Unknown paths and wrong methods.
    h.call(Method::GET, "/v1/nope", None, None)
        .await
        .error(404, "not_found", None);
    h.call(Method::GET, "/v1/register", None, None)
        .await
        .error(405, "method_not_allowed", None);
    h.call(Method::DELETE, "/v1/health", None, None)
        .await
        .error(405, "method_not_allowed", None);
}

/// `/v1/agents/me` and resolution, registered on one replica, read on the other.
pub(crate) async fn agents_me_and_resolve(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("me");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let r = b.get(&alice, "/v1/agents/me").await;
    let v = r.ok(200);
    assert_eq!(v["address"], alice.address.as_str(), "{v}");
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");
    assert!(!r.text.contains(&alice.api_key), "{}", r.text);
    assert!(!r.text.contains("api_key"), "{}", r.text);
    let v = b
        .get(&bob, &format!("/v1/agents/resolve/{}", alice.address))
        .await
        .ok(200);
    let pem = v["public_key"].as_str().expect("public_key");
    assert_eq!(PublicKey::parse(pem).expect("pem"), alice.key.public());
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");
    b.get(&bob, &format!("/v1/agents/resolve/nobody@{tn}.{DOMAIN}"))
        .await
        .error(404, "not_found", None);
    for key in [None, Some("garbage"), Some("amp_live_sk_AAAAAAAAAAAAAAAA")] {
        b.call(Method::GET, "/v1/agents/me", key, None)
            .await
            .error(401, "unauthorized", None);
    }
}

/// Both body forms on both prefixes, with `ampd`'s exact answers, then every message in the
/// mailbox as sent, read through the proxy right after the last answer.
pub(crate) async fn route_answers(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("route");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mut sent = Vec::new();
    for (i, prefix) in ["/v1", "/api/v1"].into_iter().enumerate() {
        let m = Msg::new(&bob.address, &format!("flat {i}"))
            .priority("high")
            .payload(&payload_with(&format!("flat via {prefix}")));
        let r = h
            .post(
                &alice,
                &format!("{prefix}/route"),
                Some(m.flat(Some(&m.sign(&alice)))),
            )
            .await;
        let v = assert_mailbox_written(&r);
        let id = v["id"].as_str().expect("id").to_owned();
        assert_server_id(&id);
        assert_eq!(v["thread_id"], id.as_str(), "{v}");
        sent.push((id, m));

        let client_id = fresh_id();
        let m = Msg::new(&bob.address, &format!("envelope {i}"))
            .id(&client_id)
            .payload(&payload_with(&format!("envelope via {prefix}")));
        let r = h
            .post(
                &alice,
                &format!("{prefix}/route"),
                Some(m.envelope(&alice.address, Some(&m.sign(&alice)))),
            )
            .await;
        let v = assert_mailbox_written(&r);
        assert_eq!(v["id"], client_id.as_str(), "client id kept: {v}");
        assert_eq!(v["thread_id"], client_id.as_str(), "{v}");
        sent.push((client_id, m));
    }
    let (page, text) = h.pending(&bob, "").await;
    assert_eq!(page["count"], 4, "{page}");
    assert_eq!(
        ids_of(&page),
        sent.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "FIFO"
    );
    for (id, m) in &sent {
        let item = super::http::find(&page, id);
        let env = &item["envelope"];
        assert_eq!(env["from"], alice.address.as_str(), "{item}");
        assert_eq!(env["to"], m.to.as_str(), "{item}");
        assert_eq!(env["subject"], m.subject.as_str(), "{item}");
        assert_ne!(env["timestamp"], CLIENT_TIMESTAMP, "{item}");
        assert_eq!(item["local"]["security"]["trust"], "verified", "{item}");
        assert_payload_verbatim(&text, &m.payload);
        assert_recipient_can_verify(item, &m.payload);
    }
}

/// The duplicate rule: the same id and signature again is answered like the first; the same
/// id with another signature is 409 `duplicate_message`, sequentially and across replicas.
pub(crate) async fn duplicates(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("dup");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let id = fresh_id();
    let m = Msg::new(&bob.address, "once").id(&id);
    let body = m.envelope(&alice.address, Some(&m.sign(&alice)));
    let first = assert_mailbox_written(&a.route(&alice, body.clone()).await);
    // The retry on the other replica.
    let again = assert_mailbox_written(&b.route(&alice, body.clone()).await);
    assert_eq!(first["id"], id.as_str(), "{first}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    assert_eq!(again["queued_at"], first["queued_at"], "{first} vs {again}");
    assert_eq!(again["thread_id"], first["thread_id"], "{first} vs {again}");
    // Same id, another subject, re-signed: on either replica.
    let mut other = m.clone();
    other.subject = "twice".into();
    let other_body = other.envelope(&alice.address, Some(&other.sign(&alice)));
    for h in [&a, &b] {
        h.route(&alice, other_body.clone())
            .await
            .error(409, "duplicate_message", None);
    }
    let (page, _) = b.pending(&bob, "").await;
    assert_eq!(ids_of(&page), [id], "one mailbox entry: {page}");
    assert_eq!(page["messages"][0]["envelope"]["subject"], "once", "{page}");
}

/// Unknown recipients, sender forgery and signatures: `ampd`'s status and code for each,
/// nothing stored.
pub(crate) async fn refusals(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("refuse");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mallory = h.register(&tn, "mallory").await;

    let m = Msg::new(&format!("nobody@{tn}.{DOMAIN}"), "hi");
    h.send_msg(&alice, &m)
        .await
        .error(404, "not_found", Some("to"));

    let m = Msg::new(&bob.address, "subject")
        .payload(r#"{"type":"notification","message":"pay 10","context":{"amount":10}}"#);
    let sig = m.sign(&alice);
    let forged = m.sign_with(&alice.key, &mallory.address);
    h.route(&alice, m.envelope(&mallory.address, Some(&forged)))
        .await
        .error(403, "forbidden", None);
    h.route(&alice, m.flat(None))
        .await
        .error(400, "signature_missing", None);
    h.route(&alice, m.flat(Some("")))
        .await
        .error(400, "signature_missing", None);
    h.route(&alice, m.flat(Some("not a signature!")))
        .await
        .error(400, "signature_invalid", None);
    let other_key = m.sign_with(&mallory.key, &alice.address);
    h.route(&alice, m.flat(Some(&other_key)))
        .await
        .error(400, "signature_invalid", None);
    let mut tampered = m.clone();
    tampered.subject = "Subject".into();
    h.route(&alice, tampered.flat(Some(&sig)))
        .await
        .error(400, "signature_invalid", None);
    let m2 = m
        .clone()
        .payload(r#"{"type":"notification","message":"pay 10","context":{"amount":1000}}"#);
    h.route(&alice, m2.flat(Some(&sig)))
        .await
        .error(400, "signature_invalid", None);
    // No key, and a key that is not an agent's.
    h.call(Method::POST, "/v1/route", None, Some(m.flat(Some(&sig))))
        .await
        .error(401, "unauthorized", None);
    h.call(
        Method::POST,
        "/v1/route",
        Some("uk_abcdefgh_secret"),
        Some(m.flat(Some(&sig))),
    )
    .await
    .error(401, "unauthorized", None);
    // Another provider's address: not implemented, nothing stored.
    let far = Msg::new("x@t.other.test", "far away");
    h.send_msg(&alice, &far)
        .await
        .error(501, "not_implemented", Some("to"));
    h.route(&alice, r#"{"to": "bob", "subject": "#.to_owned())
        .await
        .error(400, "invalid_request", None);
    assert_eq!(
        h.pending_ids(&bob).await,
        Vec::<String>::new(),
        "refused, not stored"
    );
    assert_eq!(h.pending_ids(&mallory).await, Vec::<String>::new());
    // The untampered message goes through, and is there at once.
    let v = assert_mailbox_written(&h.route(&alice, m.flat(Some(&sig))).await);
    assert_eq!(
        h.pending_ids(&bob).await,
        [v["id"].as_str().expect("id")],
        "the one message answered 2xx, in the pickup right after"
    );
}

/// Size limits: a field one byte over, and a whole body over the limit (which the proxy
/// passes on, so the provider answers).
pub(crate) async fn size_limits(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("size");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let m = Msg::new(&bob.address, "big").payload(&payload_with(&"a".repeat(65_536)));
    let v = assert_mailbox_written(&h.send_msg(&alice, &m).await);
    let accepted = v["id"].as_str().expect("id").to_owned();
    let m = Msg::new(&bob.address, "big").payload(&payload_with(&"a".repeat(65_537)));
    h.send_msg(&alice, &m)
        .await
        .error(400, "invalid_field", Some("payload.message"));
    let m = Msg::new(&bob.address, "huge").payload(&format!(
        r#"{{"type":"notification","message":"x","context":{{"a":"{}","b":"{}"}}}}"#,
        "a".repeat(270_000),
        "b".repeat(270_000)
    ));
    let body = m.flat(Some(&m.sign(&alice)));
    assert!(body.len() > BODY_LIMIT);
    h.route(&alice, body)
        .await
        .error(413, "invalid_request", None);
    assert_eq!(
        h.pending_ids(&bob).await,
        [accepted],
        "only the message at the limit, in the pickup right after"
    );
}

/// Read your writes: each 2xx route through the proxy is followed at once by a pickup
/// through the proxy (round robin: the other replica), then route on replica A and pickup on
/// replica B directly.
pub(crate) async fn read_your_writes(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("ryw");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mut crossed = 0;
    let mut upstreams = BTreeSet::new();
    for i in 0..10 {
        let m = Msg::new(&bob.address, &format!("ryw {i}"));
        let r = h.send_msg(&alice, &m).await;
        let id = assert_mailbox_written(&r)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let p = h.get(&bob, "/v1/messages/pending?limit=1000").await;
        let ids = ids_of(&p.ok(200));
        assert!(
            ids.contains(&id),
            "route via {} then pickup via {}: {id} not yet visible",
            r.upstream(),
            p.upstream()
        );
        crossed += usize::from(r.upstream() != p.upstream());
        upstreams.insert(r.upstream());
        upstreams.insert(p.upstream());
    }
    assert_eq!(
        upstreams.len(),
        if t.has_replicas() { 2 } else { 1 },
        "the proxy round robin reaches every ingest replica: {upstreams:?}"
    );
    if t.has_replicas() {
        assert!(crossed > 0, "no route/pickup pair crossed replicas");
    }

    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    for i in 0..5 {
        let m = Msg::new(&bob.address, &format!("direct {i}"));
        let id = assert_mailbox_written(&a.send_msg(&alice, &m).await)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert!(
            b.pending_ids(&bob).await.contains(&id),
            "routed on {}, {id} not visible on {}",
            t.ingest[0],
            t.ingest[1]
        );
    }
}

/// Cursors, count, acks: written on one replica, paged, counted and acknowledged on the
/// other; an acknowledged message is gone at once everywhere.
pub(crate) async fn cursors_count_ack(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("cursor");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let empty = b.get(&bob, "/v1/messages/pending/count").await.ok(200);
    assert_eq!(empty["count"], 0, "{empty}");
    assert!(empty["oldest_queued_at"].is_null(), "{empty}");
    let c0 = empty["cursor"].as_str().expect("cursor").to_owned();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = Msg::new(&bob.address, &format!("c{i}")).payload(&payload_with(&format!("c{i}")));
        let v = assert_mailbox_written(&a.send_msg(&alice, &m).await);
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    let v = b.get(&bob, "/v1/messages/pending/count").await.ok(200);
    assert_eq!(v["count"], 5, "{v}");
    assert!(
        v["oldest_queued_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{v}"
    );
    let (page, _) = b.pending(&bob, "?limit=2").await;
    assert_eq!(page["count"], 2, "{page}");
    assert_eq!(page["remaining"], 3, "{page}");
    assert_eq!(ids_of(&page), ids[..2]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_owned();
    let (rest, _) = a.pending(&bob, &format!("?after={cursor}")).await;
    assert_eq!(ids_of(&rest), ids[2..], "{rest}");
    assert_eq!(rest["remaining"], 0, "{rest}");
    let (all, _) = a.pending(&bob, &format!("?after={c0}")).await;
    assert_eq!(ids_of(&all), ids, "{all}");
    for bad in ["c_999999", "garbage"] {
        b.get(&bob, &format!("/v1/messages/pending?after={bad}"))
            .await
            .error(410, "cursor_expired", None);
    }

    // Ack on A; gone on B at once.
    let p = format!("/v1/messages/pending/{}", ids[0]);
    let v = a.delete(&bob, &p).await.ok(200);
    assert_eq!(v, json!({ "acknowledged": true, "already_acked": false }));
    assert!(!b.pending_ids(&bob).await.contains(&ids[0]));
    let v = b.delete(&bob, &p).await.ok(200);
    assert_eq!(v, json!({ "acknowledged": true, "already_acked": true }));
    let unknown = "msg_1700000000000_0000dead";
    let body = json!({ "ids": [ids[1], ids[0], unknown] }).to_string();
    let v = b
        .post(&bob, "/v1/messages/pending/ack", Some(body))
        .await
        .ok(200);
    assert_eq!(
        v,
        json!({ "acknowledged": 1, "already_acked": [ids[0]], "not_found": [unknown] })
    );
    assert_eq!(a.pending_ids(&bob).await, ids[2..]);
    let v = a.get(&bob, "/v1/messages/pending/count").await.ok(200);
    assert_eq!(v["count"], 3, "{v}");
    b.delete(&bob, &format!("/v1/messages/pending/{unknown}"))
        .await
        .error(404, "not_found", None);
}

/// Key rotation on replica A, the new API key and the new signing key used at once on B;
/// revocation on A effective at once on B.
pub(crate) async fn keys_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("keys");
    let mut alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;

    // API key: the new one works on B at once, and the old one still does (24 h overlap).
    let v = a.post(&alice, "/v1/auth/rotate-key", None).await.ok(200);
    let new_api_key = v["api_key"].as_str().expect("api_key").to_owned();
    assert_ne!(new_api_key, alice.api_key);
    let old = alice.clone();
    alice.api_key = new_api_key;
    for who in [&alice, &old] {
        let v = b.get(who, "/v1/agents/me").await.ok(200);
        assert_eq!(v["address"], alice.address.as_str(), "{v}");
    }

    // Signing key: rotated on A, a message signed with the new key routes on B at once,
    // one signed with the old key is refused there.
    let new_key = SecretKey::generate();
    let new_pem = new_key.public().to_pem();
    let proof = alice.key.sign_b64(new_pem.as_bytes());
    let v = a
        .post(
            &alice,
            "/v1/auth/rotate-keys",
            Some(
                json!({"new_public_key": new_pem, "key_algorithm": "Ed25519", "proof": proof})
                    .to_string(),
            ),
        )
        .await
        .ok(200);
    assert_eq!(v["rotated"], true, "{v}");
    assert_eq!(v["fingerprint"], new_key.public().fingerprint(), "{v}");
    let old_key = std::mem::replace(&mut alice.key, new_key);
    let m = Msg::new(&bob.address, "new key");
    let v = assert_mailbox_written(&b.send_msg(&alice, &m).await);
    let signed_new = v["id"].as_str().expect("id").to_owned();
    let stale = Msg::new(&bob.address, "old key");
    b.route(
        &alice,
        stale.flat(Some(&stale.sign_with(&old_key, &alice.address))),
    )
    .await
    .error(400, "signature_invalid", None);
    let v = b
        .get(&bob, &format!("/v1/agents/resolve/{}", alice.address))
        .await
        .ok(200);
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");

    // Revocation on A: both keys refused on B at once.
    let v = a.delete(&alice, "/v1/auth/revoke-key").await.ok(200);
    assert_eq!(v["revoked"], true, "{v}");
    for who in [&alice, &old] {
        b.get(who, "/v1/agents/me")
            .await
            .error(401, "unauthorized", None);
        let m = Msg::new(&bob.address, "after revocation");
        b.send_msg(who, &m).await.error(401, "unauthorized", None);
    }
    assert_eq!(
        a.pending_ids(&bob).await,
        [signed_new],
        "only the message signed with the new key, in the pickup right after"
    );
}

/// A long-poll on replica A is answered with a message routed on replica B: whether the
/// poll was waiting when the route landed or came after it, it returns the message, promptly.
/// An empty long-poll answers after its `wait`.
pub(crate) async fn long_poll_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("poll");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let started = std::time::Instant::now();
    let (page, _) = a.pending(&bob, "?wait=1").await;
    let took = started.elapsed();
    assert_eq!(page["count"], 0, "{page}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "an empty long-poll of 1 s took {took:?}"
    );
    let poll = {
        let (a, bob) = (a.clone(), bob.clone());
        tokio::spawn(async move { a.pending(&bob, "?wait=10").await.0 })
    };
    let v = assert_mailbox_written(&b.send_msg(&alice, &Msg::new(&bob.address, "wake")).await);
    let answered = std::time::Instant::now();
    let page = poll.await.expect("the poll");
    assert_eq!(ids_of(&page), [v["id"].as_str().expect("id")], "{page}");
    assert!(
        answered.elapsed() < Duration::from_secs(3),
        "the poll on A answered {:?} after the route on B",
        answered.elapsed()
    );
}

/// A read receipt sent on replica B is in the sender's receipts on replica A at once, once
/// however often `/read` is called; reading is not acknowledging.
pub(crate) async fn read_receipts_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("receipt");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let v = assert_mailbox_written(&a.send_msg(&alice, &Msg::new(&bob.address, "read me")).await);
    let id = v["id"].as_str().expect("id").to_owned();
    let v = a.get(&alice, "/v1/messages/receipts").await.ok(200);
    assert_eq!(v["receipts"], json!([]), "{v}");
    let path = format!("/v1/messages/{id}/read");
    for h in [&b, &a] {
        let v = h.post(&bob, &path, None).await.ok(200);
        assert_eq!(v, json!({ "read_receipt_sent": true }));
    }
    assert_eq!(
        b.pending_ids(&bob).await,
        std::slice::from_ref(&id),
        "read is not an ack"
    );
    a.post(&alice, &path, None)
        .await
        .error(404, "not_found", None);
    let v = a.get(&alice, "/v1/messages/receipts").await.ok(200);
    let list = v["receipts"].as_array().expect("receipts");
    assert_eq!(
        list.len(),
        1,
        "one receipt however often /read is called: {v}"
    );
    assert_eq!(list[0]["type"], "message.read", "{v}");
    assert_eq!(list[0]["data"]["id"], id.as_str(), "{v}");
    let seq = list[0]["seq"].as_u64().expect("seq");
    b.post(
        &alice,
        "/v1/messages/receipts/ack",
        Some(json!({ "upto": seq }).to_string()),
    )
    .await
    .ok(200);
    let v = a.get(&alice, "/v1/messages/receipts").await.ok(200);
    assert_eq!(
        v["receipts"],
        json!([]),
        "acknowledged on B, gone on A: {v}"
    );
}

/// A WebSocket through the proxy: upgrade, auth, a replay of what was queued, then a live
/// push of a message routed through the proxy, answered as delivered over the socket.
pub(crate) async fn websocket_push(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("ws");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let queued = assert_mailbox_written(&h.send_msg(&alice, &Msg::new(&bob.address, "q")).await);
    let bob_identity = identity(&bob, &t.base);
    for root in [format!("{}/v1", t.base), format!("{}/api/v1", t.base)] {
        let client = Client::new(&root).expect("client");
        let mut socket = client.subscribe(&bob_identity).await.expect("subscribe");
        assert_eq!(socket.connected().address, bob.address, "{root}");
        assert_eq!(socket.connected().pending_count, 1, "{root}");
        let replay = next_message(&mut socket).await;
        assert_eq!(replay.id(), queued["id"].as_str().expect("id"));
        assert!(replay.replay, "queued before the socket: a replay");
        let m = Msg::new(&bob.address, "live").payload(&payload_with(&root));
        let v = h.send_msg(&alice, &m).await.ok(200);
        assert_eq!(v["status"], "delivered", "{v}");
        assert_eq!(v["method"], "websocket", "{v}");
        assert_eq!(v["basis"], "socket_written", "{v}");
        assert!(v["delivered_at"].is_string(), "{v}");
        let live = next_message(&mut socket).await;
        assert_eq!(live.id(), v["id"].as_str().expect("id"));
        assert!(!live.replay, "a live push is not a replay");
        assert_eq!(live.envelope.from, alice.address);
        socket.ack(live.id()).await.expect("ack over the socket");
        socket.close().await.expect("close");
    }
}

/// The next `message.new` on `socket` (a push, not a poll: it arrives or the check fails).
async fn next_message(socket: &mut amp_client::Subscription) -> amp_client::Message {
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Message(m))) => return *m,
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    frame.expect("a message.new frame within 10 s")
}

/// An SDK identity for a raw-registered agent (for the WebSocket client).
fn identity(agent: &super::http::Agent, base: &str) -> amp_client::Identity {
    let registration: amp_client::Registration = serde_json::from_value(json!({
        "address": agent.address,
        "api_key": agent.api_key,
        "agent_id": "agt_unknown",
        "provider": { "name": DOMAIN, "endpoint": format!("{base}/v1") },
    }))
    .expect("registration");
    amp_client::Identity::new(agent.key.clone(), registration).expect("identity")
}

/// Every check, by name.
pub(crate) fn all() -> Vec<(&'static str, Check)> {
    vec![
        ("discovery", |t| Box::pin(discovery(t))),
        ("registration", |t| Box::pin(registration(t))),
        ("agents_me_and_resolve", |t| {
            Box::pin(agents_me_and_resolve(t))
        }),
        ("route_answers", |t| Box::pin(route_answers(t))),
        ("duplicates", |t| Box::pin(duplicates(t))),
        ("refusals", |t| Box::pin(refusals(t))),
        ("size_limits", |t| Box::pin(size_limits(t))),
        ("read_your_writes", |t| Box::pin(read_your_writes(t))),
        ("cursors_count_ack", |t| Box::pin(cursors_count_ack(t))),
        ("keys_across_replicas", |t| {
            Box::pin(keys_across_replicas(t))
        }),
        ("long_poll_across_replicas", |t| {
            Box::pin(long_poll_across_replicas(t))
        }),
        ("read_receipts_across_replicas", |t| {
            Box::pin(read_receipts_across_replicas(t))
        }),
        ("websocket_push", |t| Box::pin(websocket_push(t))),
    ]
}

/// One check: borrows the target, returns its future.
pub(crate) type Check = for<'a> fn(&'a Target) -> BoxFuture<'a, ()>;
