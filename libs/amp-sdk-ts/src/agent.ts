/**
 * {@link Agent}: a registered agent on one provider, and everything it does with its API
 * key: its profile, resolution, key rotation, sending (signed, flat or envelope body),
 * pickup with cursors and long-poll, the count, every ack form, read receipts, receipts,
 * attachments, and the WebSocket ({@link Agent.subscribe}).
 *
 * @module
 */

import { type AttachmentInput, type AttachmentStatus, AttachmentsApi, type DownloadOptions, type UploadOptions } from "./attachments.js";
import { Address } from "./address.js";
import type { AmpClient } from "./client.js";
import { InvalidInputError, NotFoundError, SignatureError, UnsupportedError } from "./errors.js";
import type { Identity } from "./identity.js";
import { PrivateKey, PublicKey } from "./keys.js";
import { Message } from "./message.js";
import { buildRoute, type BuiltRoute, type PayloadInput, type SendOptions } from "./route.js";
import type {
  AckResult,
  AgentList,
  AgentProfile,
  ApiKeyRotation,
  Attachment,
  BatchAckResult,
  DeliveryPrefs,
  KeyRotation,
  PendingCount,
  PendingPageWire,
  ReadResult,
  Receipts,
  ResolvedAgent,
  RouteResult,
  TrustLevel,
} from "./types.js";
import { type SubscribeOptions, Subscription } from "./ws.js";

/** A page of pickup. */
export interface PendingPage {
  /** Oldest first. */
  messages: Message[];
  /** Messages in this page. */
  count: number;
  /** Messages still queued beyond this page. */
  remaining: number;
  /** Pass as `after` to get only what was queued after this page. */
  nextCursor: string | undefined;
}

/** Options of {@link Agent.pending}. */
export interface PendingOptions {
  /** Most messages (provider default 100, max 1000). */
  limit?: number;
  /** Only messages queued after this cursor (`c_<n>`, from `nextCursor` or a message's `cursor`). */
  after?: string;
  /** Seconds (≤ 30) to hold the request open for a message when none is queued (long-poll). */
  wait?: number;
  /** Cancels the request. */
  signal?: AbortSignal;
}

/** The path forms of a single ack (all one idempotent transition on providers that follow COMPAT.md). */
export type AckForm =
  /** `DELETE /v1/messages/pending/{id}` (spec 08). */
  | "delete"
  /** `DELETE /v1/messages/pending?id={id}` (the plugin's local-provider flow). */
  | "delete-query"
  /** `POST /v1/inbox/{id}/ack` (the plugin's external-provider flow). */
  | "inbox"
  /** `POST /v1/messages/pending/ack {ids:[id]}` (spec 08 batch). */
  | "batch"
  /** `POST /v1/messages/pending {ids:[id]}` (spec 09). */
  | "pending-post";

/** A registered agent. */
export class Agent {
  /** The provider client. */
  readonly client: AmpClient;
  /** The credentials (updated in place by key rotation). */
  readonly identity: Identity;
  readonly #attachments: AttachmentsApi;

  constructor(client: AmpClient, identity: Identity) {
    this.client = client;
    this.identity = identity;
    this.#attachments = new AttachmentsApi(client, () => this.identity.apiKey);
  }

  /** The agent's full address. */
  get address(): string {
    return this.identity.address;
  }

  /** The agent's public key. */
  get publicKey(): PublicKey {
    return this.identity.key.publicKey;
  }

