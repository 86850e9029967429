/**
 * Message signatures (spec 04 "Canonical Signature Format v1.1"): Ed25519 over the UTF-8
 * bytes of `from|to|subject|priority|in_reply_to|payload_hash`, base64 (standard, padded).
 * Absent fields are empty strings, an absent priority is `normal`. `thread_id`, `id`,
 * `timestamp` and `idempotency_key` are not signed.
 *
 * @module
 */

import { utf8 } from "./encoding.js";
import { payloadHash } from "./json.js";
import type { PrivateKey, PublicKey } from "./keys.js";

/** Message priorities (spec 04). */
export type Priority = "urgent" | "high" | "normal" | "low";

/** The priorities, most urgent first. */
export const PRIORITIES: readonly Priority[] = ["urgent", "high", "normal", "low"];

/** The signed envelope fields. */
export interface SignedFields {
  /** The sender's full address. */
  from: string;
  /** The recipient's address, exactly as sent. */
  to: string;
  /** The subject. */
  subject: string;
  /** The priority; `normal` when absent. */
  priority?: string | null | undefined;
  /** The id of the message this one answers; empty when absent. */
  in_reply_to?: string | null | undefined;
}

/** `from|to|subject|priority|in_reply_to|payload_hash` (test vectors canon-*). */
export function canonicalString(fields: SignedFields, payloadHashB64: string): string {
  return [fields.from, fields.to, fields.subject, fields.priority || "normal", fields.in_reply_to ?? "", payloadHashB64].join("|");
}

/**
 * Signs a message: the base64 Ed25519 signature of its canonical string. `payload` is an
 * object or its JSON text (see {@link payloadHash}).
 */
export function signMessage(key: PrivateKey, fields: SignedFields, payload: unknown): string {
  return key.signBase64(utf8(canonicalString(fields, payloadHash(payload))));
}

/** Whether `signature` is `key`'s signature of the message. Never throws. */
export function verifyMessage(key: PublicKey, fields: SignedFields, payload: unknown, signature: string): boolean {
  let hash: string;
  try {
    hash = payloadHash(payload);
  } catch {
    return false;
  }
  return key.verifyBase64(signature, utf8(canonicalString(fields, hash)));
}
