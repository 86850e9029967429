//! Messages between providers: round trips through each discovery method, a peer that is
//! down and comes back, bounces, the trust policy across three providers, the capability.

use std::time::Duration;

use amp_proto::PublicKey;
use amp_proto::signing::verify_message;
use amp_proto::{Envelope, SignedFields};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Ampd, FederationExt, Provider, dns_server, find, payload_with, txt_of};

/// Checks a federated message as its recipient sees it: the sender, the payload byte for
/// byte, the `external` classification with its wrapping, and the sender's signature.
fn check_received(page: &Value, text: &str, id: &str, from: &str, payload: &str, content: &str) {
    let item = find(page, id);
    assert_eq!(item["envelope"]["from"], from, "{item}");
    assert!(
        text.contains(&format!(r#""payload":{payload}"#)),
        "payload not byte-identical: {text}"
    );
    let sec = &item["local"]["security"];
    assert_eq!(sec["trust"], "external", "{sec}");
    assert_eq!(sec["wrapped"], true, "{sec}");
    let wrapped = sec["wrapped_content"].as_str().expect("wrapped_content");
    assert!(
        wrapped.starts_with("<external-content source=\"agent\"")
            && wrapped.contains("trust=\"external\"")
            && wrapped.contains(content),
        "{wrapped}"
    );
    // The recipient can verify the sender's signature itself.
    let env: Envelope = serde_json::from_value(item["envelope"].clone()).expect("envelope");
    let key = PublicKey::parse(item["sender_public_key"].as_str().expect("key")).expect("pem");
    let fields: SignedFields<'_> = env.signed_fields();
    verify_message(&key, &fields, payload, &env.signature).expect("sender signature verifies");
}

/// Alice on `a` and Bob on `b` exchange a message and a reply.
async fn round_trip(a: &Ampd, b: &Ampd) {
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;
    let text = "Hello Bob, from another provider.";
    let payload = payload_with(text);
    let r = a.send(&alice, &bob.address, "hello", &payload, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_owned();

    let (page, body) = b.wait_pending(&bob, 1).await;
    check_received(&page, &body, &id, &alice.address, &payload, text);

    let reply_text = "Hi Alice, got it.";
    let reply = payload_with(reply_text);
    let r = b
        .send(&bob, &alice.address, "re: hello", &reply, Some(&id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reply_id = r.json()["id"].as_str().expect("id").to_owned();
    let (page, body) = a.wait_pending(&alice, 1).await;
    check_received(&page, &body, &reply_id, &bob.address, &reply, reply_text);
    assert_eq!(
        find(&page, &reply_id)["envelope"]["in_reply_to"],
        id.as_str()
    );

    // Exactly once each way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.pending_count(&bob).await, 1);
    assert_eq!(a.pending_count(&alice).await, 1);
}

#[tokio::test]
async fn federation_round_trip_through_static_peers() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    round_trip(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_round_trip_through_the_well_known_url() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    // A DNS server that knows neither domain: discovery falls through to the well-known URL.
    let dns = dns_server(&[]).await;
    let a = pa
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            f.well_known_overrides.insert("beta.test".into(), pb.url());
        })
        .await;
    let b = pb
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            f.well_known_overrides.insert("alpha.test".into(), pa.url());
        })
        .await;
    round_trip(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_round_trip_through_dns_txt() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let dns = dns_server(&[("alpha.test", txt_of(&pa)), ("beta.test", txt_of(&pb))]).await;
    // No static peers, no well-known overrides: only DNS says where the peers are.
    let a = pa.start(|f| f.dns_nameserver = Some(dns.addr)).await;
    let b = pb.start(|f| f.dns_nameserver = Some(dns.addr)).await;
    round_trip(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_dns_key_must_match_the_published_fingerprint() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    // beta's record publishes someone else's fingerprint: alpha must not trust beta's key.
    let wrong = format!(
        "v=AMP1; endpoint={}; pubkey={}",
        pb.endpoint(),
        amp_proto::SecretKey::generate().public().fingerprint()
    );
    let dns = dns_server(&[("alpha.test", txt_of(&pa)), ("beta.test", wrong)]).await;
    let a = pa
        .start(|f| {
            f.dns_nameserver = Some(dns.addr);
            // Give up quickly: the message expires in a second.
            f.negative_ttl_secs = 0;
        })
        .await;
    let b = pb.start(|f| f.dns_nameserver = Some(dns.addr)).await;
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;
    let expires = amp_proto::Timestamp::now().plus_secs(1).to_rfc3339();
    let payload = payload_with("to an impostor?");
    let sig = crate::common::sign(&alice, &bob.address, "s", &payload, None);
    let body = format!(
        r#"{{"to":"{}","subject":"s","signature":"{sig}","expires_at":"{expires}","payload":{payload}}}"#,
        bob.address
    );
    let r = a
        .http
        .post(format!("{}/v1/route", a.url()))
        .bearer_auth(&alice.api_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("route");
    assert_eq!(r.status(), StatusCode::OK);
    // Never delivered; the sender hears that it expired.
    let (page, _) = a.wait_pending(&alice, 1).await;
    let bounce = &page["messages"][0];
    assert_eq!(bounce["payload"]["context"]["error"], "expired", "{bounce}");
    assert_eq!(b.pending_count(&bob).await, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_peer_down_comes_back_and_the_message_arrives_once() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let alice = a.register("acme", "alice").await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let bob = b.register("team", "bob").await;
    b.stop().await;
    // beta is down: the message is queued, not refused.
    let payload = payload_with("are you there?");
    let r = a.send(&alice, &bob.address, "ping", &payload, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    // Several attempts fail (connection refused) meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // beta comes back on the same address with the same data.
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let (page, _) = b.wait_pending(&bob, 1).await;
    assert_eq!(find(&page, &id)["envelope"]["from"], alice.address.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.pending_count(&bob).await, 1, "delivered exactly once");
    assert_eq!(a.pending_count(&alice).await, 0, "no bounce");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_unknown_recipient_bounces_to_the_sender() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let a = pa.start(|f| f.peers = vec![pb.as_peer()]).await;
    let b = pb.start(|f| f.peers = vec![pa.as_peer()]).await;
    let alice = a.register("acme", "alice").await;
    let to = "nobody@team.beta.test";
    let r = a
        .send(&alice, to, "anyone?", &payload_with("hello?"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_owned();

    let (page, _) = a.wait_pending(&alice, 1).await;
    let bounce = &page["messages"][0];
    assert_eq!(bounce["envelope"]["from"], "postmaster@system.alpha.test");
    assert_eq!(bounce["envelope"]["in_reply_to"], id.as_str());
    assert_eq!(bounce["payload"]["type"], "system");
    assert_eq!(
        bounce["payload"]["context"],
        json!({ "original_id": id, "recipient": to, "error": "recipient_not_found" })
    );
    assert!(
        bounce["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(to)),
        "{bounce}"
    );
    // Signed by the provider key, as advertised in /v1/info.
    let env: Envelope = serde_json::from_value(bounce["envelope"].clone()).expect("envelope");
    let info = a.info().await;
    let key = PublicKey::parse(info["public_key"].as_str().expect("key")).expect("pem");
    let raw = bounce["payload"].to_string();
    verify_message(&key, &env.signed_fields(), &raw, &env.signature).expect("provider-signed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.pending_count(&alice).await, 1, "one bounce");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn federation_allowlist_across_three_providers() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let pg = Provider::new("gamma.test").await;
    let all = |me: &str| -> Vec<federation::StaticPeer> {
        [&pa, &pb, &pg]
            .iter()
            .filter(|p| p.domain != me)
            .map(|p| p.as_peer())
            .collect()
    };
    let a = pa.start(|f| f.peers = all("alpha.test")).await;
    let b = pb.start(|f| f.peers = all("beta.test")).await;
    let g = pg
        .start(|f| {
            f.peers = all("gamma.test");
            f.trust = federation::TrustMode::Allowlist;
            f.allowed_providers = vec!["beta.test".into()];
        })
        .await;
    let alice = a.register("acme", "alice").await;
    let bea = b.register("acme", "bea").await;
    let gus = g.register("ops", "gus").await;

    // beta is allowed by gamma.
    let r = b
        .send(&bea, &gus.address, "from beta", &payload_with("ok"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (page, _) = g.wait_pending(&gus, 1).await;
    assert_eq!(
        page["messages"][0]["envelope"]["from"],
        bea.address.as_str()
    );

    // alpha is not: refused, bounced to alice, nothing stored at gamma.
    let r = a
        .send(
            &alice,
            &gus.address,
            "from alpha",
            &payload_with("no"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (page, _) = a.wait_pending(&alice, 1).await;
    assert_eq!(
        page["messages"][0]["payload"]["context"]["error"],
        "provider_not_trusted"
    );
    assert_eq!(g.pending_count(&gus).await, 1);

    // alpha and beta still talk to each other.
    let r = a
        .send(&alice, &bea.address, "hi", &payload_with("hi"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    b.wait_pending(&bea, 1).await;
    a.stop().await;
    b.stop().await;
    g.stop().await;
}

#[tokio::test]
async fn federation_capability_is_advertised_only_when_enabled() {
    let pa = Provider::new("alpha.test").await;
    let a = pa.start(|f| f.enabled = false).await;
    let info = a.info().await;
    assert!(
        !info["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .any(|c| c == "federation"),
        "{info}"
    );
    let alice = a.register("acme", "alice").await;
    let r = a
        .send(&alice, "bob@team.beta.test", "s", &payload_with("x"), None)
        .await;
    assert_eq!(r.status.as_u16(), 501, "{}", r.text);
    // The inbound endpoint is not served either.
    let r = a.deliver_raw(&[], "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    a.stop().await;

    let pb = Provider::new("beta.test").await;
    let b = pb.start(|_| {}).await;
    let info = b.info().await;
    assert!(
        info["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .any(|c| c == "federation"),
        "{info}"
    );
    b.stop().await;
}

/// A free loopback port for an admin listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

const ADMIN_TOKEN: &str = "amp_op_federation-usage-test-token-0123456789abcdef";

/// Usage metering across providers: the sender's tenant counts a message out to another
/// provider (`federated_out`), the recipient's tenant one in from another provider
/// (`federated_in`, and its mailbox write as `messages_out`).
#[tokio::test]
async fn federation_operator_usage_meters_both_directions() {
    let pa = Provider::new("alpha.test").await;
    let pb = Provider::new("beta.test").await;
    let (ports, admin_of) = ([free_port(), free_port()], |port: u16| {
        move |c: &mut amp_testkit::ampd::Config| {
            c.ingest.admin.listen = Some(([127, 0, 0, 1], port).into());
            c.ingest.admin.bootstrap_token = Some(amp_runtime::config::Secret::new(ADMIN_TOKEN));
            c.ingest.messaging.usage_flush_ms = 100;
        }
    });
    let (peer_a, peer_b) = (pa.as_peer(), pb.as_peer());
    let a = pa
        .start_with(|c| {
            admin_of(ports[0])(c);
            c.federation.peers = vec![peer_b];
        })
        .await;
    let b = pb
        .start_with(|c| {
            admin_of(ports[1])(c);
            c.federation.peers = vec![peer_a];
        })
        .await;
    let alice = a.register("acme", "alice").await;
    let bob = b.register("team", "bob").await;
    let r = a
        .send(&alice, &bob.address, "hello", &payload_with("hi"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    b.wait_pending(&bob, 1).await;

    let usage = |port: u16, tenant: &'static str| {
        let http = a.http.clone();
        async move {
            let r = http
                .get(format!(
                    "http://127.0.0.1:{port}/admin/v1/tenants/{tenant}/usage"
                ))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("usage");
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.expect("json");
            let sum = |f: &str| {
                v["rows"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|row| row[f].as_u64().expect("count"))
                    .sum::<u64>()
            };
            [
                sum("messages_in"),
                sum("messages_out"),
                sum("federated_in"),
                sum("federated_out"),
            ]
        }
    };
    let start = std::time::Instant::now();
    loop {
        let (sent, received) = (usage(ports[0], "acme").await, usage(ports[1], "team").await);
        if sent == [1, 0, 0, 1] && received == [0, 1, 1, 0] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sender's tenant {sent:?}, recipient's {received:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
