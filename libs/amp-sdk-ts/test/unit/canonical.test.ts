// Canonical JSON and the payload hash, against the Rust implementation's fixtures (jq 1.6
// output that amp-proto also matches) and property checks.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { canonicalJson, canonicalJsonOfText, compareCodePoints, formatNumber, payloadHash } from "amp-sdk";
import { fixture, prng, randomObjectText } from "../support/fixtures.js";

const cases = fixture<{ cases: { raw: string; jq: string; js: string }[] }>("canonical-fixtures.json").cases;

test("the 300 fixtures canonicalise exactly as jq -cS (and amp-proto) do", () => {
  assert.equal(cases.length, 300);
  for (const [i, c] of cases.entries()) assert.equal(canonicalJsonOfText(c.raw), c.jq, `case ${i}: ${c.raw}`);
});

test("the fixtures hash as SHA-256 of the jq form", () => {
  for (const c of cases) {
    assert.equal(payloadHash(c.raw), createHash("sha256").update(c.jq, "utf8").digest("base64"));
  }
});

test("numbers as jq 1.6 prints them (amp-proto's own cases)", () => {
  assert.equal(
    canonicalJsonOfText(`{"b":1.0,"a":[1e3,-0,100000000000000000001,0.00001,0.0001,1e17,1e16,123456789012345678,1.5e300]}`),
    `{"a":[1000,-0,1e+20,1e-05,0.0001,1e+17,1e+16,123456789012345680,1.5e+300],"b":1}`,
  );
  assert.equal(canonicalJsonOfText("[1e400,-1e400]"), "[1.7976931348623157e+308,-1.7976931348623157e+308]");
  assert.equal(canonicalJsonOfText("[0.1,2.5,-3.25e-2,12345.678]"), "[0.1,2.5,-0.0325,12345.678]");
  assert.equal(formatNumber(5e-324), "5e-324");
  assert.equal(formatNumber(1e-7), "1e-07");
  assert.equal(formatNumber(123e-20), "1.23e-18");
  assert.equal(formatNumber(0.001), "0.001");
  assert.equal(formatNumber(1234567890123456), "1234567890123456");
  assert.throws(() => formatNumber(Number.NaN), TypeError);
});

test("strings escaped as jq does; lone surrogates become U+FFFD", () => {
  assert.equal(canonicalJsonOfText(String.raw`["\u007f\u0001é\u2028\"\\\/\n\t😀"]`), '["\\u007f\\u0001é\u2028\\"\\\\/\\n\\t😀"]');
  assert.equal(canonicalJsonOfText(String.raw`"\ud83d\ude00"`), '"😀"');
  assert.equal(canonicalJsonOfText(String.raw`"\ud83dx"`), '"\ufffdx"');
  assert.equal(canonicalJson("\udc00"), '"\ufffd"');
});

test("keys sorted by UTF-8 bytes at every level; duplicates keep the last value", () => {
  assert.equal(canonicalJsonOfText(`{"b":{"z":1,"é":2,"a":3},"a":[{"y":1,"x":2}],"b2":null,"a":0}`), `{"a":0,"b":{"a":3,"z":1,"é":2},"b2":null}`);
  assert.equal(canonicalJsonOfText(`{"b":1,"10":2,"2":3,"a":4,"01":5}`), `{"01":5,"10":2,"2":3,"a":4,"b":1}`);
  // U+E000 sorts before U+1D11E in UTF-8, after it in UTF-16.
  assert.equal(canonicalJson({ "𝄞": 1, "\ue000": 2 }), `{"\ue000":2,"𝄞":1}`);
});

test("compareCodePoints agrees with UTF-8 byte order on random strings", () => {
  const rand = prng(7);
  const alphabet = ["a", "Z", "é", "\u2028", "\ue000", "\uffff", "😀", "𝄞", "\u0000", "~"];
  for (let i = 0; i < 2000; i++) {
    const s = () => Array.from({ length: Math.floor(rand() * 4) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
    const a = s();
    const b = s();
    const bytes = Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)));
    assert.equal(Math.sign(compareCodePoints(a, b)), bytes, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
});

/** `v` with every object's keys in a random order (JSON.stringify keeps insertion order for non-index keys). */
function shuffled(v: unknown, rand: () => number): unknown {
  if (Array.isArray(v)) return v.map((x) => shuffled(x, rand));
  if (typeof v !== "object" || v === null) return v;
  const keys = Object.keys(v).sort(() => rand() - 0.5);
  return Object.fromEntries(keys.map((k) => [k, shuffled((v as Record<string, unknown>)[k], rand)]));
}

test("property: canonical text is JSON, stable, and independent of key order and spacing", () => {
  const rand = prng(20261206);
  for (let i = 0; i < 500; i++) {
    const raw = `{"type":"t","message":"m","context":${randomObjectText(rand)}}`;
    const c = canonicalJsonOfText(raw);
    assert.equal(canonicalJsonOfText(c), c, raw);
    const reordered = JSON.stringify(shuffled(JSON.parse(raw), rand), null, 3);
    // (Through JSON.stringify, as -0 becomes 0 there.)
    assert.equal(payloadHash(reordered), payloadHash(JSON.stringify(JSON.parse(raw))), raw);
  }
});

test("values hash as their JSON text would: -0 kept (a received payload), undefined dropped, toJSON used", () => {
  assert.equal(payloadHash({ type: "t", message: "m", n: -0, u: undefined }), payloadHash(`{"type":"t","message":"m","n":-0}`));
  assert.equal(payloadHash(JSON.parse(`{"n":-0.0,"x":[1e400]}`)), payloadHash(`{"n":-0.0,"x":[1e400]}`));
  assert.equal(canonicalJson({ d: new Date(0) }), `{"d":"1970-01-01T00:00:00.000Z"}`);
  assert.throws(() => payloadHash("{not json"), SyntaxError);
  const deep: unknown[] = [];
  let cur = deep;
  for (let i = 0; i < 200; i++) {
    const next: unknown[] = [];
    cur.push(next);
    cur = next;
  }
  assert.throws(() => canonicalJson(deep), /nested too deeply/);
});
