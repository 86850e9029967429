/**
 * Agent addresses (spec 02): `name@scope.provider`, case-insensitive, stored lowercase.
 *
 * The spec does not say how many labels a provider domain has. As the public clients and
 * the test vectors do, the provider is the **last two labels** unless a known provider
 * domain is given (your own provider's, from `/v1/info`), which then wins whatever its
 * label count. Within the scope the **tenant is the rightmost label**; labels to its left
 * are platform and repo (`agents-web.github.23blocks`: tenant `23blocks`).
 *
 * {@link parseAddressParts} is the test-vector parser: it reports the whole scope as
 * `tenant` (`bob@team.acme.crabmail.ai` → `team.acme`), which is what the vectors expect.
 *
 * @module
 */

import { AmpError } from "./errors.js";

/** Longest address, as for e-mail. */
export const MAX_ADDRESS_LENGTH = 254;
/** Longest name or label. */
export const MAX_LABEL_LENGTH = 63;

const NAME_RE = /^[a-z0-9_-]{1,63}$/;
const LABEL_RE = /^[a-z0-9-]{1,63}$/;
const MESSAGE_ID_RE = /^msg_[0-9]+_[a-f0-9]+$/;

/** An address that does not follow spec 02. */
export class AddressError extends AmpError {
  constructor(message: string) {
    super("invalid_address", message);
    this.name = "AddressError";
  }
}

/** Whether `name` is a valid agent name: 1–63 of `a-z 0-9 - _` (after lowercasing). */
export function isValidName(name: string): boolean {
  return NAME_RE.test(name.toLowerCase());
}

/** Whether `label` is a valid scope or domain label: 1–63 of `a-z 0-9 -` (after lowercasing). */
export function isValidLabel(label: string): boolean {
  return LABEL_RE.test(label.toLowerCase());
}

/** Whether `id` is a message id of spec 04 (`msg_<digits>_<lowercase hex>`; test vectors msgid-*). */
export function isValidMessageId(id: string): boolean {
  return MESSAGE_ID_RE.test(id);
}

/** Whether `domain` is reserved for local networks (spec 06a): `*.local`, `*.internal`, `*.localhost`. */
export function isLocalNetworkDomain(domain: string): boolean {
  const d = domain.toLowerCase().replace(/\.$/, "");
  return ["local", "internal", "localhost"].some((tld) => d === tld || d.endsWith(`.${tld}`));
}

/** An address as the test vectors parse it. */
export interface AddressParts {
  /** The agent name. */
  name: string;
  /** Everything between `@` and the provider; `null` for a short form. */
  tenant: string | null;
  /** The last two labels; `null` for a short form. */
  provider: string | null;
  /** Whether the provider is a local-network domain; `null` for a short form. */
  is_local: boolean | null;
}

/**
 * Parses an address exactly as the spec's test vectors do (two-label provider, whole scope
 * as `tenant`, a bare name as a short form).
 *
 * @throws {AddressError} when the name or a label is invalid, the tenant is missing, or the
 *   address is too long.
 */
export function parseAddressParts(input: string): AddressParts {
  const text = input.trim().toLowerCase();
  checkLength(text);
  const at = text.indexOf("@");
  if (at < 0) {
    checkName(text);
    return { name: text, tenant: null, provider: null, is_local: null };
  }
  const name = text.slice(0, at);
  checkName(name);
  const labels = splitLabels(text.slice(at + 1));
  if (labels.length < 3) throw new AddressError("address has no tenant before its provider domain");
  const provider = labels.slice(-2).join(".");
  return { name, tenant: labels.slice(0, -2).join("."), provider, is_local: isLocalNetworkDomain(provider) };
}

/** How to read short forms and which provider domain is known. */
export interface AddressContext {
  /** A provider domain known to be one (yours): an address ending with it has it as provider. */
  providerDomain?: string | undefined;
  /** The tenant a bare name expands into (the sender's), for short forms. */
  defaultTenant?: string | undefined;
}

/** A full, normalised (lowercase) agent address. */
export class Address {
  /** The agent name (local part). */
  readonly name: string;
  /** Scope labels left to right, tenant last (`["agents-web", "github", "23blocks"]`). */
  readonly scope: readonly string[];
  /** The provider domain. */
  readonly provider: string;

