/**
 * Real-time delivery over the WebSocket (spec 08 "WebSocket API", 12.5; our provider's
 * frames in README.md): {@link Subscription} authenticates with the first frame
 * (`{"type":"auth","token":…}`; the key never goes in the URL), then yields the replay of
 * everything still pending and the live messages as **one async iterator**. It acks
 * (`message.ack` frames, REST when the socket is down), routes (`route` frames with a `ref`,
 * answered by `route.result`), pings every 30 s and treats a silent socket as dead.
 *
 * When the connection drops it reconnects with exponential backoff and jitter; the provider
 * then replays every unacknowledged message, and the subscription drops the ones it already
 * handed to the application, so **no message reaches the application twice** (and none is
 * lost: a message leaves the mailbox only when acked). `route` requests in flight are sent
 * again after a reconnect with the same id and signature, which providers answer with the
 * first result.
 *
 * @module
 */

import type { Agent } from "./agent.js";
import { DecodeError, SocketClosedError, SocketError, TimeoutError, TransportError } from "./errors.js";
import { fromUtf8 } from "./encoding.js";
import { Message } from "./message.js";
import type { PayloadInput, SendOptions } from "./route.js";
import type { AckResult, DeliveredReceipt, ReadReceipt, RouteResult } from "./types.js";

/** The part of the WHATWG `WebSocket` interface the SDK uses (met by browsers, Deno, Bun, Node ≥ 22 and `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  addEventListener(type: string, listener: (event: any) => void): void;
}

/** A `WebSocket` class. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Options of {@link Agent.subscribe}. */
export interface SubscribeOptions {
  /** The WebSocket class (default: the global one, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect after a drop (default `true`). */
  reconnect?: boolean;
  /** First reconnect delay ceiling in ms (default 250), doubled per failed attempt. */
  minReconnectDelayMs?: number;
  /** Largest reconnect delay in ms (default 30000). */
  maxReconnectDelayMs?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxReconnectAttempts?: number;
  /** Interval of `ping` frames in ms (default 30000; the provider closes sockets idle for 5 minutes). */
  pingIntervalMs?: number;
  /** A socket silent this long after a ping counts as dead and is replaced (default 10000 ms). */
  pongTimeoutMs?: number;
  /** Time to open the socket and receive `connected`, in ms (default 15000). */
  connectTimeoutMs?: number;
  /** How long a `route` or `ack` frame waits for its answer, in ms (default 30000). */
  requestTimeoutMs?: number;
  /** WebSocket subprotocols to request (amp-spec-next suggests `amp.v1`; only when the provider confirms it). */
  protocols?: string[];
  /** How many delivered message ids are remembered to drop replays (default 10000). */
  rememberIds?: number;
  /** Closes the subscription. */
  signal?: AbortSignal;
}

/** The `connected` frame. */
export interface ConnectedInfo {
  /** The authenticated agent's address. */
  address: string;
  /** Messages pending when the socket connected (their replays follow). */
  pendingCount: number;
}

/** What a subscription yields. */
export type SubscriptionEvent =
  /** A message for this agent (replayed or live); never the same id twice. */
  | { type: "message"; message: Message }
  /** A delivery receipt for a message this agent sent with `receipt: true`. */
  | { type: "delivered"; receipt: DeliveredReceipt }
  /** A read receipt for a message this agent sent. */
  | { type: "read"; receipt: ReadReceipt }
  /** The socket is authenticated (again, when `reconnected`). */
  | { type: "connected"; info: ConnectedInfo; reconnected: boolean }
  /** The socket dropped; a reconnect follows in `retryInMs`. */
  | { type: "disconnected"; code: number | undefined; reason: string; retryInMs: number }
  /** An `error` frame that answers no request of this subscription. */
  | { type: "error"; error: SocketError }
  /** A frame type this SDK does not know, kept whole. */
  | { type: "frame"; frame: Record<string, unknown> };

/** Counters, for tests and monitoring. */
export interface SubscriptionStats {
  /** Successful authentications. */
  connects: number;
  /** Replayed messages dropped because the application already had them. */
  duplicatesDropped: number;
  /** Messages handed to the application. */
  messages: number;
}