  #token(): string {
    return this.identity.apiKey;
  }

  // ---- profile and directory ----

  /** `GET /v1/agents/me`. */
  me(): Promise<AgentProfile> {
    return this.client.http.request({ method: "GET", path: ["agents", "me"], token: this.#token(), idempotent: true });
  }

  /** `PATCH /v1/agents/me`: alias, delivery (webhook URL and secret, WebSocket preference), metadata. */
  update(patch: { alias?: string | null; delivery?: DeliveryPrefs; metadata?: Record<string, unknown> | null }): Promise<Record<string, unknown>> {
    return this.client.http.request({ method: "PATCH", path: ["agents", "me"], body: patch, token: this.#token(), idempotent: true });
  }

  /** `DELETE /v1/agents/me`: deregisters; the API key stops working and pending messages are deleted. */
  deregister(): Promise<Record<string, unknown>> {
    return this.client.http.request({ method: "DELETE", path: ["agents", "me"], token: this.#token(), idempotent: true });
  }

  /** `GET /v1/agents`: the agents of a tenant (the caller's own on our provider). */
  list(opts: { tenant?: string; search?: string; limit?: number; cursor?: string } = {}): Promise<AgentList> {
    return this.client.http.request({ method: "GET", path: ["agents"], query: { ...opts }, token: this.#token(), idempotent: true });
  }

  /** `GET /v1/agents/resolve/{address}`: an agent's public key and status. */
  resolve(address: string): Promise<ResolvedAgent> {
    return this.client.http.request({ method: "GET", path: ["agents", "resolve", address], token: this.#token(), idempotent: true });
  }

  // ---- keys ----

  /**
   * `POST /v1/auth/rotate-key`: a new API key (the old one keeps working for the
   * provider's grace period). The identity is updated: save it again.
   */
  async rotateApiKey(): Promise<ApiKeyRotation> {
    // Not retried: a lost answer would leave the caller without the new key while a retry
    // would rotate again.
    const r = await this.client.http.request<ApiKeyRotation>({ method: "POST", path: ["auth", "rotate-key"], token: this.#token(), idempotent: false });
    if (typeof r.api_key !== "string" || !r.api_key) throw new InvalidInputError("the provider answered rotate-key without an api_key");
    this.identity.registration = { ...this.identity.registration, api_key: r.api_key };
    return r;
  }

  /**
   * `POST /v1/auth/rotate-keys`: replaces the agent's Ed25519 key with `newKey` (generated
   * when absent), proving possession of the old one: `proof` is the old key's signature of
   * the new public key's PEM text exactly as sent (SPEC-CHECKLIST §4.20). The identity is
   * updated: save it again.
   */
  async rotateKeys(newKey: PrivateKey = PrivateKey.generate()): Promise<KeyRotation & { key: PrivateKey }> {
    const pem = newKey.publicKey.toPem();
    const proof = this.identity.key.signBase64(pem);
    const r = await this.client.http.request<KeyRotation>({
      method: "POST",
      path: ["auth", "rotate-keys"],
      body: { new_public_key: pem, key_algorithm: "Ed25519", proof },
      token: this.#token(),
      // Idempotent: the same proof for the same key; a repeat after success is refused
      // because the old key no longer signs, which the caller sees.
      idempotent: false,
    });
    if (r.fingerprint && r.fingerprint !== newKey.publicKey.fingerprint()) {
      throw new SignatureError("the provider registered another key than the one sent");
    }
    this.identity.key = newKey;
    return { ...r, key: newKey };
  }

  /** `DELETE /v1/auth/revoke-key`: revokes the API key immediately (this agent object stops working). */
  revokeApiKey(): Promise<Record<string, unknown>> {
    return this.client.http.request({ method: "DELETE", path: ["auth", "revoke-key"], token: this.#token(), idempotent: true });
  }

  // ---- sending ----

  /** Builds and signs a route request without sending it (see {@link buildRoute}). */
  buildMessage(to: string, subject: string, payload: PayloadInput, opts: SendOptions = {}): BuiltRoute {
    return buildRoute(this.identity.key, this.address, String(to), subject, payload, opts);
  }

  /**
   * `POST /v1/route`: signs and sends a message. Retried on transport errors, 429 and 5xx
   * with the same id, signature and idempotency key, so a retry is never a second copy.
   *
   * @throws {NotFoundError} unknown recipient; {@link ForbiddenError} `signature_invalid`;
   *   {@link ConflictError} `duplicate_message`; {@link RateLimitedError};
   *   {@link ServerError} `mailbox_full` (507); {@link UnsupportedError} for attachments the
   *   provider does not advertise.
   */
  async send(to: string, subject: string, payload: PayloadInput, opts: SendOptions & { signal?: AbortSignal } = {}): Promise<RouteResult> {
    await this.#checkAttachments(payload);
    return this.sendPrepared(this.buildMessage(to, subject, payload, opts), opts.signal);
  }

  /**
   * Sends a request made earlier by {@link Agent.buildMessage} (an outbox that signs now and
   * delivers later): sending it again, even after a restart, is answered with the first
   * result, as it keeps its id, signature and idempotency key.
   */
  sendPrepared(built: BuiltRoute, signal?: AbortSignal): Promise<RouteResult> {
    return this.client.http.request<RouteResult>({
      method: "POST",
      path: ["route"],
      body: built.body,
      rawBody: true,
      token: this.#token(),
      idempotent: true,
      signal,
    });
  }

  /** Replies to `message`: same thread, `in_reply_to` its id, subject `Re: …`. */
  reply(message: Message, payload: PayloadInput, opts: SendOptions & { signal?: AbortSignal; subject?: string } = {}): Promise<RouteResult> {
    const subject = opts.subject ?? (/^re:/i.test(message.subject) ? message.subject : `Re: ${message.subject}`);
    const threadId = opts.threadId ?? message.threadId;
    return this.send(message.from, subject, payload, { ...opts, inReplyTo: message.id, ...(threadId ? { threadId } : {}) });
  }

  async #checkAttachments(payload: PayloadInput): Promise<void> {
    if (typeof payload !== "object" || payload === null || !("message" in payload)) return;
    const atts = (payload as { attachments?: unknown }).attachments;
    if (!Array.isArray(atts) || atts.length === 0) return;
    const kinds = new Set(atts.map((a) => (typeof a === "object" && a && (a as Attachment)["storage"] === "afp" ? "afp" : "provider")));
    if (kinds.has("provider") && !(await this.client.supports("attachments"))) {
      throw new UnsupportedError("this provider does not advertise attachments");
    }
    if (kinds.has("afp") && !(await this.client.supports("attachments:afp"))) {
      throw new UnsupportedError("this provider does not advertise attachments:afp");
    }
  }

  // ---- receiving ----

  /**
   * `GET /v1/messages/pending`: a page of messages, oldest first. Messages stay pending
   * until acked; pass `after` (a cursor) to skip what was already seen.
   *
   * @throws {GoneError} `cursor_expired` (start again without `after`); {@link RateLimitedError}.
   */
  async pending(opts: PendingOptions = {}): Promise<PendingPage> {
    const wait = opts.wait === undefined ? undefined : Math.max(0, Math.min(30, Math.floor(opts.wait)));
    const page = await this.client.http.request<PendingPageWire>({
      method: "GET",
      path: ["messages", "pending"],
      query: { limit: opts.limit, after: opts.after, wait },
      token: this.#token(),
      idempotent: true,
      extraTimeoutMs: (wait ?? 0) * 1000,
      signal: opts.signal,
    });
    const messages = (Array.isArray(page.messages) ? page.messages : []).map((m) => new Message(m, "pickup"));
    return {
      messages,
      count: page.count ?? messages.length,
      remaining: page.remaining ?? 0,
      nextCursor: page.next_cursor ?? messages[messages.length - 1]?.cursor ?? opts.after,
    };
  }

  /**
   * Every message from now on (or after `after`), by long-polling pickup with cursors:
   * each message is yielded once even though it stays pending until acked. Ends when
   * `signal` aborts.
   */
  async *poll(opts: { after?: string; wait?: number; limit?: number; signal?: AbortSignal } = {}): AsyncGenerator<Message, void, undefined> {
    let after = opts.after;
    const wait = opts.wait ?? 30;
    while (!opts.signal?.aborted) {
      let page: PendingPage;
      try {
        page = await this.pending({ ...(after !== undefined ? { after } : {}), wait, ...(opts.limit !== undefined ? { limit: opts.limit } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
      } catch (e) {
        if (opts.signal?.aborted) return;
        throw e;
      }
      for (const m of page.messages) yield m;
      after = page.nextCursor ?? after;
    }
  }

  /** `GET /v1/messages/pending/count`: how many wait, without their bodies (`notify:v1`). */
  count(): Promise<PendingCount> {
    return this.client.http.request({ method: "GET", path: ["messages", "pending", "count"], token: this.#token(), idempotent: true });
  }

  /**
   * Acknowledges (removes) one message. Idempotent: a second ack answers `already_acked`.
   * `form` picks the path (every form clients use; see {@link AckForm}).
   *
   * @throws {NotFoundError} when the id is not in this agent's mailbox.
   */
  async ack(id: string, form: AckForm = "delete"): Promise<AckResult> {
    const t = this.#token();
    const http = this.client.http;
    switch (form) {
      case "delete":
        return http.request({ method: "DELETE", path: ["messages", "pending", id], token: t, idempotent: true });
      case "delete-query":
        return http.request({ method: "DELETE", path: ["messages", "pending"], query: { id }, token: t, idempotent: true });
      case "inbox":
        return http.request({ method: "POST", path: ["inbox", id, "ack"], token: t, idempotent: true });
      case "batch":
      case "pending-post": {
        const r = await this.ackMany([id], form === "batch" ? "ack" : "pending");
        if (r.not_found?.includes(id)) {
          throw new NotFoundError({ status: 404, code: "not_found", message: "no such message in this mailbox" });
        }
        return { acknowledged: true, already_acked: r.already_acked?.includes(id) ?? false };
      }
      default:
        throw new InvalidInputError(`unknown ack form ${String(form)}`);
    }
  }

  /**
   * Acknowledges several messages at once: `POST /v1/messages/pending/ack {ids}` (spec 08),
   * or `POST /v1/messages/pending {ids}` (spec 09) with `via: "pending"`. Ids not in the
   * mailbox come back in `not_found`, ids acked before in `already_acked`.
   */
  ackMany(ids: readonly string[], via: "ack" | "pending" = "ack"): Promise<BatchAckResult> {
    const path = via === "ack" ? ["messages", "pending", "ack"] : ["messages", "pending"];
    return this.client.http.request({ method: "POST", path, body: { ids }, token: this.#token(), idempotent: true });
  }

  /**
   * `POST /v1/messages/{id}/read`: sends the sender a read receipt (not an ack).
   *
   * @throws {NotFoundError} when the message is not this agent's.
   */
  read(id: string): Promise<ReadResult> {
    // Not retried on a lost answer: a second call would send a second receipt.
    return this.client.http.request({ method: "POST", path: ["messages", id, "read"], token: this.#token(), idempotent: false });
  }

  /** `GET /v1/messages/receipts`: delivery and read receipts retained for this agent as sender. */
  receipts(opts: { after?: number; limit?: number } = {}): Promise<Receipts> {
    return this.client.http.request({ method: "GET", path: ["messages", "receipts"], query: { ...opts }, token: this.#token(), idempotent: true });
  }

  /** `POST /v1/messages/receipts/ack {upto}`: drops the receipts up to `seq` `upto`. */
  ackReceipts(upto: number): Promise<Record<string, unknown>> {
    return this.client.http.request({ method: "POST", path: ["messages", "receipts", "ack"], body: { upto }, token: this.#token(), idempotent: true });
  }

  /**
   * Opens a WebSocket (spec 08, 12.5): authenticates with the first frame, then yields the
   * replay and live messages as one async iterator, reconnecting with backoff and never
   * handing the application the same message twice.
   */
  subscribe(opts: SubscribeOptions = {}): Subscription {
    const ws = opts.WebSocket ?? this.client.options.WebSocket;
    return new Subscription(this, { ...opts, ...(ws ? { WebSocket: ws } : {}) });
  }

  /**
   * Classifies a message as spec 07's trust algorithm does, for messages that arrive without
   * the provider's assessment (a webhook body from a provider that sends no
   * `local.security`): `untrusted` unless the sender's signature
   * verifies (with `senderKey`, else the key the provider resolves for the sender), then
   * `verified` for a sender in this agent's tenant on this provider, `external` otherwise.
   */
  async assessTrust(message: Message, senderKey?: PublicKey | string): Promise<TrustLevel> {
    let key = senderKey;
    if (key === undefined) {
      try {
        key = (await this.resolve(message.from)).public_key;
      } catch {
        return "untrusted";
      }
    }
    if (!message.verify(key)) return "untrusted";
    try {
      const ctx = { providerDomain: this.identity.registration.provider?.name };
      const me = Address.parse(this.address, ctx);
      const them = Address.parse(message.from, ctx);
      return me.tenant === them.tenant && me.provider === them.provider ? "verified" : "external";
    } catch {
      return "untrusted";
    }
  }

  // ---- attachments (when the provider advertises them) ----

  /**
   * Uploads a file as a provider attachment (amp-spec-next 08 "Attachments"): request an
   * upload URL, PUT the bytes, confirm, and wait for the scan. Returns the attachment object
   * to put in `payload.attachments`.
   *
   * @throws {UnsupportedError} when `/v1/info` does not list `attachments`.
   */
  uploadAttachment(input: AttachmentInput, opts: UploadOptions): Promise<Attachment> {
    return this.#attachments.upload(input, opts);
  }

  /** `GET /v1/attachments/{id}`: an attachment's metadata and scan status. */
  attachment(id: string): Promise<AttachmentStatus> {
    return this.#attachments.status(id);
  }

  /**
   * Downloads an attachment of a received message and checks its `sha256:` digest.
   *
   * @throws {SignatureError} on a digest mismatch; {@link InvalidInputError} for an unknown digest algorithm.
   */
  downloadAttachment(attachment: Attachment, opts: DownloadOptions = {}): Promise<Uint8Array> {
    return this.#attachments.download(attachment, opts);
  }

  /** Shows the address only. */
  toString(): string {
    return `Agent(${this.address})`;
  }
}
