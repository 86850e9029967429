/**
 * Building signed route requests (spec 08 `POST /v1/route`, COMPAT "Sending"), in either body
 * form: the flat form of spec 08 (also the `data` of a WebSocket `route` frame) or the
 * envelope form the shell plugin sends. The payload goes on the wire byte for byte as the
 * text that was hashed, so what the recipient fetches verifies against what was signed.
 *
 * Every request carries a client message id (`msg_<millis>_<hex>`, kept by providers that
 * follow COMPAT.md) and an `idempotency_key` (`idk_<uuid>`, amp-spec-next): a retry of the
 * same request is then answered with the first result instead of a second copy.
 *
 * @module
 */

import { randomBytes, toHex, utf8 } from "./encoding.js";
import { InvalidInputError } from "./errors.js";
import { payloadHash } from "./json.js";
import type { PrivateKey } from "./keys.js";
import { canonicalString, PRIORITIES, type Priority } from "./signing.js";
import type { Payload } from "./types.js";

/** JSON text sent byte for byte (numbers such as `1.0` or `1e400` survive). */
export class RawJson {
  /** The text. */
  readonly text: string;

  /**
   * @throws {InvalidInputError} when `text` is not a JSON object.
   */
  constructor(text: string) {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new InvalidInputError("payload is not JSON", { cause: e });
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InvalidInputError("a payload must be a JSON object");
    this.text = text;
  }
}

/** {@link RawJson} of `text`. */
export function rawJson(text: string): RawJson {
  return new RawJson(text);
}

/**
 * What to send: a payload object (`type` defaults to `notification`), JSON text as
 * {@link RawJson}, or a plain string (a `notification` with that `message`).
 */
export type PayloadInput = string | RawJson | (Partial<Payload> & { message: string });

/** Per-message options of a send. */
export interface SendOptions {
  /** `urgent`, `high`, `normal` (default) or `low`. Signed. */
  priority?: Priority;
  /** The id of the message this one answers. Signed. */
  inReplyTo?: string;
  /** The thread to file the message in (not signed). */
  threadId?: string;
  /** A client message id (`msg_<millis>_<hex>`); generated when absent. */
  id?: string;
  /** An idempotency key (`idk_<uuid>`); generated when absent. */
  idempotencyKey?: string;
  /** Ask for a delivery receipt (`options.receipt`). */
  receipt?: boolean;
  /** When the message stops being worth delivering (ISO 8601 or a `Date`). */
  expiresAt?: string | Date;
  /** The body form: `flat` (spec 08, default) or `envelope` (the plugin's). */
  form?: "flat" | "envelope";
}

/** A signed route request, ready to send. */
export interface BuiltRoute {
  /** The client message id. */
  id: string;
  /** The idempotency key. */
  idempotencyKey: string;
  /** The request body as JSON text. */
  body: string;
  /** The payload text that was hashed and is sent. */
  payloadText: string;
  /** The canonical string that was signed. */
  canonical: string;
  /** The signature (base64). */
  signature: string;
}

/** A new message id: `msg_<unix millis>_<16 hex>` (spec 04, test vectors msgid-*). */
export function newMessageId(now = Date.now()): string {
  return `msg_${now}_${toHex(randomBytes(8))}`;
}

/** A new idempotency key: `idk_` + a UUID v4 (amp-spec-next 04 "Idempotency"). */
export function newIdempotencyKey(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = toHex(b);
  return `idk_${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The payload text for an input (see {@link PayloadInput}). */
export function payloadText(input: PayloadInput): string {
  if (input instanceof RawJson) return input.text;
  if (typeof input === "string") return JSON.stringify({ type: "notification", message: input });
  if (typeof input !== "object" || input === null) throw new InvalidInputError("a payload must be an object");
  if (typeof input.message !== "string") throw new InvalidInputError("payload.message must be a string");
  const { type, ...rest } = input;
  return JSON.stringify({ type: type ?? "notification", ...rest });
}

/**
 * Builds and signs a route request from `from` (the signer's address) to `to`.
 *
 * @throws {InvalidInputError} for a bad payload or priority.
 */
export function buildRoute(key: PrivateKey, from: string, to: string, subject: string, payload: PayloadInput, opts: SendOptions = {}): BuiltRoute {
  const priority = opts.priority ?? "normal";
  if (!PRIORITIES.includes(priority)) throw new InvalidInputError(`priority must be one of ${PRIORITIES.join(", ")}`);
  if (typeof to !== "string" || !to.trim()) throw new InvalidInputError("a message needs a recipient");
  if (typeof subject !== "string") throw new InvalidInputError("the subject must be a string");
  const text = payloadText(payload);
  const inReplyTo = opts.inReplyTo || undefined;
  const canonical = canonicalString({ from, to, subject, priority, in_reply_to: inReplyTo ?? "" }, payloadHash(text));
  const signature = key.signBase64(utf8(canonical));
  const id = opts.id ?? newMessageId();
  const idempotencyKey = opts.idempotencyKey ?? newIdempotencyKey();
  const expires = opts.expiresAt instanceof Date ? opts.expiresAt.toISOString() : opts.expiresAt;
  const members: [string, string][] = [];
  const add = (k: string, v: unknown) => {
    if (v !== undefined && v !== null) members.push([k, JSON.stringify(v)]);
  };
  const options = opts.receipt ? { receipt: true } : undefined;
  if ((opts.form ?? "flat") === "envelope") {
    const envelope: Record<string, unknown> = {
      version: "amp/0.1",
      id,
      from,
      to,
      subject,
      priority,
      timestamp: new Date().toISOString(),
    };
    if (opts.threadId) envelope["thread_id"] = opts.threadId;
    if (inReplyTo) envelope["in_reply_to"] = inReplyTo;
    if (expires) envelope["expires_at"] = expires;
    envelope["signature"] = signature;
    envelope["idempotency_key"] = idempotencyKey;
    add("envelope", envelope);
    members.push(["payload", text]);
    add("options", options);
  } else {
    add("to", to);
    add("subject", subject);
    add("priority", priority);
    members.push(["payload", text]);
    add("in_reply_to", inReplyTo);
    add("thread_id", opts.threadId || undefined);
    add("expires_at", expires);
    add("id", id);
    add("idempotency_key", idempotencyKey);
    add("signature", signature);
    add("options", options);
  }
  const body = `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;
  return { id, idempotencyKey, body, payloadText: text, canonical, signature };
}
