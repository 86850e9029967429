// The spec's normative test vectors (test/fixtures/test-vectors.json, provenance in its
// README): every case of every section passes, and a section this file does not know fails.

import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalJson, canonicalString, isValidMessageId, isValidScanStatus, parseAddressParts, payloadHash } from "amp-sdk";
import { fixture } from "../support/fixtures.js";

interface Vectors {
  address_parsing: { test_cases: { id: string; input: string; expected: Record<string, unknown> }[] };
  payload_hash: { test_cases: { id: string; input_payload: unknown; compact_sorted_json: string; expected_sha256_base64: string }[] };
  canonical_string: { test_cases: { id: string; input: Record<string, string>; expected_canonical: string }[] };
  message_id_validation: { test_cases: { id: string; input: string; expected_valid: boolean }[] };
  scan_status: { valid_values: { id: string; value: string }[]; invalid_values: { id: string; value: string }[] };
}

const vectors = fixture<Vectors & Record<string, unknown>>("test-vectors.json");
const KNOWN = new Set(["address_parsing", "payload_hash", "canonical_string", "message_id_validation", "scan_status"]);

test("every section of the vectors is one this suite runs", () => {
  const sections = Object.keys(vectors).filter((k) => !k.startsWith("_"));
  assert.deepEqual(sections.filter((s) => !KNOWN.has(s)), [], "new sections in the vectors: teach this test to run them");
  assert.equal(vectors["_version"], "1.1");
});

test("address_parsing", () => {
  assert.equal(vectors.address_parsing.test_cases.length, 4);
  for (const c of vectors.address_parsing.test_cases) {
    assert.deepEqual(parseAddressParts(c.input), c.expected, c.id);
  }
});

test("payload_hash", () => {
  assert.equal(vectors.payload_hash.test_cases.length, 2);
  for (const c of vectors.payload_hash.test_cases) {
    assert.equal(canonicalJson(c.input_payload), c.compact_sorted_json, c.id);
    assert.equal(payloadHash(c.input_payload), c.expected_sha256_base64, c.id);
    // The same from JSON text in another key order and with spacing.
    assert.equal(payloadHash(JSON.stringify(c.input_payload, null, 2)), c.expected_sha256_base64, c.id);
  }
});

test("canonical_string", () => {
  assert.equal(vectors.canonical_string.test_cases.length, 3);
  for (const c of vectors.canonical_string.test_cases) {
    const { payload_hash, ...fields } = c.input;
    assert.equal(canonicalString(fields as never, payload_hash!), c.expected_canonical, c.id);
  }
  // canon-001's hash is hash-001's payload: the two sections agree end to end.
  assert.equal(vectors.canonical_string.test_cases[0]!.input["payload_hash"], payloadHash({ type: "notification", message: "Hello" }));
});

test("message_id_validation", () => {
  assert.equal(vectors.message_id_validation.test_cases.length, 7);
  for (const c of vectors.message_id_validation.test_cases) assert.equal(isValidMessageId(c.input), c.expected_valid, c.id);
});

test("scan_status", () => {
  for (const v of vectors.scan_status.valid_values) assert.ok(isValidScanStatus(v.value), v.id);
  for (const v of vectors.scan_status.invalid_values) assert.ok(!isValidScanStatus(v.value), v.id);
});
