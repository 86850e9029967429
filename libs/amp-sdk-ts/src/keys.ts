/**
 * Ed25519 keys (spec 02, 03): generation, PEM (SPKI public, PKCS#8 private), raw bytes and
 * hex, fingerprints, signing and strict verification, with `@noble/curves` (audited, pure
 * JavaScript, no WebCrypto Ed25519 needed, so the same code runs in every runtime).
 *
 * @module
 */

import { ed25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { AmpError } from "./errors.js";
import { concatBytes, fromBase64, fromHex, randomBytes, toBase64, toHex, utf8 } from "./encoding.js";

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow. */
const SPKI_PREFIX = fromHex("302a300506032b6570032100");
/** DER prefix of an Ed25519 PKCS#8 v1 private key; the 32 seed bytes follow. */
const PKCS8_PREFIX = fromHex("302e020100300506032b657004220420");
/** The Ed25519 object identifier (1.3.101.112) as DER. */
const OID_ED25519 = fromHex("06032b6570");
const OID_RSA = fromHex("06092a864886f70d010101");
const OID_EC = fromHex("06072a8648ce3d0201");

/** A key that cannot be read, or is not an Ed25519 key. */
export class KeyError extends AmpError {
  constructor(message: string) {
    super("invalid_key", message);
    this.name = "KeyError";
  }
}

/** An Ed25519 public key. */
export class PublicKey {
  readonly #bytes: Uint8Array;

  private constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /**
   * A public key from its 32 raw bytes.
   *
   * @throws {KeyError} when there are not 32 bytes or they are not a curve point.
   */
  static fromBytes(bytes: Uint8Array): PublicKey {
    if (bytes.length !== 32) throw new KeyError(`an Ed25519 public key has 32 bytes, not ${bytes.length}`);
    try {
      ed25519.Point.fromBytes(bytes, false);
    } catch {
      throw new KeyError("not an Ed25519 public key (not a point on the curve)");
    }
    return new PublicKey(bytes.slice());
  }

  /**
   * Reads a public key as providers and peers send it: PEM SPKI (lenient armour: CRLF,
   * missing final newline, surrounding space) or 64 hex characters (AI Maestro's relay items).
   *
   * @throws {KeyError} for anything else, naming RSA and ECDSA keys as unsupported.
   */
  static parse(text: string): PublicKey {
    const t = text.trim();
    if (t.startsWith("-----BEGIN")) return PublicKey.fromSpki(pemBody(t, "PUBLIC KEY"));
    if (/^[0-9a-fA-F]{64}$/.test(t)) return PublicKey.fromBytes(fromHex(t));
    throw new KeyError("not a PEM public key or 64 hex characters");
  }

  /**
   * Reads a DER SubjectPublicKeyInfo.
   *
   * @throws {KeyError} when it is not an Ed25519 key.
   */
  static fromSpki(der: Uint8Array): PublicKey {
    if (der.length === 44 && startsWith(der, SPKI_PREFIX)) return PublicKey.fromBytes(der.slice(12));
    throw new KeyError(unsupported(der));
  }

  /** The 32 raw bytes. */
  get bytes(): Uint8Array {
    return this.#bytes.slice();
  }

  /** The DER SubjectPublicKeyInfo. */
  toSpki(): Uint8Array {
    return concatBytes(SPKI_PREFIX, this.#bytes);
  }

  /** PEM SPKI, the form registration and key rotation send (`-----BEGIN PUBLIC KEY-----`). */
  toPem(): string {
    return `-----BEGIN PUBLIC KEY-----\n${toBase64(this.toSpki())}\n-----END PUBLIC KEY-----\n`;
  }

  /** Lowercase hex of the raw bytes. */
  toHex(): string {
    return toHex(this.#bytes);
  }

  /** `SHA256:` + base64(SHA-256(raw 32-byte key)), the form providers show (COMPAT, spec 09). */
  fingerprint(): string {
    return `SHA256:${toBase64(sha256(this.#bytes))}`;
  }

  /**
   * Whether `signature` is this key's Ed25519 signature of `message` (RFC 8032 strict:
   * non-canonical encodings are refused, as the Rust implementation refuses them).
   */
  verify(signature: Uint8Array, message: Uint8Array): boolean {
    if (signature.length !== 64) return false;
    try {
      return ed25519.verify(signature, message, this.#bytes, { zip215: false });
    } catch {
      return false;
    }
  }

  /** {@link PublicKey.verify} with a base64 signature; `false` when it is not base64. */
  verifyBase64(signature: string, message: Uint8Array): boolean {
    let sig: Uint8Array;
    try {
      sig = fromBase64(signature);
    } catch {
      return false;
    }
    return this.verify(sig, message);
  }

  /** Whether both are the same key. */
  equals(other: PublicKey): boolean {
    return this.toHex() === other.toHex();
  }

  /** The PEM form, so that `JSON.stringify` and string templates show something useful. */
  toString(): string {
    return this.toPem();
  }
}

/** An Ed25519 private key (its 32-byte seed). Never printed: `toString` shows the fingerprint. */
export class PrivateKey {
  readonly #seed: Uint8Array;
  readonly #public: PublicKey;

  private constructor(seed: Uint8Array) {
    this.#seed = seed.slice();
    this.#public = PublicKey.fromBytes(ed25519.getPublicKey(this.#seed));
  }

  /** A new key from the platform's CSPRNG. */
  static generate(): PrivateKey {
    return new PrivateKey(randomBytes(32));
  }

  /**
   * A key from its 32-byte seed (the "raw" private key of RFC 8032).
   *
   * @throws {KeyError} when there are not 32 bytes.
   */
  static fromSeed(seed: Uint8Array): PrivateKey {
    if (seed.length !== 32) throw new KeyError(`an Ed25519 private key has 32 bytes, not ${seed.length}`);
    return new PrivateKey(seed);
  }

  /**
   * Reads PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm
   * Ed25519` writes, v1 or v2 with the public key) or the seed as 64 hex characters.
   *
   * @throws {KeyError} for anything else, or a v2 key whose public half does not match.
   */
  static parse(text: string): PrivateKey {
    const t = text.trim();
    if (t.startsWith("-----BEGIN")) return PrivateKey.fromPkcs8(pemBody(t, "PRIVATE KEY"));
    if (/^[0-9a-fA-F]{64}$/.test(t)) return PrivateKey.fromSeed(fromHex(t));
    throw new KeyError("not a PEM PKCS#8 private key or 64 hex characters");
  }

  /**
   * Reads a DER PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` (RFC 5958).
   *
   * @throws {KeyError} when it is not an Ed25519 private key.
   */
  static fromPkcs8(der: Uint8Array): PrivateKey {
    if (der.length === 48 && startsWith(der, PKCS8_PREFIX)) return PrivateKey.fromSeed(der.slice(16));
    const outer = readTlv(der, 0);
    if (!outer || outer.tag !== 0x30 || outer.end !== der.length) throw new KeyError(unsupported(der));
    const version = readTlv(der, outer.start);
    const alg = version && version.tag === 0x02 ? readTlv(der, version.end) : undefined;
    if (!alg || alg.tag !== 0x30) throw new KeyError(unsupported(der));
    if (!startsWith(der.subarray(alg.start, alg.end), OID_ED25519)) throw new KeyError(unsupported(der));
    const octets = readTlv(der, alg.end);
    if (!octets || octets.tag !== 0x04) throw new KeyError("PKCS#8 key without its private key octets");
    const inner = readTlv(der, octets.start);
    if (!inner || inner.tag !== 0x04 || inner.end - inner.start !== 32) {
      throw new KeyError("PKCS#8 key whose private key is not a 32-byte Ed25519 seed");
    }
    const key = PrivateKey.fromSeed(der.slice(inner.start, inner.end));
    // RFC 5958 v2 may carry the public key as [1]; when present it must be ours.
    let pos = octets.end;
    while (pos < outer.end) {
      const field = readTlv(der, pos);
      if (!field) break;
      if (field.tag === 0x81) {
        const pub = der.subarray(field.start + 1, field.end); // skip the BIT STRING's unused-bits byte
        if (toHex(pub) !== key.publicKey.toHex()) throw new KeyError("PKCS#8 public key does not match its private key");
      }
      pos = field.end;
    }
    return key;
  }

  /** The matching public key. */
  get publicKey(): PublicKey {
    return this.#public;
  }

  /** The 32-byte seed. Keep it secret. */
  get seed(): Uint8Array {
    return this.#seed.slice();
  }

  /** DER PKCS#8 v1. */
  toPkcs8(): Uint8Array {
    return concatBytes(PKCS8_PREFIX, this.#seed);
  }

  /** PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`), readable by OpenSSL and the Rust SDK. */
  toPem(): string {
    return `-----BEGIN PRIVATE KEY-----\n${toBase64(this.toPkcs8())}\n-----END PRIVATE KEY-----\n`;
  }

  /** The 64-byte Ed25519 signature of `message`. */
  sign(message: Uint8Array | string): Uint8Array {
    return ed25519.sign(typeof message === "string" ? utf8(message) : message, this.#seed);
  }

  /** {@link PrivateKey.sign}, base64 (standard, padded): the form of AMP signatures. */
  signBase64(message: Uint8Array | string): string {
    return toBase64(this.sign(message));
  }

  /** Shows the fingerprint, never the key. */
  toString(): string {
    return `PrivateKey(${this.#public.fingerprint()})`;
  }

  /** Keeps the key out of `JSON.stringify` by accident; use {@link PrivateKey.toPem}. */
  toJSON(): string {
    return this.toString();
  }
}

/** The base64 body of a PEM block with `label`, decoded. */
function pemBody(text: string, label: string): Uint8Array {
  const t = text.replace(/\r\n?/g, "\n");
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`);
  const m = re.exec(t);
  if (!m) {
    const found = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(t)?.[1] ?? "unknown";
    if (found.includes("RSA")) throw new KeyError("RSA keys are not supported; AMP keys are Ed25519");
    if (found.includes("EC")) throw new KeyError("ECDSA keys are not supported; AMP keys are Ed25519");
    throw new KeyError(`expected a PEM "${label}" block, found "${found}"`);
  }
  try {
    return fromBase64(m[1]!);
  } catch {
    throw new KeyError(`the PEM "${label}" block is not base64`);
  }
}

function unsupported(der: Uint8Array): string {
  if (contains(der, OID_RSA)) return "RSA keys are not supported; AMP keys are Ed25519";
  if (contains(der, OID_EC)) return "ECDSA keys are not supported; AMP keys are Ed25519";
  return "not an Ed25519 key";
}

function startsWith(a: Uint8Array, prefix: Uint8Array): boolean {
  if (a.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

function contains(a: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= a.length; i++) {
    for (let j = 0; j < needle.length; j++) if (a[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** One DER tag-length-value at `pos`: its tag, where its content starts and ends. */
function readTlv(der: Uint8Array, pos: number): { tag: number; start: number; end: number } | undefined {
  if (pos + 2 > der.length) return undefined;
  const tag = der[pos]!;
  let len = der[pos + 1]!;
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 2 || start + n > der.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | der[start + i]!;
    start += n;
  }
  const end = start + len;
  return end <= der.length ? { tag, start, end } : undefined;
}
