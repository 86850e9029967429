/**
 * Canonical JSON and the payload hash (spec 04 "Message Signing", the test vectors).
 *
 * The payload hash is `base64(SHA-256(compact JSON with object keys sorted at every level))`.
 * Senders in the wild produce that text with `jq -cS`, Python's `json.dumps(sort_keys=True)`
 * or `JSON.stringify`, which disagree on numbers (`1.0`, `1e+20`, `-0`) and on non-ASCII
 * text. This module writes exactly what `jq -cS .` (jq 1.6) prints, the form of the spec's
 * test vectors and the one our provider and the Rust SDK (`amp-proto`) check first:
 *
 * - keys sorted by their UTF-8 bytes (code point order, not JavaScript's UTF-16 order);
 * - numbers through a double, shortest round-trip digits, exponent form when the decimal
 *   point is 4 or more places before the digits or more than 15 places after them
 *   (`1e-05`, `1e+17`), `-0` kept, out-of-range values clamped to ±1.7976931348623157e+308;
 * - strings as raw UTF-8 with only `"`, `\`, control characters and DEL escaped; a lone
 *   surrogate becomes U+FFFD.
 *
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";
import { toBase64, utf8 } from "./encoding.js";

/** A JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
/** A JSON object. */
export type JsonObject = { [key: string]: JsonValue };

/** Most nesting levels accepted (deeper input is refused, as providers refuse it). */
export const MAX_DEPTH = 128;

/**
 * The canonical (jq `-cS`) text of a JSON value.
 *
 * @throws {TypeError} for values JSON cannot hold (`undefined`, functions, `NaN`, `BigInt`,
 *   cycles) or nesting deeper than {@link MAX_DEPTH}.
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  write(value, out, 0);
  return out.join("");
}

/**
 * The canonical text of JSON text: parsed (duplicate keys keep their last value), then
 * written as {@link canonicalJson} does.
 *
 * @throws {SyntaxError} when `text` is not JSON.
 */
export function canonicalJsonOfText(text: string): string {
  return canonicalJson(JSON.parse(text));
}

/**
 * The payload hash: `base64(SHA-256(canonical JSON))`. A string is taken as JSON text (a
 * payload is always an object, so a string can only be its serialised form); anything else
 * is a JSON value, such as a received payload from `JSON.parse` (whose `-0` is kept, as the
 * sender's text had it). The SDK signs what it sends from the sent text, so
 * `JSON.stringify`'s own changes (`-0` written as `0`) never split hash and body.
 *
 * @throws {SyntaxError} when a string is not JSON; `TypeError` as {@link canonicalJson}.
 */
export function payloadHash(payload: unknown): string {
  return toBase64(sha256(utf8(canonicalPayload(payload))));
}

/** The canonical text {@link payloadHash} hashes. */
export function canonicalPayload(payload: unknown): string {
  return typeof payload === "string" ? canonicalJsonOfText(payload) : canonicalJson(payload);
}

function write(v: unknown, out: string[], depth: number): void {
  if (v === null) {
    out.push("null");
    return;
  }
  switch (typeof v) {
    case "boolean":
      out.push(v ? "true" : "false");
      return;
    case "number":
      out.push(formatNumber(v));
      return;
    case "string":
      out.push(quote(v));
      return;
    case "object":
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") {
        // As JSON.stringify does (Date, Address, …).
        write((v as { toJSON(): unknown }).toJSON(), out, depth + 1);
        return;
      }
      break;
    default:
      throw new TypeError(`a ${typeof v} is not JSON`);
  }
  if (depth >= MAX_DEPTH) throw new TypeError("JSON nested too deeply");
  if (Array.isArray(v)) {
    out.push("[");
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(",");
      write(v[i] === undefined ? null : v[i], out, depth + 1);
    }
    out.push("]");
    return;
  }
  const obj = v as Record<string, unknown>;
  // Keys as jq sees them (lone surrogates replaced), sorted by code point; a later key that
  // normalises to an earlier one replaces its value, as a JSON parser would.
  const members = new Map<string, unknown>();
  for (const k of Object.keys(obj)) {
    const value = obj[k];
    if (value === undefined || typeof value === "function" || typeof value === "symbol") continue;
    members.set(wellFormed(k), value);
  }
  const keys = [...members.keys()].sort(compareCodePoints);
  out.push("{");
  keys.forEach((k, i) => {
    if (i > 0) out.push(",");
    out.push(quote(k), ":");
    write(members.get(k), out, depth + 1);
  });
  out.push("}");
}

/**
 * Orders strings by Unicode code point, which is also the order of their UTF-8 bytes.
 * JavaScript's default order compares UTF-16 code units and puts U+E000–U+FFFF after
 * astral characters; the fix-up below moves surrogates above that range.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/** `s` with every lone surrogate replaced by U+FFFD (what jq and UTF-8 decoders do). */
function wellFormed(s: string): string {
  // Fast path: no surrogates at all.
  if (!/[\ud800-\udfff]/.test(s)) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out += s[i]! + s[i + 1]!;
        i++;
        continue;
      }
    }
    out += c >= 0xd800 && c <= 0xdfff ? "\ufffd" : s[i]!;
  }
  return out;
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

/** A JSON string literal as jq 1.6 writes it. */
function quote(s: string): string {
  const t = wellFormed(s);
  // eslint-disable-next-line no-control-regex
  return `"${t.replace(/["\\\u0000-\u001f\u007f]/g, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)}"`;
}

/**
 * A number as jq 1.6 prints it (see the module notes).
 *
 * @throws {TypeError} for `NaN`, which JSON cannot hold.
 */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) throw new TypeError("NaN is not JSON");
  if (!Number.isFinite(x)) x = x > 0 ? Number.MAX_VALUE : -Number.MAX_VALUE;
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  const sign = x < 0 ? "-" : "";
  // Shortest round-trip digits and the decimal point's position, from `Number#toString`
  // (which the language defines as the shortest string that reads back as the same double).
  const text = String(Math.abs(x));
  const [mantissa, expText] = text.split("e") as [string, string | undefined];
  const [intPart, fracPart = ""] = mantissa.split(".") as [string, string | undefined];
  let digits = intPart + fracPart;
  let decpt = intPart.length + (expText === undefined ? 0 : parseInt(expText, 10));
  while (digits.length > 1 && digits[0] === "0") {
    digits = digits.slice(1);
    decpt--;
  }
  digits = digits.replace(/0+$/, "");
  const n = digits.length;
  if (decpt <= -4 || decpt > n + 15) {
    const e = decpt - 1;
    const abs = Math.abs(e);
    return `${sign}${digits[0]}${n > 1 ? "." + digits.slice(1) : ""}e${e < 0 ? "-" : "+"}${abs < 10 ? "0" : ""}${abs}`;
  }
  if (decpt <= 0) return `${sign}0.${"0".repeat(-decpt)}${digits}`;
  if (decpt >= n) return `${sign}${digits}${"0".repeat(decpt - n)}`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}
