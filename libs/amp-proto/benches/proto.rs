//! Hot-path costs of the protocol core, with raw `ed25519-dalek` verify as the baseline for
//! ours. Run with `cargo bench -p amp-proto`.

use std::hint::black_box;

use amp_proto::signing::{
    SignedFields, canonical_string, payload_hash, sign_message, verify_message,
};
use amp_proto::{Address, AddressContext, RawPayload, SecretKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::Verifier as _;

/// A payload of about 1 KiB with a nested context, keys deliberately unsorted.
fn payload_1k() -> String {
    let message = "Please review the OAuth changes in lib/auth.ts. ".repeat(12);
    format!(
        r#"{{"type":"request","message":"{message}","context":{{"repo":"github.com/23blocks/agents-web","branch":"feature/oauth","pr":42,"files":["lib/auth.ts","app/api/auth/callback/route.ts","components/LoginButton.tsx"],"related":[{{"type":"issue","id":"38","title":"Add OAuth support"}}],"score":0.75,"deadline":"2025-02-01"}}}}"#
    )
}

fn fields() -> SignedFields<'static> {
    SignedFields {
        from: "alice@acme.crabmail.ai",
        to: "bob@acme.crabmail.ai",
        subject: "Code review request",
        priority: "normal",
        in_reply_to: "",
    }
}

fn benches(c: &mut Criterion) {
    let payload = payload_1k();
    let key = SecretKey::from_seed(&[42u8; 32]);
    let public = key.public();
    let sig = sign_message(&key, &fields(), &payload).expect("json");
    let hash = payload_hash(&payload).expect("json");
    let canonical = canonical_string(&fields(), &hash);

    let mut g = c.benchmark_group("proto");
    g.throughput(Throughput::Elements(1));
    g.bench_function("payload_hash_1k", |b| {
        b.iter(|| payload_hash(black_box(&payload)))
    });
    g.bench_function("canonical_string", |b| {
        b.iter(|| canonical_string(black_box(&fields()), black_box(&hash)))
    });
    g.bench_function("sign", |b| {
        b.iter(|| sign_message(&key, black_box(&fields()), black_box(&payload)))
    });
    g.bench_function("verify_message_1k", |b| {
        b.iter(|| verify_message(&public, black_box(&fields()), black_box(&payload), &sig))
    });
    let raw_sig = ed25519_dalek::Signature::from_bytes(
        &amp_proto::keys::decode_signature(&sig).expect("sig"),
    );
    g.bench_function("dalek_verify_raw_baseline", |b| {
        b.iter(|| {
            public
                .as_dalek()
                .verify(black_box(canonical.as_bytes()), black_box(&raw_sig))
        })
    });
    g.bench_function("dalek_verify_strict_baseline", |b| {
        b.iter(|| {
            public
                .as_dalek()
                .verify_strict(black_box(canonical.as_bytes()), black_box(&raw_sig))
        })
    });
    let ctx = AddressContext {
        local_domain: "crabmail.ai",
        default_tenant: Some("acme"),
    };
    g.bench_function("validate_envelope_1k", |b| {
        b.iter(|| {
            let to = Address::parse(black_box("bob@acme.crabmail.ai"), ctx).expect("addr");
            amp_proto::message::validate_subject(black_box(fields().subject)).expect("subject");
            let p = RawPayload::from_json(black_box(payload.clone())).expect("json");
            p.validate().expect("payload");
            let f = SignedFields {
                to: to.as_str(),
                ..fields()
            };
            verify_message(&public, &f, p.get(), &sig).expect("verifies")
        })
    });
    g.finish();
}

criterion_group!(proto, benches);
criterion_main!(proto);
