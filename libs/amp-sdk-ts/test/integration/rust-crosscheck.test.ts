// Property checks against the Rust implementation (amp-proto), both ways, on the same
// seeded random payloads (number literals such as 1.0, 1E3, -0, 1e17, 100000000000000000001,
// escapes, astral characters, keys that sort differently in UTF-16 and UTF-8):
//
// - Rust signs, TypeScript verifies: the `amp` CLI (libs/amp-client, `$AMP_CLI_BIN`) sends
//   each payload; the SDK verifies every delivered message, which holds only if its payload
//   hash is byte-identical to the one the Rust side signed.
// - TypeScript signs, Rust verifies: the SDK sends each payload to ampd, whose verifier
//   tries the spec's jq form first and falls back to other forms only when that fails; its
//   `amp_signatures_verified_total{form}` counter shows every one matched the primary form.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { AmpClient, canonicalJsonOfText, payloadHash, rawJson, type Agent } from "amp-sdk";
import { Ampd, binary, uniqueName } from "../support/ampd.js";
import { prng, randomObjectText } from "../support/fixtures.js";

const run = promisify(execFile);
const N = 60;

let ampd: Ampd;
let amp: AmpClient;
let cliDir: string;
let cli: (...args: string[]) => Promise<string>;

before(async () => {
  ampd = await Ampd.start();
  amp = new AmpClient(ampd.url);
  cliDir = mkdtempSync(join(tmpdir(), "amp-cli-"));
  const bin = binary("AMP_CLI_BIN", "amp");
  cli = async (...args) => (await run(bin, ["--config-dir", cliDir, "--provider", ampd.url, ...args], { env: { PATH: process.env["PATH"] ?? "" } })).stdout;
});

after(async () => {
  await ampd?.stop();
  if (cliDir) rmSync(cliDir, { recursive: true, force: true });
});

/** Random text for message and subject fields (real characters, no NUL for argv). */
function randomText(rand: () => number): string {
  const parts = ["hello", "é", "日本", "😀", "𝄞", "\ue000", "\t", "\u007f", "\u2028", '"quoted"', "back\\slash", "<b>&amp;", "|pipe|", " "];
  return Array.from({ length: 1 + Math.floor(rand() * 5) }, () => parts[Math.floor(rand() * parts.length)]).join("");
}

async function metric(form: string): Promise<number> {
  const text = await (await fetch(`${ampd.url}/metrics`)).text();
  const m = new RegExp(`^amp_signatures_verified_total\\{form="${form}"\\} (\\d+)`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

test(`Rust signs, TypeScript verifies: ${N} random payloads`, async () => {
  await cli("init");
  const rustName = uniqueName("rusty");
  await cli("register", "--tenant", "acme", "--name", rustName);
  const rusty = `${rustName}@acme.example.test`;
  const tess: Agent = await amp.register({ tenant: "acme", name: uniqueName("tess") });
  const rustKey = (await tess.resolve(rusty)).public_key;
  const rand = prng(424242);
  const sent: { id: string; context: string }[] = [];
  for (let i = 0; i < N; i++) {
    const context = randomObjectText(rand);
    const out = JSON.parse(await cli("--json", "send", tess.address, randomText(rand).trim() || "s", randomText(rand), "--context", context)) as { id: string };
    sent.push({ id: out.id, context });
  }
  const page = await tess.pending({ limit: 1000 });
  assert.equal(page.messages.length, N);
  for (const [i, m] of page.messages.entries()) {
    assert.equal(m.id, sent[i]!.id);
    assert.ok(m.verify(rustKey), `message ${i} (context ${sent[i]!.context}) does not verify: the TypeScript hash differs from Rust's`);
    // The payload the SDK hashed from JSON.parse equals the canonical form of the raw text.
    assert.equal(
      payloadHash(m.payload),
      payloadHash(`{"type":"notification","message":${JSON.stringify(m.text)},"context":${sent[i]!.context}}`),
    );
  }
});

test(`TypeScript signs, Rust verifies with the primary (jq) form: ${N} random payloads`, async () => {
  const sender = await amp.register({ tenant: "acme", name: uniqueName("ts") });
  const receiver = await amp.register({ tenant: "acme", name: uniqueName("rx") });
  const forms = ["sorted", "sorted_js", "sorted_literal", "insertion", "insertion_ascii"];
  const before = Object.fromEntries(await Promise.all(forms.map(async (f) => [f, await metric(f)] as const)));
  const rand = prng(777);
  for (let i = 0; i < N; i++) {
    const text = `{"type":"notification","message":${JSON.stringify(randomText(rand))},"context":${randomObjectText(rand)}}`;
    // Sanity: canonicalisation is stable on every input.
    assert.equal(canonicalJsonOfText(canonicalJsonOfText(text)), canonicalJsonOfText(text));
    await sender.send(receiver.address, randomText(rand).trim() || "s", rawJson(text), { form: i % 2 ? "envelope" : "flat" });
  }
  const afterCounts = Object.fromEntries(await Promise.all(forms.map(async (f) => [f, await metric(f)] as const)));
  assert.equal(afterCounts["sorted"]! - before["sorted"]!, N, "every signature matched the primary form");
  for (const f of forms.slice(1)) assert.equal(afterCounts[f], before[f], `no signature needed the ${f} fallback`);
  const page = await receiver.pending({ limit: 1000 });
  assert.equal(page.messages.length, N);
  for (const m of page.messages) assert.ok(m.verify(sender.publicKey));
});
