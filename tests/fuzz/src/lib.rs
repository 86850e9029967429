//! The bodies of the fuzz targets, one function per target, each taking the fuzzer's bytes.
//!
//! `tests/fuzz/fuzz/` holds the `cargo fuzz` targets (nightly, libFuzzer), which only call
//! these; `tests/replay.rs` runs every file of the committed corpora (`tests/fuzz/corpus/`)
//! through them as an ordinary test, so a crash once found stays fixed. `deploy/fuzz.sh`
//! runs every target for a bounded time.
//!
//! Each function must not panic on any input, and checks the properties that hold for every
//! input it accepts (a canonical form is a fixed point, an address prints as it parses, a
//! message signed by us verifies, ...). A failed property panics, which the fuzzer reports as
//! a crash.

use std::io::Write;
use std::sync::OnceLock;

use amp_proto::json::{self, CanonicalForm};
use amp_proto::signing::{self, SignedFields};
use amp_proto::{Address, AddressContext, Envelope, RawPayload, SecretKey, Timestamp, message};

/// A target's body: the fuzzer's bytes in, a panic on a crash or a broken property.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory and `cargo fuzz` target.
pub const TARGETS: &[(&str, Target)] = &[
    ("canonical_json", canonical_json),
    ("envelope", envelope),
    ("address", address),
    ("signing", signing),
    ("federation_headers", federation_headers),
    ("ws_frame", ws_frame),
    ("config", config),
];

/// Every canonical form the signatures use, each checked on its own.
const FORMS: &[CanonicalForm] = &[
    CanonicalForm::SORTED,
    CanonicalForm::SORTED_JS,
    CanonicalForm::SORTED_LITERAL,
    CanonicalForm::INSERTION,
    CanonicalForm::INSERTION_ASCII,
];

/// Canonical JSON (spec 04's payload hash): both parsers on any text; what parses has
/// canonical forms that parse again and are fixed points (written twice, the same text),
/// or two hops of a message would hash its payload differently.
pub fn canonical_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = json::parse_strict(text);
    let Ok(tree) = json::parse(text) else {
        assert!(
            strict.is_err(),
            "the strict parser accepted what the lenient one refused"
        );
        return;
    };
    for form in FORMS {
        let once = tree.to_canonical(*form);
        let again = json::parse(&once)
            .unwrap_or_else(|e| panic!("canonical text does not parse ({form:?}): {e:?}: {once}"));
        assert_eq!(
            again.to_canonical(*form),
            once,
            "canonical form is not a fixed point ({form:?})"
        );
    }
    let _ = signing::payload_hash(text);
}

/// A message body as a peer or a client sends it: the route request both forms are read
/// into, a stored message, and the envelope's and payload's validation with the size limits.
pub fn envelope(data: &[u8]) {
    let _ = serde_json::from_slice::<amp_messaging::RouteRequest>(data);
    let _ = serde_json::from_slice::<amp_proto::relay::StoredMessage>(data);
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let env = body
        .get("envelope")
        .and_then(|e| serde_json::from_value::<Envelope>(e.clone()).ok());
    let payload = body
        .get("payload")
        .and_then(|p| RawPayload::from_json(p.to_string()).ok());
    if let Some(env) = &env {
        let _ = message::validate_envelope(env);
        let _ = Address::parse_full(&env.from, "fuzz.test");
        let _ = message::effective_expiry(Timestamp::now(), env.expires_at);
    }
    if let Some(payload) = &payload {
        let _ = payload.validate();
        if let Some(env) = &env {
            let _ = message::validate_total(env, payload);
            let _ = signing::verify_message(
                &key().public(),
                &env.signed_fields(),
                payload.get(),
                &env.signature,
            );
        }
    }
}

