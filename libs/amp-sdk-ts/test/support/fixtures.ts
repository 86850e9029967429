/** Reads the JSON fixtures of test/fixtures (see its README for their provenance). */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { PACKAGE_DIR } from "./ampd.js";

export function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(join(PACKAGE_DIR, "test", "fixtures", name), "utf8")) as T;
}

/** A small seeded PRNG (mulberry32), so property tests are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUMS = ["0", "-0", "1", "1.0", "1e3", "1E3", "-2.5", "0.1", "1e-7", "0.00001", "0.0001", "123456789012345678", "100000000000000000001", "1e16", "1e17", "1e21", "1e20", "3.14159265358979323846", "5e-324", "1.7976931348623157e308", "12e-1", "0.5e1", "9007199254740993", "-1e-10", "42", "1000000", "2e+2", "-123.456e-5", "0.30000000000000004", "1.5e300", "-0.0"];
const STRS = ["", "a", "é", "日本", "😀", "\\u0001", "\\u007f", "\\n\\t\\r", '\\"', "\\\\", "\\/", "\\u2028", "tab\\there", "\\ud83d\\ude00", "Ünïcödé", "<tag>&amp;", "\\u00e9", "\\ue000", "\uffff", "\\b\\f", "𝄞"];
const KEYS = ["type", "message", "context", "a", "B", "z", "é", "_x", "10", "2", "aa", "ab", "Z", "😀", "key with space", "\\u0041", "\ue000", "\uffee", "𝄞", "01", "-1"];

/** Random JSON text with the number literals, escapes and keys that trip canonicalisers. */
export function randomJsonText(rand: () => number, depth = 0): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const r = rand();
  if (depth > 3 || r < 0.3) return pick(NUMS);
  if (r < 0.55) return `"${pick(STRS)}${pick(STRS)}"`;
  if (r < 0.6) return pick(["true", "false", "null"]);
  if (r < 0.75) return `[${Array.from({ length: Math.floor(rand() * 5) }, () => randomJsonText(rand, depth + 1)).join(",")}]`;
  return randomObjectText(rand, depth + 1);
}

export function randomObjectText(rand: () => number, depth = 0): string {
  const n = Math.floor(rand() * 6);
  const keys = [...KEYS].sort(() => rand() - 0.5).slice(0, n);
  const sep = [" ", "", "\n  "][Math.floor(rand() * 3)]!;
  return `{${keys.map((k) => `${sep}"${k}"${sep}:${sep}${randomJsonText(rand, depth)}`).join(",")}${sep}}`;
}
