// The WebSocket against the real ampd: replay and live messages as one iterator, acks and
// routes over the socket, receipts pushed to the sender, and forced reconnects (the network
// cut by a proxy, ampd killed with SIGKILL and restarted) with nothing lost or duplicated.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AmpClient, SocketError, type Agent, type Message, type Subscription, type SubscriptionEvent } from "amp-sdk";
import { Ampd, CuttableProxy, eventually, uniqueName } from "../support/ampd.js";

let ampd: Ampd;
let amp: AmpClient;

before(async () => {
  ampd = await Ampd.start();
  amp = new AmpClient(ampd.url);
});

after(async () => {
  await ampd?.stop();
});

/** Reads a subscription in the background, keeping everything it yields. */
function collect(sub: Subscription) {
  const events: SubscriptionEvent[] = [];
  const done = (async () => {
    for await (const ev of sub) events.push(ev);
  })();
  const messages = () => events.filter((e): e is Extract<SubscriptionEvent, { type: "message" }> => e.type === "message").map((e) => e.message);
  return { events, messages, done };
}

async function pair(): Promise<[Agent, Agent]> {
  return [await amp.register({ tenant: "acme", name: uniqueName("alice") }), await amp.register({ tenant: "acme", name: uniqueName("bob") })];
}

test("replay then live messages in one iterator; ack, route with ref, receipts over the socket", async () => {
  const [alice, bob] = await pair();
  const before1 = await alice.send(bob.address, "queued 1", "before the socket");
  const before2 = await alice.send(bob.address, "queued 2", "before the socket", { form: "envelope" });
  const sub = bob.subscribe();
  const got = collect(sub);
  const info = await sub.ready;
  assert.equal(info.address, bob.address);
  assert.equal(info.pendingCount, 2);
  const live = await alice.send(bob.address, "live", "while connected", { receipt: true });
  assert.equal(live.method, "websocket", "pushed to the open socket");
  await eventually("3 messages", () => (got.messages().length >= 3 ? true : undefined));
  const ms = got.messages();
  assert.deepEqual(ms.map((m) => m.id), [before1.id, before2.id, live.id]);
  assert.deepEqual(ms.map((m) => m.replay), [true, true, false]);
  for (const m of ms) {
    assert.equal(m.trust, "verified");
    assert.ok(m.verify(alice.publicKey));
    assert.match(m.cursor ?? "", /^c_\d+$/);
  }

  // Ack over the socket: the same transition as REST.
  assert.deepEqual(await sub.ack(before1.id), { acknowledged: true, already_acked: false });
  assert.deepEqual(await sub.ack(before1.id), { acknowledged: true, already_acked: true });
  await assert.rejects(sub.ack("msg_1_nothere"), (e: unknown) => e instanceof SocketError && e.code === "not_found");

  // Alice listens too: route over her socket, and receive bob's read receipt live.
  const aliceSub = alice.subscribe();
  const aliceGot = collect(aliceSub);
  await aliceSub.ready;
  await bob.read(live.id);
  await eventually("read receipt", () => aliceGot.events.find((e) => e.type === "read" && e.receipt.id === live.id));
  const routed = await aliceSub.route(bob.address, "over ws", { type: "request", message: "sent as a route frame", context: { n: 1 } }, { priority: "urgent" });
  assert.equal(routed.status, "delivered");
  await eventually("routed message", () => got.messages().find((m) => m.id === routed.id));
  const viaWs = got.messages().find((m) => m.id === routed.id)!;
  assert.equal(viaWs.priority, "urgent");
  assert.ok(viaWs.verify(alice.publicKey));
  await assert.rejects(aliceSub.route(`nobody@acme.example.test`, "x", "y"), (e: unknown) => e instanceof SocketError && e.code === "invalid_recipient");

  for (const m of got.messages()) await sub.ack(m.id);
  assert.equal((await bob.count()).count, 0);
  await sub.close();
  await aliceSub.close();
  await got.done;
  await aliceGot.done;
});

test("a network cut: the subscription reconnects, nothing is lost, nothing reaches the app twice", async () => {
  const [alice, bob] = await pair();
  const proxy = await CuttableProxy.start(ampd.port);
  try {
    const viaProxy = new AmpClient(proxy.url).agent(bob.identity);
    const sub = viaProxy.subscribe({ minReconnectDelayMs: 50, maxReconnectDelayMs: 200 });
    const got = collect(sub);
    await sub.ready;
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push((await alice.send(bob.address, `first ${i}`, "x")).id);
    await eventually("first 5", () => (got.messages().length === 5 ? true : undefined));
    // Two are acked before the cut; three stay pending and will be replayed.
    await sub.ack(sent[0]!);
    await sub.ack(sent[1]!);

    assert.ok(proxy.cut() > 0, "connections were cut");
    // Sent while the socket is down (or reconnecting).
    for (let i = 0; i < 5; i++) sent.push((await alice.send(bob.address, `second ${i}`, "y")).id);
    await eventually("all 10", () => (got.messages().length >= 10 ? true : undefined), 15_000);
    await new Promise((r) => setTimeout(r, 300)); // any straggling duplicate would show now

    const ids = got.messages().map((m) => m.id);
    assert.deepEqual([...ids].sort(), [...sent].sort(), "every message exactly once");
    assert.equal(new Set(ids).size, ids.length);
    assert.ok(sub.stats.connects >= 2, "reconnected");
    assert.ok(sub.stats.duplicatesDropped >= 3, `the 3 unacked replays were dropped (${sub.stats.duplicatesDropped})`);
    const types = got.events.map((e) => e.type);
    assert.ok(types.includes("disconnected"));
    assert.equal(types.filter((t) => t === "connected").length, sub.stats.connects);

    for (const id of sent.slice(2)) await sub.ack(id);
    assert.equal((await bob.count()).count, 0);
    await sub.close();
    await got.done;
  } finally {
    await proxy.close();
  }
});

test("the provider killed with SIGKILL and restarted: the subscription resumes without loss or duplicates", async () => {
  const [alice, bob] = await pair();
  const sub = bob.subscribe({ minReconnectDelayMs: 100, maxReconnectDelayMs: 500 });
  const got = collect(sub);
  await sub.ready;
  const sent: string[] = [];
  for (let i = 0; i < 3; i++) sent.push((await alice.send(bob.address, `before ${i}`, "x")).id);
  await eventually("3 before the crash", () => (got.messages().length === 3 ? true : undefined));
  await sub.ack(sent[0]!);

  await ampd.restart();
  for (let i = 0; i < 3; i++) sent.push((await alice.send(bob.address, `after ${i}`, "y")).id);
  await eventually("6 in all", () => (got.messages().length >= 6 ? true : undefined), 20_000);
  await new Promise((r) => setTimeout(r, 300));
  const ids: string[] = got.messages().map((m: Message) => m.id);
  assert.deepEqual([...ids].sort(), [...sent].sort());
  assert.ok(sub.stats.duplicatesDropped >= 2, "the unacked ones came back as replays and were dropped");
  for (const id of sent.slice(1)) await sub.ack(id);
  assert.equal((await bob.count()).count, 0);
  await sub.close();
  await got.done;
});
