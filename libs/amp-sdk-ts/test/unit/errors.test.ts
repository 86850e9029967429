// Errors: the spec body to typed classes (code, status, field, Retry-After), and the retry
// policy (only what is safe, with backoff, honouring Retry-After), with a scripted fetch.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AmpClient,
  ApiError,
  ConflictError,
  ErrorCode,
  ForbiddenError,
  GoneError,
  isAmpError,
  NotFoundError,
  parseRetryAfter,
  PrivateKey,
  RateLimitedError,
  ServerError,
  TimeoutError,
  TransportError,
  UnauthorizedError,
  ValidationError,
  type Identity,
} from "amp-sdk";

type Step = { status: number; body?: unknown; headers?: Record<string, string> } | "network" | "hang";

/** A fetch that answers from a script and records what it was asked. */
function scripted(steps: Step[]) {
  const calls: { method: string; url: string; body: string | undefined; headers: Record<string, string> }[] = [];
  const fetch = (async (url: string, init: RequestInit) => {
    calls.push({ method: init.method ?? "GET", url, body: init.body as string | undefined, headers: init.headers as Record<string, string> });
    const step = steps.shift() ?? { status: 500, body: { error: "internal_error", message: "script exhausted" } };
    if (step === "network") throw new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } });
    if (step === "hang") {
      return new Promise<Response>((_, reject) => init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    }
    const body = step.body === undefined ? "" : typeof step.body === "string" ? step.body : JSON.stringify(step.body);
    return new Response(body, { status: step.status, headers: { "content-type": "application/json", ...step.headers } });
  }) as unknown as typeof globalThis.fetch;
  return { fetch, calls };
}

const fastRetry = { minDelayMs: 1, maxDelayMs: 5, maxRetryAfterMs: 1500 };

function agentWith(fetch: typeof globalThis.fetch, retry: object = fastRetry, timeoutMs = 30_000) {
  const client = new AmpClient("http://provider.test:1", { fetch, retry, timeoutMs });
  return client.agent({
    version: 1,
    provider_url: "http://provider.test:1/v1",
    registration: { address: "alice@acme.example.test", agent_id: "agt_1", api_key: "amp_live_sk_x", provider: {} },
    private_key: PrivateKey.generate().toPem(),
  });
}

test("the spec error body becomes a typed error with code, status, field and Retry-After", async () => {
  const cases: [number, unknown, Record<string, string>, new (...a: never[]) => ApiError, string][] = [
    [400, { error: "invalid_field", message: "bad priority", field: "priority" }, {}, ValidationError, "invalid_field"],
    [401, { error: "unauthorized", message: "no" }, {}, UnauthorizedError, "unauthorized"],
    [403, { error: "signature_invalid", message: "no" }, {}, ForbiddenError, "signature_invalid"],
    [404, { error: "not_found", message: "recipient not found", field: "to" }, {}, NotFoundError, "not_found"],
    [409, { error: "name_taken", message: "taken", suggestions: ["a-1"] }, {}, ConflictError, "name_taken"],
    [410, { error: "cursor_expired", message: "gone" }, {}, GoneError, "cursor_expired"],
    [429, { error: "rate_limited", message: "slow", retry_after: 7 }, { "retry-after": "60" }, RateLimitedError, "rate_limited"],
    [507, { error: "mailbox_full", message: "full" }, {}, ServerError, "mailbox_full"],
    [502, "<html>bad gateway</html>", {}, ServerError, "http_502"],
  ];
  for (const [status, body, headers, cls, code] of cases) {
    const { fetch } = scripted([{ status, body, headers }]);
    const a = agentWith(fetch, { retries: 0 });
    const e = await a.count().then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(e instanceof cls, `${status}: ${String(e)}`);
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, status);
    assert.equal(e.code, code);
    assert.ok(isAmpError(e, code));
    if (status === 400) assert.equal(e.field, "priority");
    if (status === 429) assert.equal(e.retryAfter, 60, "the header wins over the body");
    if (status === 409) assert.deepEqual((e.body as { suggestions: string[] }).suggestions, ["a-1"]);
    if (status === 502) assert.equal(e.message, "<html>bad gateway</html>");
    assert.match(e.request ?? "", /GET http:\/\/provider\.test:1\/v1\/messages\/pending\/count/);
  }
  assert.equal(ErrorCode.CursorExpired, "cursor_expired");
});

test("Retry-After: seconds or an HTTP date", () => {
  assert.equal(parseRetryAfter("3"), 3);
  assert.equal(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString(), Date.now()), 10);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter(null), undefined);
});

test("a 429 is retried after Retry-After, even for a request that is not idempotent", async () => {
  const { fetch, calls } = scripted([{ status: 429, body: { error: "rate_limited", message: "x" }, headers: { "retry-after": "1" } }, { status: 200, body: { read_receipt_sent: true } }]);
  const a = agentWith(fetch);
  const t0 = Date.now();
  assert.deepEqual(await a.read("msg_1_a"), { read_receipt_sent: true });
  assert.ok(Date.now() - t0 >= 950, "waited for Retry-After");
  assert.equal(calls.length, 2);
});

test("a Retry-After longer than maxRetryAfterMs reaches the caller at once", async () => {
  const { fetch, calls } = scripted([{ status: 429, body: { error: "rate_limited", message: "x" }, headers: { "retry-after": "60" } }]);
  const e = await agentWith(fetch).count().catch((e: unknown) => e);
  assert.ok(e instanceof RateLimitedError);
  assert.equal(e.retryAfter, 60);
  assert.equal(calls.length, 1);
});

