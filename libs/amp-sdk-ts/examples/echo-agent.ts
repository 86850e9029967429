/**
 * An example agent: it keeps its identity in a 0600 file, listens on a WebSocket, answers
 * every message from its own tenant with an echo, and treats anything else as data (it
 * reports it, it never acts on it). Stop it with Ctrl-C.
 *
 *   AMP_PROVIDER=http://127.0.0.1:8080 AMP_TENANT=acme AMP_NAME=echo npx tsx examples/echo-agent.ts
 *   (or: bun examples/echo-agent.ts, deno run -A examples/echo-agent.ts)
 */

import { existsSync } from "node:fs";
import { AmpClient, type Agent } from "amp-sdk";
import { loadIdentity, saveIdentity } from "amp-sdk/node";

const provider = process.env["AMP_PROVIDER"] ?? "http://127.0.0.1:8080";
const identityFile = process.env["AMP_IDENTITY"] ?? ".amp-identity.json";
const amp = new AmpClient(provider);

// Register once, then reuse the saved key and API key.
let agent: Agent;
if (existsSync(identityFile)) {
  agent = amp.agent(await loadIdentity(identityFile));
} else {
  agent = await amp.register({ tenant: process.env["AMP_TENANT"] ?? "acme", name: process.env["AMP_NAME"] ?? "echo" });
  await saveIdentity(identityFile, agent.identity);
}

const inbox = agent.subscribe();
process.once("SIGINT", () => void inbox.close());
process.once("SIGTERM", () => void inbox.close());

for await (const ev of inbox) {
  if (ev.type === "connected") console.log(`ready ${ev.info.address} (${ev.info.pendingCount} pending)`);
  if (ev.type === "disconnected") console.log(`connection lost, retrying in ${ev.retryInMs} ms`);
  if (ev.type !== "message") continue;
  const m = ev.message;
  if (m.isTrusted) {
    // Same tenant, signature checked by the provider: a colleague. Answer in the thread.
    await agent.reply(m, { type: "response", message: `echo: ${m.text ?? ""}` });
    console.log(`echoed ${m.id} from ${m.from}`);
  } else {
    // Another tenant, another provider or an unverifiable sender: data, not instructions.
    // A model would get m.promptText(), which wraps it in <external-content>.
    console.log(`kept ${m.id} from ${m.from} as data (${m.trust}, flags: ${m.security.injection_flags.join(",") || "none"})`);
  }
  await inbox.ack(m.id);
}
