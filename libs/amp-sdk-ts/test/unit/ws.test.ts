// The WebSocket client against a scripted socket: the auth frame, replay and live messages
// as one iterator, duplicates dropped after a reconnect, acks and routes by ref, pings,
// fatal closes.

import assert from "node:assert/strict";
import { test } from "node:test";
import { AmpClient, PrivateKey, SocketClosedError, SocketError, type SubscriptionEvent, type WebSocketConstructor } from "amp-sdk";

/** One fake socket: records what the client sends; the test plays the provider. */
class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closed: { code: number | undefined; reason: string | undefined } | undefined;
  readonly #listeners = new Map<string, ((ev: unknown) => void)[]>();

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  addEventListener(type: string, l: (ev: unknown) => void): void {
    this.#listeners.set(type, [...(this.#listeners.get(type) ?? []), l]);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closed = { code, reason };
  }
  // The provider's side.
  open(): void {
    this.readyState = 1;
    this.#emit("open", {});
  }
  frame(f: unknown): void {
    this.#emit("message", { data: JSON.stringify(f) });
  }
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.#emit("close", { code, reason });
  }
  #emit(type: string, ev: unknown): void {
    for (const l of this.#listeners.get(type) ?? []) l(ev);
  }
}

const item = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  envelope: { id, from: "alice@acme.example.test", to: "bob@acme.example.test", subject: id, signature: "" },
  payload: { type: "notification", message: id },
  local: { security: { trust: "verified", injection_flags: [], wrapped: false } },
  ...extra,
});

function bob(fetch?: typeof globalThis.fetch) {
  const client = new AmpClient("http://provider.test:1", { WebSocket: FakeSocket as unknown as WebSocketConstructor, ...(fetch ? { fetch } : {}), retry: false });
  return client.agent({
    version: 1,
    provider_url: "http://provider.test:1/v1",
    registration: { address: "bob@acme.example.test", agent_id: "agt_2", api_key: "amp_live_sk_bob", provider: {} },
    private_key: PrivateKey.generate().toPem(),
  });
}

const tick = () => new Promise((r) => setTimeout(r, 5));
async function socket(n: number): Promise<FakeSocket> {
  for (let i = 0; i < 400 && FakeSocket.all.length <= n; i++) await tick();
  const s = FakeSocket.all[n];
  assert.ok(s, `socket ${n} was opened`);
  return s;
}

