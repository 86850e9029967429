//! Issue 16: the per-address registration limit behind a reverse proxy. Without
//! `trusted_proxies` every client behind an Ingress counts as the proxy's one address (one
//! client exhausts the limit for all) and a forwarding header is ignored; with the proxy
//! trusted, each client is counted under the address the proxy saw (the rightmost untrusted
//! hop), and what the client itself wrote to the left of it changes nothing.

use amp_proto::SecretKey;
use reqwest::StatusCode;
use serde_json::json;

use super::Ampd;

/// `POST /v1/register` with `X-Forwarded-For: xff` (when given): the status.
async fn register_from(s: &Ampd, tenant: &str, name: &str, xff: Option<&str>) -> StatusCode {
    let body = json!({
        "tenant": tenant,
        "name": name,
        "public_key": SecretKey::generate().public().to_pem(),
        "key_algorithm": "Ed25519",
    });
    let mut req = s
        .http
        .post(format!("{}/v1/register", s.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(v) = xff {
        req = req.header("x-forwarded-for", v);
    }
    req.send().await.expect("register").status()
}

fn two_per_minute(config: &mut ampd::Config) {
    config.ingest.registration.per_ip_per_minute = 2;
}

/// The test client connects from 127.0.0.1, playing the Ingress controller.
#[tokio::test]
async fn security_trusted_proxies_count_each_client_behind_the_proxy() {
    let s = Ampd::start_with(|c| {
        two_per_minute(c);
        c.ingest.client_address.trusted_proxies = vec!["127.0.0.0/8".parse().expect("range")];
    })
    .await;
    let t = "sec-proxy-a";
    let one = Some("203.0.113.1");
    assert_eq!(register_from(&s, t, "a1", one).await, StatusCode::CREATED);
    assert_eq!(register_from(&s, t, "a2", one).await, StatusCode::CREATED);
    assert_eq!(
        register_from(&s, t, "a3", one).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the client at 203.0.113.1 used its two"
    );
    // Another client behind the same proxy is not held back by the first one.
    let two = Some("203.0.113.2");
    assert_eq!(register_from(&s, t, "b1", two).await, StatusCode::CREATED);
    // What a client writes to the left of the proxy's hop is not believed.
    let spoofed = Some("198.51.100.50, 203.0.113.1");
    assert_eq!(
        register_from(&s, t, "a4", spoofed).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.stop().await;
}

#[tokio::test]
async fn security_trusted_proxies_header_ignored_from_an_untrusted_peer() {
    // 127.0.0.1 is not a trusted proxy: a forwarding header cannot dodge the limit.
    let s = Ampd::start_with(|c| {
        two_per_minute(c);
        c.ingest.client_address.trusted_proxies = vec!["10.0.0.0/8".parse().expect("range")];
    })
    .await;
    let t = "sec-proxy-b";
    assert_eq!(
        register_from(&s, t, "c1", Some("203.0.113.1")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(&s, t, "c2", Some("203.0.113.2")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(&s, t, "c3", Some("203.0.113.3")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.stop().await;
}

#[test]
fn security_trusted_proxies_from_the_config_file() {
    let load = |text: &str| {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        amp_runtime::config::load_with_env::<ampd::Config>(
            Some(file.path()),
            "AMP",
            Vec::<(String, String)>::new(),
            &[],
        )
    };
    let config = load(
        "[ingest.client_address]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\nheader = \"forwarded\"\n",
    )
    .expect("parses");
    let c = &config.ingest.client_address;
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(
        c.header,
        amp_runtime::client_addr::ForwardedHeader::Forwarded
    );
    let bad = load("[ingest.client_address]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
    assert!(bad.is_err(), "an invalid range is refused at start");
}
