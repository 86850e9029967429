// The webhook verifier: the provider's formula (the Rust test vector of
// services/delivery/src/webhook.rs), constant-time comparison, bounded clock skew, header
// forms of every framework.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import { signWebhook, verifyWebhook, verifyWebhookRequest, WebhookVerificationError } from "amp-sdk";

const SECRET = "whsec_abc";
const NOW = 1_706_648_400;
const body = JSON.stringify({
  envelope: { id: "msg_1706648400_abc123", from: "alice@acme.example.test", to: "bob@acme.example.test", subject: "Hi", signature: "x" },
  payload: { type: "notification", message: "hello", n: 1.5 },
});

function headers(over: Record<string, string | undefined> = {}) {
  return {
    "X-AMP-Signature": signWebhook(SECRET, NOW, body),
    "X-AMP-Timestamp": String(NOW),
    "X-AMP-Message-Id": "msg_1706648400_abc123",
    "X-AMP-Delivery-Attempt": "2",
    ...over,
  };
}

test("the signature is the provider's formula (Rust vector)", () => {
  assert.equal(signWebhook("whsec_abc", 1_706_648_400, `{"a":1}`), "sha256=3dd4624098d23675d32b72deec8fe31b20b255edc4ebf0a8d3ec00290cde7db1");
  assert.equal(signWebhook(SECRET, NOW, body), `sha256=${createHmac("sha256", SECRET).update(`${NOW}.${body}`).digest("hex")}`);
});

test("a correct delivery verifies and yields its message", () => {
  const d = verifyWebhook(body, headers(), { secret: SECRET, now: NOW * 1000 });
  assert.equal(d.messageId, "msg_1706648400_abc123");
  assert.equal(d.attempt, 2);
  assert.equal(d.timestamp, NOW);
  assert.equal(d.message.text, "hello");
  assert.equal(d.message.via, "webhook");
  assert.equal(d.message.trust, "untrusted", "no local.security in a webhook body: untrusted");
  // Raw bytes work the same, and lowercase Node-style header records.
  const lower = Object.fromEntries(Object.entries(headers()).map(([k, v]) => [k.toLowerCase(), v]));
  assert.equal(verifyWebhook(new TextEncoder().encode(body), lower, { secret: SECRET, now: NOW * 1000 }).messageId, d.messageId);
  // A fetch Headers object, and an uppercase hex signature.
  const h = new Headers(headers({ "X-AMP-Signature": signWebhook(SECRET, NOW, body).toUpperCase().replace("SHA256=", "sha256=") }));
  assert.equal(verifyWebhook(body, h, { secret: SECRET, now: NOW * 1000 }).attempt, 2);
});

test("the timestamp must be within the tolerance, both ways", () => {
  for (const skew of [301, -301]) {
    assert.throws(() => verifyWebhook(body, headers(), { secret: SECRET, now: (NOW + skew) * 1000 }), (e: unknown) => e instanceof WebhookVerificationError && e.code === "webhook_timestamp_skew" && e.status === 401);
  }
  assert.ok(verifyWebhook(body, headers(), { secret: SECRET, now: (NOW + 300) * 1000 }));
  assert.ok(verifyWebhook(body, headers(), { secret: SECRET, now: (NOW + 30) * 1000, toleranceSec: 30 }));
  assert.throws(() => verifyWebhook(body, headers(), { secret: SECRET, now: (NOW + 31) * 1000, toleranceSec: 30 }), /more than 30 s/);
});

test("a replayed signature with a fresh timestamp, a tampered body or a wrong secret fail", () => {
  const fresh = NOW + 1000;
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as WebhookVerificationError).code;
    }
    return "accepted";
  };
  assert.equal(code(() => verifyWebhook(body, headers({ "X-AMP-Timestamp": String(fresh) }), { secret: SECRET, now: fresh * 1000 })), "webhook_signature_invalid");
  assert.equal(code(() => verifyWebhook(body.replace("hello", "hellO"), headers(), { secret: SECRET, now: NOW * 1000 })), "webhook_signature_invalid");
  assert.equal(code(() => verifyWebhook(body, headers(), { secret: "whsec_other", now: NOW * 1000 })), "webhook_signature_invalid");
  assert.equal(code(() => verifyWebhook(body, headers({ "X-AMP-Signature": undefined }), { secret: SECRET, now: NOW * 1000 })), "webhook_signature_missing");
  assert.equal(code(() => verifyWebhook(body, headers({ "X-AMP-Timestamp": "yesterday" }), { secret: SECRET, now: NOW * 1000 })), "webhook_timestamp_invalid");
  assert.equal(code(() => verifyWebhook(body, headers({ "X-AMP-Signature": "sha256=" }), { secret: SECRET, now: NOW * 1000 })), "webhook_signature_invalid");
  assert.equal(code(() => verifyWebhook(body, headers(), { secret: "", now: NOW * 1000 })), "webhook_signature_invalid");
});

test("while rotating, any of several secrets verifies", () => {
  assert.ok(verifyWebhook(body, headers(), { secret: ["whsec_new", SECRET], now: NOW * 1000 }));
  assert.throws(() => verifyWebhook(body, headers(), { secret: ["whsec_new", "whsec_newer"], now: NOW * 1000 }), WebhookVerificationError);
});

test("a signed body that is not a message is a 400", () => {
  const bad = `{"hello":1}`;
  assert.throws(
    () => verifyWebhook(bad, headers({ "X-AMP-Signature": signWebhook(SECRET, NOW, bad) }), { secret: SECRET, now: NOW * 1000 }),
    (e: unknown) => e instanceof WebhookVerificationError && e.status === 400 && e.code === "webhook_body_invalid",
  );
});

test("fetch-style Request handlers", async () => {
  const req = new Request("http://hook.test/amp", { method: "POST", body, headers: headers() });
  const d = await verifyWebhookRequest(req, { secret: SECRET, now: NOW * 1000 });
  assert.equal(d.message.subject, "Hi");
});
