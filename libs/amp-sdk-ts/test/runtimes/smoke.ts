// A smoke test that runs unchanged in Deno and Bun (and Node): it uses only the SDK and
// Web APIs (fetch, WebSocket, TextEncoder, crypto). Argument: the provider URL. Prints one
// JSON line with what it saw; runtimes.test.ts checks it.

import { AmpClient, payloadHash, PrivateKey, signWebhook, verifyWebhook } from "amp-sdk";

declare const Deno: { args: string[]; version: { deno: string } } | undefined;
declare const Bun: { version: string } | undefined;
declare const process: { argv: string[]; versions: { node?: string } } | undefined;

const url = typeof Deno !== "undefined" ? Deno.args[0]! : process!.argv[2]!;
const runtime = typeof Deno !== "undefined" ? `deno ${Deno.version.deno}` : typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process!.versions.node}`;
const suffix = `${runtime.split(" ")[0]}-${Date.now() % 1_000_000}`;

const amp = new AmpClient(url);
const info = await amp.info();
const alice = await amp.register({ tenant: "acme", name: `alice-${suffix}` });
const bob = await amp.register({ tenant: "acme", name: `bob-${suffix}`, key: PrivateKey.generate() });

// Pickup: flat and envelope bodies, signatures checked.
await alice.send(bob.address, "flat", { type: "request", message: "hello from the flat body", context: { n: 1.5 } });
await alice.send(bob.address, "envelope", "hello from the envelope body", { form: "envelope" });
const page = await bob.pending();
const verified = page.messages.map((m) => m.verify(alice.publicKey));
for (const m of page.messages) await bob.ack(m.id);

// WebSocket: the runtime's own WebSocket class, a live message, an ack over the socket.
const sub = bob.subscribe();
await sub.ready;
const sent = await alice.send(bob.address, "live", "over the socket");
let live: { id: string; trust: string; verified: boolean } | undefined;
for await (const m of sub.messages()) {
  live = { id: m.id, trust: m.trust, verified: m.verify(alice.publicKey) };
  await sub.ack(m.id);
  break;
}

// Webhook verification with the runtime's crypto.
const body = JSON.stringify({ envelope: { id: "msg_1_a", from: alice.address, to: bob.address, subject: "s", signature: "" }, payload: { type: "t", message: "m" } });
const ts = Math.floor(Date.now() / 1000);
const hook = verifyWebhook(body, new Headers({ "x-amp-signature": signWebhook("whsec_x", ts, body), "x-amp-timestamp": String(ts) }), { secret: "whsec_x" });

console.log(
  JSON.stringify({
    runtime,
    globalWebSocket: typeof (globalThis as { WebSocket?: unknown }).WebSocket === "function",
    provider: info.provider,
    pickup: page.messages.map((m) => m.subject),
    verified,
    live,
    sentId: sent.id,
    count: (await bob.count()).count,
    webhook: hook.message.text,
    hash: payloadHash({ type: "notification", message: "Hello" }),
  }),
);