/// Addresses in every context; what parses prints as something that parses to itself.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = amp_proto::address::parse_parts(text);
    let _ = amp_proto::address::is_valid_name(text);
    let _ = amp_proto::address::is_local_network_domain(text);
    for ctx in [
        AddressContext {
            local_domain: "fuzz.test",
            default_tenant: Some("acme"),
        },
        AddressContext {
            local_domain: "fuzz.test",
            default_tenant: None,
        },
    ] {
        if let Ok(a) = Address::parse(text, ctx) {
            let again = Address::parse_full(a.as_str(), "fuzz.test")
                .unwrap_or_else(|e| panic!("{} does not parse again: {e}", a.as_str()));
            assert_eq!(again.as_str(), a.as_str());
            let _ = (
                a.name(),
                a.scope(),
                a.tenant(),
                a.provider(),
                a.short_address(),
            );
        }
    }
}

/// The signature input (spec 04): any fields and payload build a canonical string; a
/// message we sign verifies; the fuzzer's own signature never verifies for a key it cannot
/// know (the bytes' tail is tried as the signature).
pub fn signing(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(7, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (from, to, subject, priority, in_reply_to) = (next(), next(), next(), next(), next());
    let payload = next();
    let signature = next();
    let fields = SignedFields {
        from,
        to,
        subject,
        priority,
        in_reply_to,
    };
    let _ = signing::canonical_string(&fields, &signing::sha256_b64(payload.as_bytes()));
    let key = key();
    let _ = signing::verify_message(&key.public(), &fields, payload, signature);
    if let Ok(sig) = signing::sign_message(key, &fields, payload) {
        signing::verify_message(&key.public(), &fields, payload, &sig)
            .unwrap_or_else(|e| panic!("our own signature does not verify: {e:?}"));
        // Only our own signature's bytes verify: the fuzzer cannot make one up.
        if signing::verify_message(&key.public(), &fields, payload, signature).is_ok() {
            assert_eq!(
                amp_proto::keys::decode_signature(signature).ok(),
                amp_proto::keys::decode_signature(&sig).ok(),
                "a signature the fuzzer made up verified"
            );
        }
    }
}

/// The provider-to-provider headers (spec 06): `X-AMP-Provider` normalised, the timestamp,
/// the request signature over `<timestamp>.<body>`, the discovery TXT record, and the
/// client address behind trusted proxies (`X-Forwarded-For`, `Forwarded`).
pub fn federation_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let provider = parts.next().unwrap_or("");
    let timestamp = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    if let Some(domain) = federation::config::normalize_domain(provider) {
        assert_eq!(
            federation::config::normalize_domain(&domain).as_deref(),
            Some(domain.as_str()),
            "a normalised provider name normalises to itself"
        );
    }
    let _ = timestamp.trim().parse::<i64>();
    let key = key();
    let _ = federation::signature::verify(&key.public(), timestamp, body.as_bytes(), signature);
    let ours = federation::signature::sign(key, timestamp, body.as_bytes());
    assert!(federation::signature::verify(
        &key.public(),
        timestamp,
        body.as_bytes(),
        &ours
    ));
    let _ = federation::discovery::parse_txt(&text);

    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [
        ("x-forwarded-for", provider),
        ("forwarded", timestamp),
        ("x-real-ip", signature),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let proxies = amp_runtime::client_addr::ClientAddressConfig {
        trusted_proxies: ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        ..Default::default()
    };
    let _ = proxies.client_ip([127, 0, 0, 1].into(), &headers);
}

/// A client's WebSocket text frame, through the session's own decoding.
pub fn ws_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = delivery::ws::decode_client_frame(text);
}

/// A configuration file for `ampd` (every service's sections), through the loader and the
/// validation the binary runs at start: an error, never a panic.
pub fn config(data: &[u8]) {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("amp-fuzz-config-{}.toml", std::process::id()))
    });
    let Ok(mut file) = std::fs::File::create(path) else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    drop(file);
    let loaded = amp_runtime::config::load_with_env::<ampd::Config>(
        Some(path),
        "AMP",
        std::iter::empty(),
        &[],
    );
    if let Ok(config) = loaded {
        let _ = config.validate();
    }
}

/// One fixed key (the fuzzer looks for inputs, not keys).
fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::from_seed(&[7; 32]))
}