/** Close codes after which reconnecting cannot help: unauthorized, suspended. */
const FATAL_CLOSE_CODES = new Set([4001, 4003]);

/** The `ws` package, imported only when the runtime has no WebSocket (Node 20). */
const WS_PACKAGE = "ws";

async function resolveWebSocket(given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given) return given;
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof g === "function") return g;
  // A variable specifier keeps browser bundlers from pulling `ws` in (it is also mapped
  // away in package.json "browser").
  const mod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ WS_PACKAGE)) as { default?: unknown; WebSocket?: unknown };
  const ctor = (mod.WebSocket ?? mod.default) as WebSocketConstructor | undefined;
  if (typeof ctor !== "function") throw new TransportError("no WebSocket in this runtime and the ws package is missing");
  return ctor;
}

interface PendingRequest {
  resolve: (frame: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  /** The frame text, for a re-send after a reconnect (route), or undefined (ack: REST fallback). */
  resend: string | undefined;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A live subscription: an async iterator of {@link SubscriptionEvent}s. Iterate it once;
 * breaking out of the loop closes it.
 *
 * ```ts
 * const sub = bob.subscribe();
 * for await (const ev of sub) {
 *   if (ev.type !== "message") continue;
 *   console.log(ev.message.trust, ev.message.promptText());
 *   await sub.ack(ev.message.id);
 * }
 * ```
 */
export class Subscription implements AsyncIterable<SubscriptionEvent> {
  /** Resolves at the first `connected`; rejects when the first connection fails for good. */
  readonly ready: Promise<ConnectedInfo>;
  /** Counters. */
  readonly stats: SubscriptionStats = { connects: 0, duplicatesDropped: 0, messages: 0 };

  readonly #agent: Agent;
  readonly #opts: Required<Omit<SubscribeOptions, "WebSocket" | "signal" | "protocols">> & {
    WebSocket: WebSocketConstructor | undefined;
    protocols: string[] | undefined;
    signal: AbortSignal | undefined;
  };
  #socket: WebSocketLike | undefined;
  #open = false;
  #closed = false;
  #failure: Error | undefined;
  #fatal: Error | undefined;
  #attempt = 0;
  #refs = 0;
  readonly #queue: SubscriptionEvent[] = [];
  readonly #waiters: { resolve: (r: IteratorResult<SubscriptionEvent>) => void; reject: (e: Error) => void }[] = [];
  readonly #seen = new Map<string, true>();
  readonly #pending = new Map<string, PendingRequest>();
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #pongTimer: ReturnType<typeof setTimeout> | undefined;
  #readyResolve!: (c: ConnectedInfo) => void;
  #readyReject!: (e: Error) => void;

  constructor(agent: Agent, opts: SubscribeOptions = {}) {
    this.#agent = agent;
    this.#opts = {
      reconnect: opts.reconnect ?? true,
      minReconnectDelayMs: opts.minReconnectDelayMs ?? 250,
      maxReconnectDelayMs: opts.maxReconnectDelayMs ?? 30_000,
      maxReconnectAttempts: opts.maxReconnectAttempts ?? Number.POSITIVE_INFINITY,
      pingIntervalMs: opts.pingIntervalMs ?? 30_000,
      pongTimeoutMs: opts.pongTimeoutMs ?? 10_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 15_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 30_000,
      rememberIds: opts.rememberIds ?? 10_000,
      WebSocket: opts.WebSocket,
      protocols: opts.protocols,
      signal: opts.signal,
    };
    this.ready = new Promise<ConnectedInfo>((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    // Whoever does not await `ready` sees the failure through the iterator instead.
    this.ready.catch(() => undefined);
    if (opts.signal) {
      if (opts.signal.aborted) {
        this.#closed = true;
        this.#readyReject(new SocketClosedError(undefined, "aborted"));
        return;
      }
      opts.signal.addEventListener("abort", () => void this.close(), { once: true });
    }
    void this.#connect();
  }

  /** Whether the socket is authenticated right now. */
  get connected(): boolean {
    return this.#open;
  }

  /** Whether {@link Subscription.close} was called or the subscription failed for good. */
  get closed(): boolean {
    return this.#closed;
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent> {
    return {
      next: () => this.#next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  /** Only the messages (receipts and connection events are skipped). */
  async *messages(): AsyncGenerator<Message, void, undefined> {
    for await (const ev of this) if (ev.type === "message") yield ev.message;
  }

  /**
   * Acknowledges a message: a `message.ack` frame when connected (answered by
   * `message.acked`), else, or when the socket drops before the answer, the REST ack.
   *
   * @throws {SocketError} `not_found` when the id is not in the mailbox (or {@link NotFoundError} over REST).
   */
  async ack(id: string): Promise<AckResult> {
    if (this.#open) {
      try {
        const f = await this.#request((ref) => JSON.stringify({ type: "message.ack", id, ref }), false);
        const data = (f["data"] ?? {}) as Record<string, unknown>;
        return { acknowledged: true, already_acked: data["already_acked"] === true };
      } catch (e) {
        if (e instanceof SocketError) throw e;
        // The socket went away before the answer: the REST ack is the same transition.
      }
    }
    return this.#agent.ack(id);
  }

  /**
   * Signs and sends a message over the socket (a `route` frame with a `ref`), answered by
   * `route.result`. A drop before the answer re-sends it after the reconnect (idempotent).
   *
   * @throws {SocketError} for an `error` frame (`invalid_recipient`, `rate_limited`, …).
   */
  async route(to: string, subject: string, payload: PayloadInput, opts: Omit<SendOptions, "form"> = {}): Promise<RouteResult> {
    const built = this.#agent.buildMessage(to, subject, payload, { ...opts, form: "flat" });
    const f = await this.#request((ref) => `{"type":"route","ref":${JSON.stringify(ref)},"data":${built.body}}`, true);
    return f["data"] as RouteResult;
  }

  /** Sends a `ping` now (the subscription pings by itself every `pingIntervalMs`). */
  ping(): void {
    this.#sendText(JSON.stringify({ type: "ping" }));
  }

  /**
   * Drops the current connection and connects again now (a network change, or tests). The
   * provider replays what is pending; nothing is handed to the application twice.
   */
  reconnect(): void {
    if (this.#closed) return;
    const s = this.#socket;
    if (s) this.#drop(s, "reconnect requested");
    else if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      void this.#connect();
    }
  }

  /** Closes the socket and ends the iterator. Requests in flight fail with {@link SocketClosedError}. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimers();
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    const s = this.#socket;
    this.#socket = undefined;
    this.#open = false;
    try {
      s?.close(1000, "closed by the client");
    } catch {
      // Already closing.
    }
    const err = new SocketClosedError(1000, "closed by the client");
    for (const [ref, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.#pending.delete(ref);
    }
    this.#readyReject(err);
    this.#end();
  }

  // ---- connection ----

  async #connect(): Promise<void> {
    this.#reconnectTimer = undefined;
    if (this.#closed) return;
    let WS: WebSocketConstructor;
    try {
      WS = await resolveWebSocket(this.#opts.WebSocket);
    } catch (e) {
      this.#fail(e instanceof Error ? e : new TransportError(String(e)));
      return;
    }
    if (this.#closed) return;
    let socket: WebSocketLike;
    try {
      const url = this.#agent.client.wsUrl.href;
      socket = this.#opts.protocols?.length ? new WS(url, this.#opts.protocols) : new WS(url);
    } catch (e) {
      this.#onClose(undefined, e instanceof Error ? e.message : String(e));
      return;
    }
    this.#socket = socket;
    try {
      socket.binaryType = "arraybuffer";
    } catch {
      // Not settable here; strings are the protocol's frames anyway.
    }
    this.#connectTimer = setTimeout(() => {
      if (this.#socket === socket && !this.#open) this.#drop(socket, "no connected frame in time");
    }, this.#opts.connectTimeoutMs);
    socket.addEventListener("open", () => {
      if (this.#socket !== socket) return;
      // spec 08: the API key goes in the first frame, never in the URL.
      socket.send(JSON.stringify({ type: "auth", token: this.#agent.identity.apiKey }));
    });
    socket.addEventListener("message", (ev: { data: unknown }) => {
      if (this.#socket !== socket) return;
      void this.#onData(ev.data);
    });
    socket.addEventListener("close", (ev: { code?: number; reason?: string }) => {
      if (this.#socket !== socket) return;
      this.#onClose(ev.code, ev.reason ?? "");
    });
    socket.addEventListener("error", () => {
      // A close event follows; it decides what happens.
    });
  }

  async #onData(data: unknown): Promise<void> {
    let text: string;
    if (typeof data === "string") text = data;
    else if (data instanceof ArrayBuffer) text = fromUtf8(new Uint8Array(data));
    else if (data instanceof Uint8Array) text = fromUtf8(data);
    else if (typeof Blob !== "undefined" && data instanceof Blob) text = await data.text();
    else text = String(data);
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      this.#push({ type: "error", error: new SocketError("decode", "a frame that is not JSON", undefined, text) });
      return;
    }
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) return;
    this.#onFrame(frame as Record<string, unknown>);
  }

  #onFrame(f: Record<string, unknown>): void {
    // Any frame proves the socket alive.
    if (this.#pongTimer) {
      clearTimeout(this.#pongTimer);
      this.#pongTimer = undefined;
    }
    const type = typeof f["type"] === "string" ? (f["type"] as string) : "";
    const data = typeof f["data"] === "object" && f["data"] !== null ? (f["data"] as Record<string, unknown>) : {};
    const ref = f["ref"] === undefined || f["ref"] === null ? undefined : String(f["ref"]);
    switch (type) {
      case "connected":
        this.#onConnected(data);
        return;
      case "message.new": {
        let m: Message;
        try {
          m = new Message({ ...data, replay: f["replay"] === true || data["replay"] === true }, "websocket");
        } catch (e) {
          this.#push({ type: "error", error: new SocketError("decode", e instanceof DecodeError ? e.message : String(e), undefined, f) });
          return;
        }
        if (m.id && this.#seen.has(m.id)) {
          this.stats.duplicatesDropped++;
          return;
        }
        this.#remember(m.id);
        this.stats.messages++;
        this.#push({ type: "message", message: m });
        return;
      }
      case "message.delivered":
        this.#push({ type: "delivered", receipt: data as DeliveredReceipt });
        return;
      case "message.read":
        this.#push({ type: "read", receipt: data as ReadReceipt });
        return;
      case "pong":
        return;
      case "route.result":
      case "message.acked":
        if (ref !== undefined) this.#settle(ref, f);
        return;
      case "error": {
        const code = typeof f["error"] === "string" ? (f["error"] as string) : typeof data["error"] === "string" ? (data["error"] as string) : typeof data["code"] === "string" ? (data["code"] as string) : "error";
        const message = typeof f["message"] === "string" ? (f["message"] as string) : typeof data["message"] === "string" ? (data["message"] as string) : "";
        const err = new SocketError(code, message, ref, f);
        if (ref !== undefined && this.#pending.has(ref)) {
          this.#settle(ref, err);
          return;
        }
        if (!this.#open && (code === "unauthorized" || code === "agent_suspended")) {
          this.#fatal = err;
          return;
        }
        this.#push({ type: "error", error: err });
        return;
      }
      default:
        this.#push({ type: "frame", frame: f });
    }
  }

  #onConnected(data: Record<string, unknown>): void {
    if (this.#open) return;
    this.#open = true;
    this.#attempt = 0;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    const info: ConnectedInfo = {
      address: typeof data["address"] === "string" ? (data["address"] as string) : this.#agent.address,
      pendingCount: typeof data["pending_count"] === "number" ? (data["pending_count"] as number) : 0,
    };
    const reconnected = this.stats.connects > 0;
    this.stats.connects++;
    this.#startPings();
    this.#push({ type: "connected", info, reconnected });
    this.#readyResolve(info);
    for (const p of this.#pending.values()) if (p.resend !== undefined) this.#sendText(p.resend);
  }

  #onClose(code: number | undefined, reason: string): void {
    const wasOpen = this.#open;
    this.#socket = undefined;
    this.#open = false;
    this.#stopTimers();
    if (this.#closed) return;
    // Requests that cannot be re-sent fail now (their callers fall back to REST).
    for (const [ref, p] of this.#pending) {
      if (p.resend === undefined) {
        clearTimeout(p.timer);
        this.#pending.delete(ref);
        p.reject(new TransportError(`websocket closed before the answer (${reason || code || "no reason"})`));
      }
    }
    if (this.#fatal) return this.#fail(this.#fatal);
    if (code !== undefined && FATAL_CLOSE_CODES.has(code)) return this.#fail(new SocketClosedError(code, reason));
    if (!this.#opts.reconnect || this.#attempt >= this.#opts.maxReconnectAttempts) {
      return this.#fail(new SocketClosedError(code, reason || "connection lost"));
    }
    const ceiling = Math.min(this.#opts.maxReconnectDelayMs, this.#opts.minReconnectDelayMs * 2 ** this.#attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.#attempt++;
    if (wasOpen || this.stats.connects > 0) this.#push({ type: "disconnected", code, reason, retryInMs: delay });
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
  }

  /** Gives up on `socket` (silent, or replaced) and handles it as closed now. */
  #drop(socket: WebSocketLike, reason: string): void {
    if (this.#socket !== socket) return;
    this.#socket = undefined;
    try {
      socket.close(4000, reason);
    } catch {
      // Never opened, or already closing.
    }
    this.#onClose(undefined, reason);
  }

  #startPings(): void {
    this.#pingTimer = setInterval(() => {
      const s = this.#socket;
      if (!s || !this.#open) return;
      this.ping();
      if (!this.#pongTimer) {
        this.#pongTimer = setTimeout(() => {
          this.#pongTimer = undefined;
          this.#drop(s, "no pong");
        }, this.#opts.pongTimeoutMs);
      }
    }, this.#opts.pingIntervalMs);
  }

  #stopTimers(): void {
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    if (this.#pongTimer) clearTimeout(this.#pongTimer);
    this.#connectTimer = this.#pingTimer = this.#pongTimer = undefined;
  }

  // ---- requests with a ref ----

  #request(frame: (ref: string) => string, resend: boolean): Promise<Record<string, unknown>> {
    if (this.#closed) return Promise.reject(new SocketClosedError(1000, "closed by the client"));
    const ref = `sdk-${++this.#refs}`;
    const text = frame(ref);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new TimeoutError(`no answer to websocket request ${ref} in ${this.#opts.requestTimeoutMs} ms`));
      }, this.#opts.requestTimeoutMs);
      this.#pending.set(ref, { resolve, reject, resend: resend ? text : undefined, timer });
      if (this.#open) this.#sendText(text);
      else if (!resend) this.#settle(ref, new TransportError("websocket not connected"));
    });
  }

