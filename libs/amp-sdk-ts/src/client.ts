/**
 * {@link AmpClient}: one provider. Unauthenticated calls (health, info, registration,
 * discovery) live here; everything an agent does with its API key lives on the
 * {@link Agent} that {@link AmpClient.register} returns (or {@link AmpClient.agent} rebuilds
 * from a saved {@link Identity}).
 *
 * @module
 */

import { Agent } from "./agent.js";
import { DecodeError, InvalidInputError, TransportError } from "./errors.js";
import { Http, type HttpOptions, joinUrl } from "./http.js";
import { Identity, type IdentityData, normaliseRegistration } from "./identity.js";
import { PrivateKey, PublicKey } from "./keys.js";
import type { DeliveryPrefs, Health, ProviderInfo, WellKnown } from "./types.js";
import type { WebSocketConstructor } from "./ws.js";

/** Options of an {@link AmpClient}. */
export interface ClientOptions extends HttpOptions {
  /**
   * The WebSocket class for {@link Agent.subscribe}. Default: the runtime's global
   * `WebSocket` (browsers, Deno, Bun, Node ≥ 22), else the `ws` package (Node 20).
   */
  WebSocket?: WebSocketConstructor;
}

/** What {@link AmpClient.register} sends. */
export interface RegisterOptions {
  /** The agent name (1–63 of `a-z 0-9 - _`). */
  name: string;
  /** The tenant (open mode); optional with a user key, whose tenant is used. */
  tenant?: string;
  /** The key to register; a new one is generated when absent. */
  key?: PrivateKey;
  /** An owner's user key (`uk_…`): owner-mode registration. */
  userKey?: string;
  /** A display name. */
  alias?: string;
  /** Platform and repo scope labels (`name@repo.platform.tenant.provider`). */
  scope?: { platform?: string; repo?: string };
  /** Webhook and push preferences. */
  delivery?: DeliveryPrefs;
  /** Free-form metadata (a JSON object). */
  metadata?: Record<string, unknown>;
  /** Agent capabilities (amp-spec-next); sent only when given, as older providers refuse the member. */
  capabilities?: string[];
}

/** Where a domain's AMP provider lives (spec 06 discovery). */
export interface Discovery {
  /** The provider domain. */
  provider: string;
  /** Its API base. */
  endpoint: string;
  /** Its key fingerprint, when published. */
  fingerprint?: string;
  /** Its public key (PEM), from the well-known document. */
  public_key?: string;
  /** Its capabilities, from the well-known document. */
  capabilities?: string[];
  /** Where the answer came from. */
  source: "dns" | "well-known";
}

/** Options of {@link AmpClient.discover}. */
export interface DiscoverOptions {
  /** The `fetch` to use. */
  fetch?: typeof globalThis.fetch;
  /**
   * A TXT resolver for `_amp._tcp.<domain>` (browsers have none; in Node pass
   * `dns.promises.resolveTxt`). Without one, only the well-known document is read.
   */
  resolveTxt?: (name: string) => Promise<string[][]>;
  /** Read the well-known document from this base URL instead of `https://<domain>` (tests, split horizon). */
  wellKnownBase?: string;
  /** Timeout in ms (default 10000). */
  timeoutMs?: number;
}

/** A client of one AMP provider. */
export class AmpClient {
  /** @internal */
  readonly http: Http;
  /** @internal */
  readonly options: ClientOptions;
  #info: Promise<ProviderInfo> | undefined;

  /**
   * A client of the provider at `baseUrl` (`http://127.0.0.1:8080`, or an API root such as
   * `https://api.example.test/v1` or `…/api/v1`, as registrations report it).
   *
   * @throws {InvalidInputError} when it is not an absolute http(s) URL.
   */
  constructor(baseUrl: string | URL, options: ClientOptions = {}) {
    this.http = new Http(baseUrl, options);
    this.options = options;
  }

  /** Finds `domain`'s provider ({@link AmpClient.discover}) and returns a client of it. */
  static async forDomain(domain: string, options: ClientOptions & DiscoverOptions = {}): Promise<AmpClient> {
    const d = await AmpClient.discover(domain, options);
    return new AmpClient(d.endpoint, options);
  }