  private constructor(name: string, scope: string[], provider: string) {
    this.name = name;
    this.scope = Object.freeze(scope);
    this.provider = provider;
  }

  /**
   * Builds an address from its parts, validating each (lowercased).
   *
   * @throws {AddressError} when a part is invalid or the result is too long.
   */
  static build(name: string, scope: readonly string[] | string, provider: string): Address {
    const n = name.toLowerCase();
    checkName(n);
    const s = (typeof scope === "string" ? scope.split(".") : [...scope]).map((l) => l.toLowerCase());
    if (s.length === 0 || (s.length === 1 && s[0] === "")) throw new AddressError("address has no tenant");
    for (const l of s) checkLabel(l);
    const p = provider.toLowerCase();
    const pl = splitLabels(p);
    if (pl.length < 2 && p !== "localhost") throw new AddressError(`provider domain "${p}" needs at least two labels`);
    const a = new Address(n, s, p);
    checkLength(a.toString());
    return a;
  }

  /**
   * Parses a full address, or a short form with `ctx` (spec 02: `bob` becomes
   * `bob@<defaultTenant>.<providerDomain>`, `bob@acme` becomes `bob@acme.<providerDomain>`).
   *
   * @throws {AddressError} on invalid names or labels, a missing tenant, or a short form with
   *   nothing to expand it with.
   */
  static parse(input: string, ctx: AddressContext = {}): Address {
    const text = input.trim().toLowerCase();
    if (!text) throw new AddressError("address is empty");
    checkLength(text);
    const local = ctx.providerDomain?.toLowerCase();
    const at = text.indexOf("@");
    if (at < 0) {
      if (!ctx.defaultTenant || !local) throw new AddressError(`short address "${text}" cannot be expanded here`);
      return Address.build(text, [ctx.defaultTenant], local);
    }
    const name = text.slice(0, at);
    const domain = text.slice(at + 1);
    checkName(name);
    const labels = splitLabels(domain);
    if (labels.length === 1) {
      if (!local) throw new AddressError(`short address "${text}" cannot be expanded here`);
      return Address.build(name, labels, local);
    }
    if (local && domain.endsWith(`.${local}`)) {
      return Address.build(name, domain.slice(0, -local.length - 1).split("."), local);
    }
    if (local && domain === local) throw new AddressError("address has no tenant before its provider domain");
    if (labels.length < 3) throw new AddressError("address has no tenant before its provider domain");
    return Address.build(name, labels.slice(0, -2), labels.slice(-2).join("."));
  }

  /** Whether `input` parses as a full address (or a short form with `ctx`). */
  static isValid(input: string, ctx?: AddressContext): boolean {
    try {
      Address.parse(input, ctx);
      return true;
    } catch {
      return false;
    }
  }

  /** The tenant: the rightmost scope label. */
  get tenant(): string {
    return this.scope[this.scope.length - 1]!;
  }

  /** `name@tenant.provider`: the address without platform or repo labels. */
  get shortAddress(): string {
    return `${this.name}@${this.tenant}.${this.provider}`;
  }

  /** Whether the provider is a local-network domain (spec 06a). */
  get isLocalNetwork(): boolean {
    return isLocalNetworkDomain(this.provider);
  }

  /** Whether `other` (an address or its text) is the same address, ignoring case. */
  equals(other: Address | string): boolean {
    return this.toString() === (typeof other === "string" ? other.trim().toLowerCase() : other.toString());
  }

  /** The whole address. */
  toString(): string {
    return `${this.name}@${this.scope.join(".")}.${this.provider}`;
  }

  /** The whole address, for `JSON.stringify`. */
  toJSON(): string {
    return this.toString();
  }
}

function checkLength(s: string): void {
  if ([...s].length > MAX_ADDRESS_LENGTH) throw new AddressError(`address is longer than ${MAX_ADDRESS_LENGTH} characters`);
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new AddressError("agent name must be 1-63 characters of a-z, 0-9, '-' and '_'");
}

function checkLabel(label: string): void {
  if (!LABEL_RE.test(label)) throw new AddressError(`address label "${label}" must be 1-63 characters of a-z, 0-9 and '-'`);
}

function splitLabels(domain: string): string[] {
  const labels = domain.split(".");
  for (const l of labels) checkLabel(l);
  return labels;
}