test("transport errors and 503 are retried for idempotent calls only", async () => {
  {
    const { fetch, calls } = scripted(["network", { status: 503, body: { error: "service_unavailable", message: "x" } }, { status: 200, body: { count: 0 } }]);
    assert.deepEqual(await agentWith(fetch).count(), { count: 0 });
    assert.equal(calls.length, 3);
  }
  {
    // A read receipt sent twice would be two receipts: not retried.
    const { fetch, calls } = scripted(["network"]);
    const e = await agentWith(fetch).read("msg_1_a").catch((e: unknown) => e);
    assert.ok(e instanceof TransportError);
    assert.equal(e.code, "transport");
    assert.match(e.message, /ECONNREFUSED/);
    assert.equal(calls.length, 1);
  }
  {
    const { fetch, calls } = scripted([{ status: 503, body: { error: "service_unavailable", message: "x" } }]);
    const e = await agentWith(fetch).read("msg_1_a").catch((e: unknown) => e);
    assert.ok(e instanceof ServerError);
    assert.equal(calls.length, 1);
  }
  {
    // Registration is never retried on a lost answer (it would meet name_taken).
    const { fetch, calls } = scripted(["network"]);
    const client = new AmpClient("http://provider.test:1", { fetch, retry: fastRetry });
    await assert.rejects(client.register({ tenant: "acme", name: "alice" }), TransportError);
    assert.equal(calls.length, 1);
  }
});

test("a route is retried with the very same body (same id, signature and idempotency key)", async () => {
  const { fetch, calls } = scripted(["network", { status: 502, body: "bad gateway" }, { status: 200, body: { id: "msg_1_a", status: "queued" } }]);
  const r = await agentWith(fetch).send("bob@acme.example.test", "hi", "hello");
  assert.equal(r.status, "queued");
  assert.equal(calls.length, 3);
  assert.equal(new Set(calls.map((c) => c.body)).size, 1);
  const body = JSON.parse(calls[0]!.body!);
  assert.match(body.id, /^msg_\d+_[0-9a-f]{16}$/);
  assert.match(body.idempotency_key, /^idk_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(calls[0]!.headers["authorization"], "Bearer amp_live_sk_x");
  assert.equal(calls[0]!.headers["content-type"], "application/json");
});

test("retries give up after `retries`, and a timeout is a TimeoutError", async () => {
  {
    const { fetch, calls } = scripted(["network", "network", "network", "network", "network"]);
    await assert.rejects(agentWith(fetch, { ...fastRetry, retries: 2 }).count(), TransportError);
    assert.equal(calls.length, 3);
  }
  {
    const { fetch } = scripted(["hang"]);
    const e = await agentWith(fetch, { retries: 0 }, 50).count().catch((e: unknown) => e);
    assert.ok(e instanceof TimeoutError, String(e));
    assert.equal(e.code, "timeout");
  }
});

test("an aborted request is not retried and rejects with the abort reason", async () => {
  const { fetch, calls } = scripted(["hang", { status: 200, body: {} }]);
  const ctrl = new AbortController();
  const p = agentWith(fetch).pending({ signal: ctrl.signal, wait: 5 });
  setTimeout(() => ctrl.abort(new Error("stop")), 20);
  await assert.rejects(p, /stop/);
  assert.equal(calls.length, 1);
});

test("URLs: the API root, encoded path segments, long-poll query", async () => {
  const { fetch, calls } = scripted([{ status: 200, body: { acknowledged: true } }, { status: 200, body: { messages: [], count: 0, remaining: 0, next_cursor: "c_4" } }]);
  const a = agentWith(fetch);
  await a.ack("a/b?c");
  assert.equal(calls[0]!.url, "http://provider.test:1/v1/messages/pending/a%2Fb%3Fc");
  assert.equal(calls[0]!.method, "DELETE");
  const page = await a.pending({ after: "c_3", wait: 99, limit: 5 });
  assert.equal(calls[1]!.url, "http://provider.test:1/v1/messages/pending?limit=5&after=c_3&wait=30");
  assert.equal(page.nextCursor, "c_4");
  for (const [base, api, ws] of [
    ["http://127.0.0.1:8080", "http://127.0.0.1:8080/v1", "ws://127.0.0.1:8080/v1/ws"],
    ["https://api.x.test/v1/", "https://api.x.test/v1", "wss://api.x.test/v1/ws"],
    ["https://x.test/api/v1", "https://x.test/api/v1", "wss://x.test/api/v1/ws"],
    ["http://x.test/prefix?q=1#f", "http://x.test/prefix/v1", "ws://x.test/prefix/v1/ws"],
  ] as const) {
    const c = new AmpClient(base, { fetch });
    assert.equal(c.apiUrl.href, api);
    assert.equal(c.wsUrl.href, ws);
  }
  assert.throws(() => new AmpClient("ftp://x"), /http/);
  assert.throws(() => new AmpClient("not a url"), /not a URL/);
});

test("identities never print their secrets", () => {
  const { fetch } = scripted([]);
  const id: Identity = agentWith(fetch).identity;
  assert.ok(!JSON.stringify(id).includes("amp_live_sk_x"));
  assert.ok(!String(id).includes("amp_live_sk_x"));
  assert.ok(JSON.stringify(id.toData()).includes("amp_live_sk_x"));
});
