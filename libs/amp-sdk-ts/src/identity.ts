/**
 * An agent's identity: its Ed25519 key plus what the provider answered at registration.
 * Serialisable to plain JSON (the key as PKCS#8 PEM) so it can be kept in a file
 * (`amp-sdk/node`'s `saveIdentity`, mode 0600), `localStorage`, a secret store, …
 *
 * @module
 */

import { DecodeError } from "./errors.js";
import { PrivateKey } from "./keys.js";
import type { Registration } from "./types.js";

/** Version of {@link IdentityData}. */
export const IDENTITY_VERSION = 1;

/** An identity as plain JSON. Contains the private key and the API key: keep it secret. */
export interface IdentityData {
  version: typeof IDENTITY_VERSION;
  /** The provider's API root the agent registered with. */
  provider_url: string;
  /** The registration answer. */
  registration: Registration;
  /** The Ed25519 private key, PEM PKCS#8. */
  private_key: string;
}

/** A registered agent's credentials. */
export class Identity {
  /** The signing key. */
  key: PrivateKey;
  /** The registration answer (its `api_key` changes on API-key rotation). */
  registration: Registration;
  /** The provider's API root (`…/v1`). */
  readonly providerUrl: string;

  constructor(key: PrivateKey, registration: Registration, providerUrl: string) {
    this.key = key;
    this.registration = registration;
    this.providerUrl = providerUrl;
  }

  /** The agent's full address, the `from` of everything it sends. */
  get address(): string {
    return this.registration.address;
  }

  /** The API key. Secret. */
  get apiKey(): string {
    return this.registration.api_key;
  }

  /** The provider's id for the agent. */
  get agentId(): string {
    return this.registration.agent_id;
  }

  /** The plain-JSON form (with secrets). */
  toData(): IdentityData {
    return { version: IDENTITY_VERSION, provider_url: this.providerUrl, registration: this.registration, private_key: this.key.toPem() };
  }

  /**
   * Reads {@link Identity.toData}'s output (an object or its JSON text).
   *
   * @throws {DecodeError} when it is not an identity of a supported version.
   * @throws {KeyError} when the key is not an Ed25519 private key.
   */
  static fromData(data: IdentityData | string): Identity {
    const d = (typeof data === "string" ? JSON.parse(data) : data) as Partial<IdentityData>;
    if (!d || d.version !== IDENTITY_VERSION) throw new DecodeError(`identity version ${String(d?.version)} is not supported`);
    if (!d.registration || typeof d.private_key !== "string" || typeof d.provider_url !== "string") {
      throw new DecodeError("an identity needs provider_url, registration and private_key");
    }
    return new Identity(PrivateKey.parse(d.private_key), normaliseRegistration(d.registration), d.provider_url);
  }

  /** Shows the address only: never the keys, even through `console.log`. */
  toString(): string {
    return `Identity(${this.address})`;
  }

  /** `JSON.stringify` shows the address only; use {@link Identity.toData} to persist. */
  toJSON(): { address: string; agent_id: string } {
    return { address: this.address, agent_id: this.agentId };
  }

  /** Node's `util.inspect` hook: the address only. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

/**
 * A registration answer with `agent_id`/`api_key` set from whichever spelling the provider
 * used (`agentId`/`apiKey` too).
 *
 * @throws {DecodeError} when the address, agent id or API key is missing.
 */
export function normaliseRegistration(raw: unknown): Registration {
  if (typeof raw !== "object" || raw === null) throw new DecodeError("the registration answer is not an object");
  const r = raw as Record<string, unknown>;
  const pick = (...keys: string[]) => keys.map((k) => r[k]).find((v): v is string => typeof v === "string" && v !== "");
  const address = pick("address");
  const agentId = pick("agent_id", "agentId");
  const apiKey = pick("api_key", "apiKey");
  if (!address || !agentId || !apiKey) throw new DecodeError("the registration answer lacks address, agent_id or api_key");
  const provider = typeof r["provider"] === "object" && r["provider"] !== null ? (r["provider"] as Registration["provider"]) : {};
  return { ...r, address: address.toLowerCase(), agent_id: agentId, api_key: apiKey, provider };
}