async function take(it: AsyncIterator<SubscriptionEvent>, n: number): Promise<SubscriptionEvent[]> {
  const out: SubscriptionEvent[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

test("auth first, then replay and live messages; a reconnect replays, nothing reaches the app twice", async () => {
  FakeSocket.all = [];
  const sub = bob().subscribe({ minReconnectDelayMs: 1, maxReconnectDelayMs: 5 });
  const it = sub[Symbol.asyncIterator]();
  const s0 = await socket(0);
  assert.equal(s0.url, "ws://provider.test:1/v1/ws", "no key in the URL");
  s0.open();
  assert.deepEqual(s0.sent[0], { type: "auth", token: "amp_live_sk_bob" });
  s0.frame({ type: "connected", data: { address: "bob@acme.example.test", pending_count: 2 } });
  assert.deepEqual(await sub.ready, { address: "bob@acme.example.test", pendingCount: 2 });
  s0.frame({ type: "message.new", replay: true, data: item("msg_1_a") });
  s0.frame({ type: "message.new", replay: true, data: item("msg_2_b") });
  s0.frame({ type: "message.new", replay: false, data: item("msg_3_c") });
  const first = await take(it, 4);
  assert.deepEqual(first.map((e) => e.type), ["connected", "message", "message", "message"]);
  const m1 = first[1]!.type === "message" ? first[1]!.message : undefined;
  assert.equal(m1?.replay, true);
  assert.equal(m1?.trust, "verified");
  assert.equal(m1?.via, "websocket");

  // The network drops; the provider replays the unacked 1..3 and a new 4.
  s0.drop(1006);
  const s1 = await socket(1);
  s1.open();
  assert.deepEqual(s1.sent[0], { type: "auth", token: "amp_live_sk_bob" });
  s1.frame({ type: "connected", data: { address: "bob@acme.example.test", pending_count: 4 } });
  for (const id of ["msg_1_a", "msg_2_b", "msg_3_c", "msg_4_d"]) s1.frame({ type: "message.new", replay: true, data: item(id) });
  s1.frame({ type: "message.read", data: { id: "msg_9_z", read_at: "2026-01-01T00:00:00Z" } });
  const second = await take(it, 4);
  assert.deepEqual(second.map((e) => e.type), ["disconnected", "connected", "message", "read"]);
  assert.equal(second[1]!.type === "connected" && second[1]!.reconnected, true);
  assert.equal(second[2]!.type === "message" && second[2]!.message.id, "msg_4_d");
  assert.deepEqual(sub.stats, { connects: 2, duplicatesDropped: 3, messages: 4 });
  await sub.close();
  assert.equal((await it.next()).done, true);
  assert.equal(s1.closed?.code, 1000);
});

test("acks and routes carry a ref and resolve on their answer; a route in flight is re-sent after a reconnect", async () => {
  FakeSocket.all = [];
  const sub = bob().subscribe({ minReconnectDelayMs: 1, maxReconnectDelayMs: 5 });
  const s0 = await socket(0);
  s0.open();
  s0.frame({ type: "connected", data: {} });
  await sub.ready;
  const ack = sub.ack("msg_1_a");
  const ackFrame = s0.sent[1]!;
  assert.equal(ackFrame["type"], "message.ack");
  assert.equal(ackFrame["id"], "msg_1_a");
  s0.frame({ type: "message.acked", ref: ackFrame["ref"], data: { id: "msg_1_a", acknowledged: true, already_acked: true } });
  assert.deepEqual(await ack, { acknowledged: true, already_acked: true });

  const bad = sub.ack("msg_x");
  s0.frame({ type: "error", error: "not_found", message: "no such message", ref: s0.sent[2]!["ref"] });
  await assert.rejects(bad, (e: unknown) => e instanceof SocketError && e.code === "not_found");

  const routed = sub.route("alice@acme.example.test", "hi", "hello", { receipt: true });
  await tick();
  const r0 = s0.sent[3]!;
  assert.equal(r0["type"], "route");
  const data = r0["data"] as Record<string, unknown>;
  assert.equal(data["to"], "alice@acme.example.test");
  assert.deepEqual(data["options"], { receipt: true });
  s0.drop(1006);
  const s1 = await socket(1);
  s1.open();
  s1.frame({ type: "connected", data: {} });
  await tick();
  const r1 = s1.sent[1]!;
  assert.deepEqual(r1, r0, "the same frame (same id, signature, ref) is sent again");
  s1.frame({ type: "route.result", ref: r1["ref"], data: { id: data["id"], status: "queued" } });
  assert.deepEqual(await routed, { id: data["id"], status: "queued" });
  await sub.close();
});

test("an ack while disconnected goes over REST", async () => {
  FakeSocket.all = [];
  const calls: string[] = [];
  const fetch = (async (url: string, init: RequestInit) => {
    calls.push(`${init.method} ${url}`);
    return new Response(JSON.stringify({ acknowledged: true, already_acked: false }), { status: 200 });
  }) as unknown as typeof globalThis.fetch;
  const sub = bob(fetch).subscribe();
  await socket(0);
  assert.deepEqual(await sub.ack("msg_7_f"), { acknowledged: true, already_acked: false });
  assert.deepEqual(calls, ["DELETE http://provider.test:1/v1/messages/pending/msg_7_f"]);
  await sub.close();
});

test("unauthorized is fatal: ready rejects and the iterator throws", async () => {
  FakeSocket.all = [];
  const sub = bob().subscribe({ minReconnectDelayMs: 1 });
  const s0 = await socket(0);
  s0.open();
  s0.frame({ type: "error", error: "unauthorized", message: "Invalid or expired API key" });
  s0.drop(4001, "unauthorized");
  await assert.rejects(sub.ready, (e: unknown) => e instanceof SocketError && e.code === "unauthorized");
  await assert.rejects(sub[Symbol.asyncIterator]().next(), SocketError);
  assert.equal(FakeSocket.all.length, 1, "no reconnect");
  const sub2 = bob().subscribe({ minReconnectDelayMs: 1 });
  const s1 = await socket(1);
  s1.open();
  s1.drop(4001, "unauthorized");
  await assert.rejects(sub2.ready, (e: unknown) => e instanceof SocketClosedError && e.closeCode === 4001);
});

test("a silent socket is replaced after the pong timeout; the connect timeout applies too", async () => {
  FakeSocket.all = [];
  const sub = bob().subscribe({ pingIntervalMs: 20, pongTimeoutMs: 30, minReconnectDelayMs: 1, maxReconnectDelayMs: 2, connectTimeoutMs: 100 });
  const s0 = await socket(0);
  s0.open();
  s0.frame({ type: "connected", data: {} });
  await sub.ready;
  const s1 = await socket(1);
  assert.ok(s0.sent.some((f) => f["type"] === "ping"), "pinged");
  assert.equal(s0.closed?.code, 4000);
  // s1 never answers: replaced after connectTimeoutMs.
  s1.open();
  const s2 = await socket(2);
  assert.equal(s1.closed?.code, 4000);
  s2.open();
  s2.frame({ type: "connected", data: {} });
  await sub.close();
});

test("breaking out of for-await closes the subscription; abort signals close it too", async () => {
  FakeSocket.all = [];
  const sub = bob().subscribe();
  const s0 = await socket(0);
  s0.open();
  s0.frame({ type: "connected", data: {} });
  s0.frame({ type: "message.new", data: item("msg_1_a") });
  for await (const m of sub.messages()) {
    assert.equal(m.id, "msg_1_a");
    break;
  }
  assert.ok(sub.closed);
  assert.equal(s0.closed?.code, 1000);
  const ctrl = new AbortController();
  const sub2 = bob().subscribe({ signal: ctrl.signal });
  await socket(1);
  ctrl.abort();
  assert.ok(sub2.closed);
});
