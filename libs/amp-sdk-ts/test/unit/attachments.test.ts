// Attachments are written against amp-spec-next's API, which our provider does not serve
// yet: the request sequence is checked against a scripted provider here (the integration
// tests check that ampd, which does not advertise them, gets none).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { afpAttachment, AmpClient, attachmentDigest, checkFilename, digestMatches, InvalidInputError, PrivateKey, UnsupportedError, verifyMessage } from "amp-sdk";

interface Call {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

/** A provider advertising attachments; the scan is pending for `pendingPolls` polls. */
function fakeProvider(opts: { capabilities?: string[]; pendingPolls?: number; scan?: string; direct?: boolean; served?: Uint8Array } = {}) {
  const calls: Call[] = [];
  let polls = 0;
  const meta: Record<string, unknown> = {};
  const fetch = (async (url: string, init: RequestInit) => {
    const u = new URL(url);
    const body = init.body;
    calls.push({ method: init.method ?? "GET", url, headers: { ...(init.headers as Record<string, string>) }, body: typeof body === "string" ? JSON.parse(body) : body });
    const json = (status: number, v: unknown) => new Response(JSON.stringify(v), { status, headers: { "content-type": "application/json" } });
    const p = u.pathname;
    if (p === "/v1/info") {
      return json(200, {
        provider: "files.test",
        version: "amp/0.1",
        capabilities: opts.capabilities ?? ["attachments"],
        attachment_limits: { max_attachment_size: 1024, max_total_attachment_size: 4096, max_attachments_per_message: 10, direct_upload: opts.direct ?? false },
      });
    }
    if (p === "/v1/attachments/upload") {
      Object.assign(meta, JSON.parse(body as string));
      return json(201, { attachment_id: "att_1706648400_abc123", upload_url: "https://storage.files.test/put/att_1?sig=xyz", upload_method: "PUT", upload_headers: { "Content-Type": "text/plain" }, expires_in: 3600 });
    }
    if (p === "/v1/attachments/upload/direct") return json(201, { attachment_id: "att_1706648400_direct", scan_status: "pending" });
    if (u.host === "storage.files.test") return new Response(null, { status: 200 });
    if (p.endsWith("/confirm")) return json(200, { attachment_id: "att_1706648400_abc123", scan_status: "pending" });
    if (p.startsWith("/v1/attachments/") && !p.endsWith("/download")) {
      polls++;
      const id = p.split("/")[3];
      if (polls <= (opts.pendingPolls ?? 1)) return json(200, { attachment_id: id, scan_status: "pending" });
      return json(200, { attachment_id: id, ...meta, scan_status: opts.scan ?? "clean", url: `https://cdn.files.test/${id}?token=t`, uploaded_at: "2026-01-01T00:00:00Z", expires_at: "2026-01-08T00:00:00Z" });
    }
    if (u.host === "cdn.files.test" || p.endsWith("/download")) return new Response((opts.served ?? new TextEncoder().encode("log line\n")) as Uint8Array<ArrayBuffer>, { status: 200 });
    if (p === "/v1/route") return json(200, { id: "msg_1_a", status: "queued" });
    return json(404, { error: "not_found", message: p });
  }) as unknown as typeof globalThis.fetch;
  return { fetch, calls };
}

function agent(fetch: typeof globalThis.fetch) {
  const client = new AmpClient("https://api.files.test", { fetch, retry: false });
  return client.agent({
    version: 1,
    provider_url: "https://api.files.test/v1",
    registration: { address: "alice@acme.files.test", agent_id: "agt_1", api_key: "amp_live_sk_secret", provider: {} },
    private_key: PrivateKey.generate().toPem(),
  });
}

const FILE = new TextEncoder().encode("log line\n");
const DIGEST = `sha256:${createHash("sha256").update(FILE).digest("hex")}`;

test("upload: request URL, PUT to storage without the API key, confirm, poll the scan", async () => {
  const { fetch, calls } = fakeProvider({ pendingPolls: 2 });
  const a = agent(fetch);
  const att = await a.uploadAttachment(FILE, { filename: "puma.log", contentType: "text/plain", pollIntervalMs: 1 });
  const seq = calls.map((c) => `${c.method} ${new URL(c.url).host}${new URL(c.url).pathname}`);
  assert.deepEqual(seq, [
    "GET api.files.test/v1/info",
    "POST api.files.test/v1/attachments/upload",
    "PUT storage.files.test/put/att_1",
    "POST api.files.test/v1/attachments/att_1706648400_abc123/confirm",
    "GET api.files.test/v1/attachments/att_1706648400_abc123",
    "GET api.files.test/v1/attachments/att_1706648400_abc123",
    "GET api.files.test/v1/attachments/att_1706648400_abc123",
  ]);
  assert.deepEqual(calls[1]!.body, { filename: "puma.log", content_type: "text/plain", size: FILE.length, digest: DIGEST });
  assert.equal(calls[1]!.headers["authorization"], "Bearer amp_live_sk_secret");
  const put = calls[2]!;
  assert.equal(put.headers["authorization"], undefined, "the API key never goes to storage");
  assert.equal(put.headers["Content-Type"], "text/plain", "upload_headers are sent");
  assert.deepEqual(put.body, FILE);
  assert.equal(new URL(put.url).search, "?sig=xyz");
  assert.deepEqual(att, {
    id: "att_1706648400_abc123",
    filename: "puma.log",
    content_type: "text/plain",
    size: FILE.length,
    digest: DIGEST,
    url: "https://cdn.files.test/att_1706648400_abc123?token=t",
    scan_status: "clean",
    uploaded_at: "2026-01-01T00:00:00Z",
    expires_at: "2026-01-08T00:00:00Z",
  });

  // The attachment goes into the payload before signing: the signature covers it.
  await a.send("bob@acme.files.test", "logs", { type: "request", message: "see attached", attachments: [att] });
  const route = calls.at(-1)!;
  const body = route.body as { payload: unknown; signature: string; to: string; subject: string };
  assert.deepEqual((body.payload as { attachments: unknown }).attachments, [att]);
  assert.ok(verifyMessage(a.publicKey, { from: a.address, to: body.to, subject: body.subject }, body.payload, body.signature));
});

test("direct upload when the provider offers it; one multipart request", async () => {
  const { fetch, calls } = fakeProvider({ direct: true, pendingPolls: 0 });
  const att = await agent(fetch).uploadAttachment(new Blob([FILE]), { filename: "puma.log", contentType: "text/plain", direct: true });
  assert.equal(att["id"], "att_1706648400_direct");
  const post = calls[1]!;
  assert.equal(new URL(post.url).pathname, "/v1/attachments/upload/direct");
  const form = post.body as FormData;
  assert.deepEqual(JSON.parse(await (form.get("metadata") as Blob).text()), { filename: "puma.log", content_type: "text/plain", size: FILE.length, digest: DIGEST });
  assert.deepEqual(new Uint8Array(await (form.get("file") as Blob).arrayBuffer()), FILE);
});

test("nothing is uploaded or sent to a provider that does not advertise attachments", async () => {
  const { fetch, calls } = fakeProvider({ capabilities: ["websockets"] });
  const a = agent(fetch);
  await assert.rejects(a.uploadAttachment(FILE, { filename: "a.txt", contentType: "text/plain" }), UnsupportedError);
  const provider = { id: "att_1_a", filename: "a.txt", content_type: "text/plain", size: 1, digest: DIGEST, url: "https://x.test/a", scan_status: "clean", uploaded_at: "x", expires_at: "y" };
  await assert.rejects(a.send("bob@acme.files.test", "s", { message: "m", attachments: [provider] }), UnsupportedError);
  const afp = afpAttachment({ filename: "r.pdf", contentType: "application/pdf", size: 10, digest: DIGEST, ref: "afp://space/r.pdf" });
  await assert.rejects(a.send("bob@acme.files.test", "s", { message: "m", attachments: [afp] }), /attachments:afp/);
  assert.deepEqual(calls.map((c) => new URL(c.url).pathname), ["/v1/info"], "only the capability check was made");
});

test("a rejected scan, an oversize file and a bad name are errors before routing", async () => {
  {
    const { fetch } = fakeProvider({ scan: "rejected", pendingPolls: 0 });
    await assert.rejects(agent(fetch).uploadAttachment(FILE, { filename: "a.txt", contentType: "text/plain" }), (e: unknown) => (e as { code: string }).code === "attachment_rejected");
  }
  {
    const { fetch } = fakeProvider();
    await assert.rejects(agent(fetch).uploadAttachment(new Uint8Array(2048), { filename: "big.bin", contentType: "application/octet-stream" }), /at most 1024/);
  }
  for (const bad of ["../etc/passwd", "a/b", "a\\b", "a\u0000b", "..%2Fx", ".hidden", ""]) assert.throws(() => checkFilename(bad), InvalidInputError, bad);
  checkFilename("report-2026.pdf");
});

test("downloads are checked against the digest", async () => {
  {
    const { fetch, calls } = fakeProvider();
    const got = await agent(fetch).downloadAttachment({ id: "att_1", digest: DIGEST, url: "https://cdn.files.test/att_1?token=t" });
    assert.deepEqual(got, FILE);
    assert.equal(calls[0]!.headers["authorization"], undefined, "signed URLs need no API key");
  }
  {
    const { fetch, calls } = fakeProvider();
    await agent(fetch).downloadAttachment({ id: "att_1", digest: DIGEST });
    assert.equal(new URL(calls[0]!.url).pathname, "/v1/attachments/att_1/download");
    assert.equal(calls[0]!.headers["authorization"], "Bearer amp_live_sk_secret");
  }
  {
    const { fetch } = fakeProvider({ served: new TextEncoder().encode("tampered") });
    await assert.rejects(agent(fetch).downloadAttachment({ digest: DIGEST, url: "https://cdn.files.test/x" }), (e: unknown) => (e as { code: string }).code === "digest_mismatch");
  }
  assert.throws(() => digestMatches(FILE, `md5:${"0".repeat(32)}`), /not supported/);
  assert.equal(attachmentDigest(FILE), DIGEST);
});

test("AFP attachments carry a reference, never bytes", () => {
  const a = afpAttachment({ filename: "report.pdf", contentType: "application/pdf", size: 1827341, digest: DIGEST, ref: "afp://artifacts/2026/10/report.pdf", endpoint: "https://files.example.net" });
  assert.deepEqual(a, { storage: "afp", filename: "report.pdf", content_type: "application/pdf", size: 1827341, digest: DIGEST, ref: "afp://artifacts/2026/10/report.pdf", endpoint: "https://files.example.net" });
  assert.throws(() => afpAttachment({ ...a, contentType: "x", ref: "https://x" } as never), /afp:/);
  assert.throws(() => afpAttachment({ filename: "r", contentType: "x", size: 1, digest: "sha256:ABC", ref: "afp://s/p" }), /digest/);
});
