// Ed25519 keys: RFC 8032 vectors, PEM/DER/hex forms, interop with Node's crypto (OpenSSL),
// fingerprints, strict verification, refusal of other algorithms.

import assert from "node:assert/strict";
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { test } from "node:test";
import { fromHex, KeyError, PrivateKey, PublicKey, toBase64, toHex } from "amp-sdk";

// RFC 8032 §7.1, test 1 (empty message) and test 2 (one byte).
const SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUB = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const SIG_EMPTY = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
const SEED2 = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
const PUB2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const SIG_72 = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

test("RFC 8032 vectors sign and verify", () => {
  const k = PrivateKey.fromSeed(fromHex(SEED));
  assert.equal(k.publicKey.toHex(), PUB);
  assert.equal(toHex(k.sign(new Uint8Array())), SIG_EMPTY);
  const k2 = PrivateKey.parse(SEED2);
  assert.equal(k2.publicKey.toHex(), PUB2);
  assert.equal(toHex(k2.sign(new Uint8Array([0x72]))), SIG_72);
  assert.ok(k2.publicKey.verify(fromHex(SIG_72), new Uint8Array([0x72])));
  assert.ok(!k2.publicKey.verify(fromHex(SIG_72), new Uint8Array([0x73])));
  assert.ok(!k.publicKey.verify(fromHex(SIG_72), new Uint8Array([0x72])));
});

test("PEM round trips and matches what OpenSSL (node:crypto) writes", () => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const privPem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const pubPem = publicKey.export({ format: "pem", type: "spki" }).toString();
  const k = PrivateKey.parse(privPem);
  assert.equal(k.publicKey.toPem(), pubPem);
  assert.ok(k.publicKey.equals(PublicKey.parse(pubPem)));
  assert.equal(k.toPem(), privPem);
  // Node reads ours back.
  const back = createPrivateKey(k.toPem());
  assert.equal(createPublicKey(back).export({ format: "pem", type: "spki" }).toString(), pubPem);
  // Signatures cross in both directions.
  const msg = Buffer.from("alice@acme.example.test|bob@acme.example.test|Hi|normal||x");
  assert.ok(nodeVerify(null, msg, publicKey, Buffer.from(k.sign(msg))));
  assert.ok(k.publicKey.verify(new Uint8Array(nodeSign(null, msg, privateKey)), msg));
});

test("lenient armour: CRLF, no final newline, surrounding space; hex keys", () => {
  const k = PrivateKey.generate();
  const crlf = k.publicKey.toPem().trim().replace(/\n/g, "\r\n");
  assert.ok(PublicKey.parse(`  ${crlf}  `).equals(k.publicKey));
  assert.ok(PublicKey.parse(k.publicKey.toHex()).equals(k.publicKey));
  assert.ok(PublicKey.parse(k.publicKey.toHex().toUpperCase()).equals(k.publicKey));
  assert.equal(PrivateKey.parse(k.toPem().trimEnd()).publicKey.toHex(), k.publicKey.toHex());
  assert.equal(PrivateKey.parse(toHex(k.seed)).publicKey.toHex(), k.publicKey.toHex());
});

test("PKCS#8 v2 (RFC 5958, with the public key) is read, and a mismatching public key refused", () => {
  const k = PrivateKey.fromSeed(fromHex(SEED));
  const v2 = (pub: string) => fromHex(`3051020101300506032b657004220420${SEED}812100${pub}`);
  const pem = (der: Uint8Array) => `-----BEGIN PRIVATE KEY-----\n${toBase64(der)}\n-----END PRIVATE KEY-----\n`;
  assert.equal(PrivateKey.parse(pem(v2(PUB))).publicKey.toHex(), PUB);
  assert.throws(() => PrivateKey.parse(pem(v2(PUB2))), KeyError);
  assert.equal(k.publicKey.toHex(), PUB);
});

test("fingerprint is SHA256: + base64 of SHA-256 over the raw key", () => {
  const k = PrivateKey.fromSeed(fromHex(SEED));
  assert.equal(k.publicKey.fingerprint(), `SHA256:${createHash("sha256").update(Buffer.from(PUB, "hex")).digest("base64")}`);
});

test("other algorithms and garbage are refused by name", () => {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  assert.throws(() => PublicKey.parse(rsa.publicKey.export({ format: "pem", type: "spki" }).toString()), /RSA/);
  assert.throws(() => PrivateKey.parse(rsa.privateKey.export({ format: "pem", type: "pkcs8" }).toString()), /RSA/);
  assert.throws(() => PublicKey.parse(ec.publicKey.export({ format: "pem", type: "spki" }).toString()), /ECDSA/);
  assert.throws(() => PublicKey.parse("not a key"), KeyError);
  assert.throws(() => PublicKey.fromBytes(new Uint8Array(31)), KeyError);
  assert.throws(() => PrivateKey.fromSeed(new Uint8Array(33)), KeyError);
  assert.throws(() => PrivateKey.parse(PrivateKey.generate().publicKey.toPem()), /PRIVATE KEY/);
});

test("strict verification refuses a non-canonical S and malformed signatures", () => {
  const k = PrivateKey.fromSeed(fromHex(SEED));
  const sig = fromHex(SIG_EMPTY);
  // S + L (the group order) verifies under lax rules only.
  const L = BigInt("0x1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed");
  let s = 0n;
  for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
  s += L;
  const bad = sig.slice();
  for (let i = 0; i < 32; i++) bad[32 + i] = Number((s >> BigInt(8 * i)) & 0xffn);
  assert.ok(!k.publicKey.verify(bad, new Uint8Array()));
  assert.ok(!k.publicKey.verify(sig.slice(0, 63), new Uint8Array()));
  assert.ok(!k.publicKey.verifyBase64("***", new Uint8Array()));
});

test("private keys never print", () => {
  const k = PrivateKey.generate();
  assert.ok(!String(k).includes(toHex(k.seed)));
  assert.ok(!JSON.stringify({ k }).includes(toBase64(k.seed)));
  assert.match(String(k), /^PrivateKey\(SHA256:/);
});