  #settle(ref: string, outcome: Record<string, unknown> | Error): void {
    const p = this.#pending.get(ref);
    if (!p) return;
    this.#pending.delete(ref);
    clearTimeout(p.timer);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  #sendText(text: string): void {
    const s = this.#socket;
    if (!s || !this.#open) return;
    try {
      s.send(text);
    } catch {
      // The close event follows.
    }
  }

  // ---- the iterator ----

  #remember(id: string): void {
    if (!id) return;
    this.#seen.set(id, true);
    if (this.#seen.size > this.#opts.rememberIds) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
  }

  #push(ev: SubscriptionEvent): void {
    const w = this.#waiters.shift();
    if (w) w.resolve({ done: false, value: ev });
    else this.#queue.push(ev);
  }

  #next(): Promise<IteratorResult<SubscriptionEvent>> {
    const ev = this.#queue.shift();
    if (ev) return Promise.resolve({ done: false, value: ev });
    if (this.#failure) {
      const f = this.#failure;
      this.#failure = undefined;
      return Promise.reject(f);
    }
    if (this.#closed) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  #end(): void {
    for (const w of this.#waiters.splice(0)) w.resolve({ done: true, value: undefined });
  }

  #fail(e: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimers();
    const s = this.#socket;
    this.#socket = undefined;
    this.#open = false;
    try {
      s?.close(1000);
    } catch {
      // Already closed.
    }
    for (const [ref, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(e);
      this.#pending.delete(ref);
    }
    this.#readyReject(e);
    const waiters = this.#waiters.splice(0);
    if (waiters.length) for (const w of waiters) w.reject(e);
    else this.#failure = e;
  }
}