  /**
   * Discovery (spec 06): the DNS TXT record `_amp._tcp.<domain>` (`v=AMP1; endpoint=…;
   * pubkey=SHA256:…`) when a resolver is given, else (or when there is none)
   * `https://<domain>/.well-known/agent-messaging.json`. When both name a key, they must agree.
   *
   * @throws {TransportError} when neither answers; {@link DecodeError} for a malformed answer
   *   or disagreeing fingerprints.
   */
  static async discover(domain: string, options: DiscoverOptions = {}): Promise<Discovery> {
    const d = domain.trim().toLowerCase().replace(/\.$/, "");
    let txt: Discovery | undefined;
    if (options.resolveTxt) {
      try {
        const records = await options.resolveTxt(`_amp._tcp.${d}`);
        for (const chunks of records) {
          const parsed = parseTxt(chunks.join(""));
          if (parsed?.["v"] === "AMP1" && parsed["endpoint"]) {
            txt = { provider: d, endpoint: parsed["endpoint"], source: "dns", ...(parsed["pubkey"] ? { fingerprint: parsed["pubkey"] } : {}) };
            break;
          }
        }
      } catch {
        // No record: fall back to the well-known document.
      }
    }
    let wk: WellKnown | undefined;
    try {
      const base = options.wellKnownBase ?? `https://${d}`;
      const http = new Http(base, { ...(options.fetch ? { fetch: options.fetch } : {}), timeoutMs: options.timeoutMs ?? 10_000, retry: { retries: 1 } });
      const url = new URL("/.well-known/agent-messaging.json", base);
      wk = await http.request<WellKnown>({ method: "GET", path: url, idempotent: true });
    } catch (e) {
      if (!txt) throw e instanceof TransportError || e instanceof DecodeError ? e : new TransportError(`no AMP provider found for ${d}`, { cause: e });
    }
    if (wk && (typeof wk.endpoint !== "string" || !wk.endpoint)) throw new DecodeError(`${d}'s well-known document has no endpoint`);
    if (txt && wk?.fingerprint && txt.fingerprint && txt.fingerprint !== wk.fingerprint) {
      throw new DecodeError(`${d}: the DNS record and the well-known document name different keys`);
    }
    if (wk?.public_key && wk.fingerprint && PublicKey.parse(wk.public_key).fingerprint() !== wk.fingerprint) {
      throw new DecodeError(`${d}: the well-known public key does not match its fingerprint`);
    }
    if (txt) return { ...txt, ...(wk?.public_key ? { public_key: wk.public_key } : {}), ...(wk?.capabilities ? { capabilities: wk.capabilities } : {}) };
    const w = wk!;
    return {
      provider: w.provider ?? d,
      endpoint: w.endpoint,
      source: "well-known",
      ...(w.fingerprint ? { fingerprint: w.fingerprint } : {}),
      ...(w.public_key ? { public_key: w.public_key } : {}),
      ...(w.capabilities ? { capabilities: w.capabilities } : {}),
    };
  }

  /** The API root all paths are resolved against (`…/v1`). */
  get apiUrl(): URL {
    return new URL(this.http.root.href);
  }

  /** The WebSocket URL (`ws(s)://…/v1/ws`). */
  get wsUrl(): URL {
    const u = joinUrl(this.http.root, ["ws"]);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u;
  }

  /** `GET /v1/health`. */
  health(signal?: AbortSignal): Promise<Health> {
    return this.http.request<Health>({ method: "GET", path: ["health"], idempotent: true, signal });
  }

  /**
   * `GET /v1/info`: capabilities, limits, the provider's key. Cached after the first call;
   * `refresh` asks again.
   */
  info(refresh = false): Promise<ProviderInfo> {
    if (refresh || !this.#info) {
      const p = this.http.request<ProviderInfo>({ method: "GET", path: ["info"], idempotent: true });
      this.#info = p;
      p.catch(() => {
        if (this.#info === p) this.#info = undefined;
      });
    }
    return this.#info;
  }

  /** Whether `/v1/info` lists `capability`. */
  async supports(capability: string): Promise<boolean> {
    const info = await this.info();
    return Array.isArray(info.capabilities) && info.capabilities.includes(capability);
  }

  /** `GET /.well-known/agent-messaging.json` of this provider's host. */
  wellKnown(): Promise<WellKnown> {
    const url = new URL("/.well-known/agent-messaging.json", this.http.root);
    return this.http.request<WellKnown>({ method: "GET", path: url, idempotent: true });
  }

  /**
   * `POST /v1/register` (spec 03): registers an agent (open mode with `tenant`, owner mode
   * with `userKey`) and returns it, ready to send and receive.
   *
   * @throws {ConflictError} `name_taken` (suggestions in `body.suggestions`);
   *   {@link ValidationError} for an invalid name or tenant; {@link UnauthorizedError} for a
   *   bad user key; {@link RateLimitedError}.
   */
  async register(opts: RegisterOptions): Promise<Agent> {
    if (!opts || typeof opts.name !== "string") throw new InvalidInputError("register needs a name");
    const key = opts.key ?? PrivateKey.generate();
    const body: Record<string, unknown> = { name: opts.name, public_key: key.publicKey.toPem(), key_algorithm: "Ed25519" };
    if (opts.tenant !== undefined) body["tenant"] = opts.tenant;
    if (opts.alias !== undefined) body["alias"] = opts.alias;
    if (opts.scope !== undefined) body["scope"] = opts.scope;
    if (opts.delivery !== undefined) body["delivery"] = opts.delivery;
    if (opts.metadata !== undefined) body["metadata"] = opts.metadata;
    if (opts.capabilities !== undefined) body["capabilities"] = opts.capabilities;
    // Not retried on a lost answer: a second registration would meet `name_taken`.
    const answer = await this.http.request<unknown>({ method: "POST", path: ["register"], body, token: opts.userKey, idempotent: false });
    const registration = normaliseRegistration(answer);
    return new Agent(this, new Identity(key, registration, this.http.root.href));
  }

  /** The agent of a saved identity (an {@link Identity} or its {@link IdentityData}). */
  agent(identity: Identity | IdentityData | string): Agent {
    return new Agent(this, identity instanceof Identity ? identity : Identity.fromData(identity));
  }
}

function parseTxt(text: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const part of text.split(";")) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim().toLowerCase()] = part.slice(i + 1).trim();
  }
  return Object.keys(out).length ? out : undefined;
}
