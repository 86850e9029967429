//! Our canonical serialisations against what jq 1.6 and Node print for the same raw text.

use amp_proto::json::{CanonicalForm, parse};
use serde_json::Value;

const FIXTURES: &str = include_str!("../data/canonical-fixtures.json");

#[test]
fn sorted_forms_match_jq_and_node() {
    let doc: Value = serde_json::from_str(FIXTURES).expect("fixtures are JSON");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 300);
    for c in cases {
        let raw = c["raw"].as_str().expect("raw");
        let tree = parse(raw).expect("fixture parses");
        assert_eq!(
            tree.to_canonical(CanonicalForm::SORTED),
            c["jq"].as_str().expect("jq"),
            "jq form of {raw}"
        );
        assert_eq!(
            tree.to_canonical(CanonicalForm::SORTED_JS),
            c["js"].as_str().expect("js"),
            "JSON.stringify form of {raw}"
        );
    }
}
