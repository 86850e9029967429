/**
 * Receiving by webhook (spec 05 "Webhook Delivery"): the provider POSTs `{envelope,
 * payload}` with `X-AMP-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`,
 * `X-AMP-Timestamp` (unix seconds), `X-AMP-Message-Id` and `X-AMP-Delivery-Attempt`.
 *
 * {@link verifyWebhook} checks the signature over the **raw body bytes** in constant time and
 * the timestamp within a bounded clock skew (5 minutes by default, as the spec's example),
 * then returns the message. It takes plain values, so it fits any framework; for
 * fetch-style handlers (Deno, Bun, Cloudflare, Next.js) use {@link verifyWebhookRequest},
 * for Node's `http` module `amp-sdk/node`'s `webhookListener`.
 *
 * Answer 2xx once the message is stored: 4xx stops the provider's retries, 5xx asks for one.
 * A webhook does not acknowledge the message; ack it once handled.
 *
 * @module
 */

import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { AmpError } from "./errors.js";
import { fromUtf8, timingSafeEqual, toHex, utf8 } from "./encoding.js";
import { Message } from "./message.js";

/** Why a webhook request was refused. `code`: `webhook_signature_missing`, `webhook_signature_invalid`, `webhook_timestamp_invalid`, `webhook_timestamp_skew`, `webhook_body_invalid`. */
export class WebhookVerificationError extends AmpError {
  /** The HTTP status to answer with (401, or 400 for a body that is not a message). */
  readonly status: number;

  constructor(code: string, message: string, status = 401) {
    super(code, message);
    this.name = "WebhookVerificationError";
    this.status = status;
  }
}

/** Headers as any framework has them: a `Headers`, or an object with (any-case) names. */
export type HeaderSource = { get(name: string): string | null } | Record<string, string | string[] | undefined>;

/** Options of {@link verifyWebhook}. */
export interface WebhookVerifyOptions {
  /** The `webhook_secret` given at registration; several while rotating it. */
  secret: string | readonly string[];
  /** Largest accepted difference between `X-AMP-Timestamp` and now, in seconds (default 300). */
  toleranceSec?: number;
  /** The current time in ms (tests). */
  now?: number;
}

/** A verified webhook delivery. */
export interface WebhookDelivery {
  /** The message (its `trust` is `untrusted` unless the provider annotated it). */
  message: Message;
  /** `X-AMP-Message-Id` (else the envelope id). */
  messageId: string;
  /** `X-AMP-Delivery-Attempt` (1 for the first). */
  attempt: number;
  /** `X-AMP-Timestamp`, unix seconds. */
  timestamp: number;
}

/** `sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, the provider's side. */
export function signWebhook(secret: string, timestamp: number, body: string | Uint8Array): string {
  const b = typeof body === "string" ? utf8(body) : body;
  const prefix = utf8(`${timestamp}.`);
  const data = new Uint8Array(prefix.length + b.length);
  data.set(prefix);
  data.set(b, prefix.length);
  return `sha256=${toHex(hmac(sha256, utf8(secret), data))}`;
}

function header(h: HeaderSource, name: string): string | undefined {
  if (typeof (h as { get?: unknown }).get === "function") return (h as { get(n: string): string | null }).get(name) ?? undefined;
  const rec = h as Record<string, string | string[] | undefined>;
  const key = Object.keys(rec).find((k) => k.toLowerCase() === name);
  const v = key === undefined ? undefined : rec[key];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Verifies a webhook request and returns its message.
 *
 * @param body the raw request body, exactly as received (not re-serialised JSON).
 * @throws {WebhookVerificationError} when a header is missing, the timestamp is outside the
 *   tolerance, the signature does not match, or the body is not a message.
 */
export function verifyWebhook(body: string | Uint8Array, headers: HeaderSource, opts: WebhookVerifyOptions): WebhookDelivery {
  const sig = header(headers, "x-amp-signature");
  const tsText = header(headers, "x-amp-timestamp");
  if (!sig) throw new WebhookVerificationError("webhook_signature_missing", "no X-AMP-Signature header");
  if (!tsText || !/^\d{1,15}$/.test(tsText.trim())) throw new WebhookVerificationError("webhook_timestamp_invalid", "X-AMP-Timestamp is missing or not unix seconds");
  const timestamp = Number(tsText.trim());
  const tolerance = opts.toleranceSec ?? 300;
  const now = (opts.now ?? Date.now()) / 1000;
  if (Math.abs(now - timestamp) > tolerance) {
    throw new WebhookVerificationError("webhook_timestamp_skew", `X-AMP-Timestamp is more than ${tolerance} s from now`);
  }
  const bytes = typeof body === "string" ? utf8(body) : body;
  const given = utf8(sig.trim().toLowerCase());
  const secrets = typeof opts.secret === "string" ? [opts.secret] : opts.secret;
  if (secrets.length === 0 || secrets.some((s) => !s)) throw new WebhookVerificationError("webhook_signature_invalid", "no webhook secret configured");
  let ok = false;
  // Every secret is tried (no early exit), each comparison in constant time.
  for (const s of secrets) ok = timingSafeEqual(utf8(signWebhook(s, timestamp, bytes)), given) || ok;
  if (!ok) throw new WebhookVerificationError("webhook_signature_invalid", "X-AMP-Signature does not match the body");
  let parsed: unknown;
  try {
    parsed = JSON.parse(fromUtf8(bytes));
  } catch {
    throw new WebhookVerificationError("webhook_body_invalid", "the webhook body is not JSON", 400);
  }
  let message: Message;
  try {
    message = new Message(parsed, "webhook");
  } catch (e) {
    throw new WebhookVerificationError("webhook_body_invalid", e instanceof Error ? e.message : "not a message", 400);
  }
  const attempt = Number(header(headers, "x-amp-delivery-attempt") ?? "1");
  return {
    message,
    messageId: header(headers, "x-amp-message-id") ?? message.id,
    attempt: Number.isFinite(attempt) && attempt > 0 ? attempt : 1,
    timestamp,
  };
}

/** {@link verifyWebhook} for a fetch-API `Request` (reads its body). */
export async function verifyWebhookRequest(request: Request, opts: WebhookVerifyOptions): Promise<WebhookDelivery> {
  return verifyWebhook(new Uint8Array(await request.arrayBuffer()), request.headers, opts);
}
