// The same smoke script (smoke.ts, compiled) in Deno and Bun, both installed from the npm
// registry as devDependencies, against the real ampd; Node runs it too for comparison.
// Deno gets network access to 127.0.0.1 only and nothing else.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Ampd, PACKAGE_DIR } from "../support/ampd.js";

const run = promisify(execFile);
const SCRIPT = join(PACKAGE_DIR, "build", "test", "runtimes", "smoke.js");
const BIN = join(PACKAGE_DIR, "node_modules", ".bin");

let ampd: Ampd;
before(async () => {
  ampd = await Ampd.start();
});
after(async () => {
  await ampd?.stop();
});

async function smoke(cmd: string, args: string[]) {
  const { stdout } = await run(cmd, [...args, SCRIPT, ampd.url], { cwd: PACKAGE_DIR, env: { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "/tmp", DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1" }, timeout: 60_000 });
  const out = JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>;
  assert.equal(out["provider"], "example.test");
  assert.deepEqual(out["pickup"], ["flat", "envelope"]);
  assert.deepEqual(out["verified"], [true, true]);
  const live = out["live"] as { id: string; trust: string; verified: boolean };
  assert.equal(live.id, out["sentId"]);
  assert.equal(live.trust, "verified");
  assert.equal(live.verified, true);
  assert.equal(out["count"], 0);
  assert.equal(out["webhook"], "m");
  assert.equal(out["hash"], "4Z/XSV1AZKYKorrN9OyxY5kTmYXHIZY37sGUfOrHkdg=", "test vector hash-001");
  return out;
}

test("Deno runs the SDK unchanged (its own fetch, WebSocket and crypto)", async () => {
  const out = await smoke(join(BIN, "deno"), ["run", "--no-lock", "--allow-net=127.0.0.1"]);
  assert.match(String(out["runtime"]), /^deno \d/);
  assert.equal(out["globalWebSocket"], true);
});

test("Bun runs the SDK unchanged", async () => {
  const out = await smoke(join(BIN, "bun"), ["run"]);
  assert.match(String(out["runtime"]), /^bun \d/);
  assert.equal(out["globalWebSocket"], true);
});

test("Node runs it too (with the ws package where there is no global WebSocket)", async () => {
  const out = await smoke(process.execPath, []);
  assert.match(String(out["runtime"]), /^node /);
});
