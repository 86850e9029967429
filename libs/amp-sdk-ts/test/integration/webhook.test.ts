// A webhook delivered by ampd to a local Node HTTP server (loopback is allowed by the test
// config's `[ingest.outbound] allow_private`) and verified with the SDK: the listener of
// amp-sdk/node, and verifyWebhook over the raw body. A failing handler gets a retry.

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { after, before, test } from "node:test";
import { AmpClient, verifyWebhook, type WebhookDelivery } from "amp-sdk";
import { webhookListener } from "amp-sdk/node";
import { Ampd, eventually, uniqueName } from "../support/ampd.js";

let ampd: Ampd;
let amp: AmpClient;
const servers: Server[] = [];

before(async () => {
  ampd = await Ampd.start();
  amp = new AmpClient(ampd.url);
});

after(async () => {
  for (const s of servers) s.close();
  await ampd?.stop();
});

async function listen(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const a = server.address();
  if (typeof a !== "object" || !a) throw new Error("no address");
  return `http://127.0.0.1:${a.port}/amp/webhook`;
}

test("a webhook delivery verifies with the SDK and carries the signed message", async () => {
  const secret = `whsec_${uniqueName("s")}`;
  const got: WebhookDelivery[] = [];
  const url = await listen(webhookListener({ secret }, (d) => void got.push(d)));
  const alice = await amp.register({ tenant: "acme", name: uniqueName("alice") });
  const carol = await amp.register({ tenant: "acme", name: uniqueName("carol"), delivery: { webhook_url: url, webhook_secret: secret } });
  const r = await alice.send(carol.address, "Hooked", { type: "notification", message: "via webhook", context: { n: 1.5 } });
  assert.equal(r.method, "webhook");
  assert.equal(r.basis, "webhook_2xx");
  const d = await eventually("the webhook", () => got[0]);
  assert.equal(d.messageId, r.id);
  assert.equal(d.attempt, 1);
  assert.equal(d.message.id, r.id);
  assert.equal(d.message.from, alice.address);
  assert.ok(d.message.verify(alice.publicKey), "the sender's signature verifies");
  assert.equal(d.message.trust, "verified", "the webhook body carries local.security: same tenant, signature checked");
  assert.equal(await carol.assessTrust(d.message), "verified", "until checked: same tenant, valid signature");
  const outsider = await amp.register({ tenant: "globex", name: uniqueName("out") });
  assert.equal(await outsider.assessTrust(d.message), "external");
  assert.equal(await carol.assessTrust(d.message, outsider.publicKey), "untrusted", "a signature by another key");
  // A webhook is not an ack: the message stays pending until acked.
  assert.equal((await carol.count()).count, 1);
  await carol.ack(r.id);
});

test("verifyWebhook over the raw body of any server; a failing handler gets a retry (attempt 2)", async () => {
  const secret = "whsec_raw_body";
  const seen: { attempt: number; id: string }[] = [];
  const url = await listen((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        const d = verifyWebhook(Buffer.concat(chunks), req.headers, { secret });
        seen.push({ attempt: d.attempt, id: d.messageId });
        res.writeHead(d.attempt === 1 ? 503 : 200).end();
      } catch {
        res.writeHead(401).end();
      }
    });
  });
  const alice = await amp.register({ tenant: "acme", name: uniqueName("alice") });
  const dan = await amp.register({ tenant: "acme", name: uniqueName("dan"), delivery: { webhook_url: url, webhook_secret: secret } });
  const r = await alice.send(dan.address, "retry", "first attempt fails");
  await eventually("two attempts", () => (seen.length >= 2 ? true : undefined));
  assert.deepEqual(seen.slice(0, 2), [
    { attempt: 1, id: r.id },
    { attempt: 2, id: r.id },
  ]);
});

test("a listener with the wrong secret refuses the delivery (401), which the provider does not retry", async () => {
  let calls = 0;
  const listener = webhookListener({ secret: "whsec_wrong" }, () => assert.fail("must not be called"));
  const url = await listen((req, res) => {
    calls++;
    listener(req, res);
  });
  const alice = await amp.register({ tenant: "acme", name: uniqueName("alice") });
  const erin = await amp.register({ tenant: "acme", name: uniqueName("erin"), delivery: { webhook_url: url, webhook_secret: "whsec_right" } });
  await alice.send(erin.address, "refused", "x");
  await eventually("the attempt", () => (calls >= 1 ? true : undefined));
  await new Promise((r) => setTimeout(r, 1200)); // past the test config's retry delays
  assert.equal(calls, 1, "4xx is not retried");
  assert.equal((await erin.count()).count, 1, "the message stays in the mailbox");
});
