/**
 * Node-only helpers (`import … from "amp-sdk/node"`): identity files written owner-only
 * (0600) and atomically, and a webhook listener for Node's `http` module. The core
 * (`amp-sdk`) uses no Node API; this entry point does.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { dirname, join, basename } from "node:path";
import { Identity, type IdentityData } from "./identity.js";
import { verifyWebhook, WebhookVerificationError, type WebhookDelivery, type WebhookVerifyOptions } from "./webhook.js";

/**
 * Writes `identity` (registration, API key and private key) to `path` as JSON, mode 0600:
 * a temporary file beside it, synced, then renamed over it, so a crash never leaves half a
 * key and the file is never readable by others.
 */
export async function saveIdentity(path: string, identity: Identity): Promise<void> {
  await writePrivate(path, `${JSON.stringify(identity.toData(), null, 2)}\n`);
}

/**
 * Reads what {@link saveIdentity} wrote.
 *
 * @throws {DecodeError} or {KeyError} for a file that is not an identity.
 */
export async function loadIdentity(path: string): Promise<Identity> {
  return Identity.fromData(JSON.parse(await readFile(path, "utf8")) as IdentityData);
}

/** Writes `text` to `path` readable by the owner only, atomically. */
export async function writePrivate(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  const f = await open(tmp, "wx", 0o600);
  try {
    await f.writeFile(text);
    await f.sync();
  } catch (e) {
    await f.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await f.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Options of {@link webhookListener}. */
export interface WebhookListenerOptions extends WebhookVerifyOptions {
  /** Largest body read, in bytes (default 1 MiB; larger requests get 413). */
  maxBodyBytes?: number;
}

/**
 * A `(req, res)` listener for `http.createServer` that verifies each delivery and hands it
 * to `onMessage`; it answers 200 when `onMessage` resolves, 401/400 for a refused request
 * (no retry), 500 when `onMessage` throws (the provider retries).
 *
 * ```ts
 * http.createServer(webhookListener({ secret }, async ({ message }) => {
 *   console.log(message.trust, message.promptText());
 * })).listen(8787);
 * ```
 */
export function webhookListener(
  opts: WebhookListenerOptions,
  onMessage: (delivery: WebhookDelivery) => void | Promise<void>,
): (req: IncomingMessage, res: ServerResponse) => void {
  const max = opts.maxBodyBytes ?? 1024 * 1024;
  return (req, res) => {
    const answer = (status: number, body: Record<string, unknown>) => {
      if (res.headersSent) return;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "POST") return answer(405, { error: "method_not_allowed", message: "POST only" });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > max) {
        answer(413, { error: "request_too_large", message: "body too large" });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (size > max) return;
      let delivery: WebhookDelivery;
      try {
        delivery = verifyWebhook(new Uint8Array(Buffer.concat(chunks)), req.headers, opts);
      } catch (e) {
        if (e instanceof WebhookVerificationError) return answer(e.status, { error: e.code, message: e.message });
        return answer(400, { error: "invalid_request", message: String(e) });
      }
      Promise.resolve()
        .then(() => onMessage(delivery))
        .then(
          () => answer(200, { received: true, id: delivery.messageId }),
          (e: unknown) => answer(500, { error: "internal_error", message: e instanceof Error ? e.message : String(e) }),
        );
    });
  };
}

export { Identity };
