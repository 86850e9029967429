//! Runs every vector of every section of the spec's `test-vectors.json`. A section or a case
//! this runner does not know fails the test: nothing is skipped.

use amp_proto::address::parse_parts;
use amp_proto::signing::{SignedFields, canonical_string, payload_hash};
use amp_proto::{MessageId, RawPayload};
use serde_json::Value;

const VECTORS: &str = include_str!("../data/test-vectors.json");

fn cases(section: &Value) -> &Vec<Value> {
    section["test_cases"]
        .as_array()
        .expect("section has test_cases")
}

#[test]
fn every_vector_passes() {
    let doc: Value = serde_json::from_str(VECTORS).expect("vectors are JSON");
    let mut ran = 0usize;
    let mut failures = Vec::new();
    for (name, section) in doc.as_object().expect("object") {
        if name.starts_with('_') {
            continue;
        }
        match name.as_str() {
            "address_parsing" => {
                for c in cases(section) {
                    ran += 1;
                    let id = c["id"].as_str().unwrap_or("?");
                    let input = c["input"].as_str().expect("input");
                    let want = &c["expected"];
                    match parse_parts(input) {
                        Ok(p) => {
                            let got = serde_json::json!({
                                "name": p.name, "tenant": p.tenant,
                                "provider": p.provider, "is_local": p.is_local,
                            });
                            if &got != want {
                                failures.push(format!("{id}: got {got}, want {want}"));
                            }
                        }
                        Err(e) => failures.push(format!("{id}: {e}")),
                    }
                }
            }
            "payload_hash" => {
                for c in cases(section) {
                    ran += 1;
                    let id = c["id"].as_str().unwrap_or("?");
                    // Hash the payload from its own raw text, in the vector's key order, so
                    // the sort is ours, not serde's.
                    let raw = serde_json::to_string(&c["input_payload"]).expect("payload");
                    let tree = amp_proto::json::parse(&raw).expect("raw json");
                    let compact = tree.to_canonical(amp_proto::json::CanonicalForm::SORTED);
                    if compact != c["compact_sorted_json"].as_str().expect("compact") {
                        failures.push(format!("{id}: compact form {compact}"));
                    }
                    let hash = payload_hash(&raw).expect("hash");
                    if hash != c["expected_sha256_base64"].as_str().expect("hash") {
                        failures.push(format!("{id}: hash {hash}"));
                    }
                    // A valid payload per spec 04 as well (type and message present).
                    let p = RawPayload::from_json(raw).expect("raw");
                    if let Err(e) = p.validate() {
                        failures.push(format!("{id}: payload rejected: {e}"));
                    }
                }
            }
            "canonical_string" => {
                for c in cases(section) {
                    ran += 1;
                    let id = c["id"].as_str().unwrap_or("?");
                    let i = &c["input"];
                    let s = |k: &str| i[k].as_str().expect("string field");
                    let f = SignedFields {
                        from: s("from"),
                        to: s("to"),
                        subject: s("subject"),
                        priority: s("priority"),
                        in_reply_to: s("in_reply_to"),
                    };
                    let got = canonical_string(&f, s("payload_hash"));
                    if got != c["expected_canonical"].as_str().expect("expected") {
                        failures.push(format!("{id}: {got}"));
                    }
                }
            }
            "message_id_validation" => {
                for c in cases(section) {
                    ran += 1;
                    let id = c["id"].as_str().unwrap_or("?");
                    let input = c["input"].as_str().expect("input");
                    let want = c["expected_valid"].as_bool().expect("bool");
                    if MessageId::is_valid(input) != want {
                        failures.push(format!("{id}: {input:?} valid={}", !want));
                    }
                }
            }
            "scan_status" => {
                for (list, want) in [("valid_values", true), ("invalid_values", false)] {
                    for c in section[list].as_array().expect("values") {
                        ran += 1;
                        let id = c["id"].as_str().unwrap_or("?");
                        let v = c["value"].as_str().expect("value");
                        if amp_proto::message::ScanStatus::parse(v).is_some() != want {
                            failures.push(format!("{id}: {v}"));
                        }
                    }
                }
            }
            other => failures.push(format!("section {other} has no runner")),
        }
    }
    assert!(
        failures.is_empty(),
        "failed vectors:\n{}",
        failures.join("\n")
    );
    // 4 address + 2 hash + 3 canonical + 7 message id + 9 scan status.
    assert_eq!(ran, 25, "vector count changed: update this test");
}
