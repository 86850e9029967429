/**
 * The HTTP layer: `fetch` with timeouts, the spec's error body turned into typed errors,
 * and retries with exponential backoff and full jitter for what is safe to retry:
 *
 * - a `429` (the provider did nothing) is retried for any request, after `Retry-After`;
 * - transport failures, timeouts, `502`, `503` and `504` only for idempotent requests:
 *   reads, acks (one idempotent transition), and routes carrying a client message id and
 *   an idempotency key (which this SDK always sends);
 * - nothing is retried when `Retry-After` asks for longer than `maxRetryAfterMs`: the
 *   {@link RateLimitedError} (with `retryAfter`) reaches the caller instead.
 *
 * @module
 */

import { apiErrorFor, DecodeError, InvalidInputError, TimeoutError, TransportError } from "./errors.js";

/** When and how often requests are retried. */
export interface RetryOptions {
  /** Retries after the first attempt (default 3; 0 disables retries). */
  retries: number;
  /** First backoff ceiling in ms (default 200), doubled per attempt. */
  minDelayMs: number;
  /** Largest backoff in ms (default 5000). */
  maxDelayMs: number;
  /** Longest `Retry-After` honoured by waiting, in ms (default 10000); longer ones throw. */
  maxRetryAfterMs: number;
}

/** The defaults of {@link RetryOptions}. */
export const DEFAULT_RETRY: RetryOptions = { retries: 3, minDelayMs: 200, maxDelayMs: 5000, maxRetryAfterMs: 10_000 };

/** Options shared by every call. */
export interface HttpOptions {
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof globalThis.fetch;
  /** Per-request timeout in ms (default 30000; a long-poll gets its `wait` on top). */
  timeoutMs?: number;
  /** Retry policy, or `false` for none. */
  retry?: Partial<RetryOptions> | false;
}

/** One request. */
export interface RequestSpec {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Path segments below the API root (each percent-encoded), or an absolute URL. */
  path: readonly string[] | URL;
  query?: Record<string, string | number | undefined>;
  /** A value to send as JSON, or JSON text sent byte for byte. */
  body?: unknown;
  /** The body is already JSON text. */
  rawBody?: boolean;
  /** `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** Safe to send twice (see the module notes). */
  idempotent: boolean;
  /** Extra time for a long-poll, in ms. */
  extraTimeoutMs?: number;
  /** Cancels the request. */
  signal?: AbortSignal | undefined;
}

/**
 * The API root for a base URL, as registrations report it: `http://host:8080` →
 * `http://host:8080/v1`; `…/v1` and `…/api/v1` are kept.
 *
 * @throws {InvalidInputError} when it is not an absolute http(s) URL.
 */
export function apiRoot(base: string | URL): URL {
  let u: URL;
  try {
    u = new URL(String(base).trim());
  } catch (e) {
    throw new InvalidInputError(`provider URL ${JSON.stringify(String(base))} is not a URL`, { cause: e });
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new InvalidInputError(`provider URL ${JSON.stringify(String(base))} must be http:// or https://`);
  }
  u.search = "";
  u.hash = "";
  const path = u.pathname.replace(/\/+$/, "");
  u.pathname = path.endsWith("/v1") ? path : `${path}/v1`;
  return u;
}

/** `root` with path segments appended, each percent-encoded (an id cannot escape its segment). */
export function joinUrl(root: URL, segments: readonly string[]): URL {
  const u = new URL(root.href);
  u.pathname = `${u.pathname.replace(/\/+$/, "")}/${segments.map((s) => encodeURIComponent(s)).join("/")}`;
  return u;
}

/** Parses `Retry-After` (seconds or an HTTP date) into seconds. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const t = value.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  const at = Date.parse(t);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Sends requests to one provider. */
export class Http {
  readonly root: URL;
  readonly #fetch: typeof globalThis.fetch;
  readonly #timeoutMs: number;
  readonly #retry: RetryOptions;

  constructor(base: string | URL, opts: HttpOptions = {}) {
    this.root = apiRoot(base);
    const f = opts.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new InvalidInputError("no fetch in this runtime: pass one as options.fetch");
    this.#fetch = f.bind(globalThis);
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#retry = opts.retry === false ? { ...DEFAULT_RETRY, retries: 0 } : { ...DEFAULT_RETRY, ...(opts.retry ?? {}) };
  }

  /** The URL of `segments` below the API root. */
  url(segments: readonly string[]): URL {
    return joinUrl(this.root, segments);
  }

  /**
   * Sends `spec`, retrying as the module notes say, and decodes a 2xx JSON answer.
   *
   * @throws {ApiError} (a subclass by status) for a non-2xx answer; {@link TransportError} or
   *   {@link TimeoutError} when no answer came; {@link DecodeError} for a 2xx that is not JSON.
   */
  async request<T>(spec: RequestSpec): Promise<T> {
    const url = spec.path instanceof URL ? new URL(spec.path.href) : this.url(spec.path);
    for (const [k, v] of Object.entries(spec.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: "application/json" };
    let body: string | undefined;
    if (spec.body !== undefined) {
      headers["content-type"] = "application/json";
      body = spec.rawBody ? (spec.body as string) : JSON.stringify(spec.body);
    }
    if (spec.token) headers["authorization"] = `Bearer ${spec.token}`;
    const what = `${spec.method} ${url.href}`;
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= this.#retry.retries;
      let res: Response;
      try {
        res = await this.#send(url, spec, headers, body);
      } catch (e) {
        if (spec.signal?.aborted) throw e;
        if (!last && spec.idempotent) {
          await sleep(this.#backoff(attempt), spec.signal);
          continue;
        }
        throw e;
      }
      const text = await res.text().catch((e: unknown) => {
        throw new TransportError(`${what}: reading the answer failed`, { cause: e });
      });
      if (res.ok) {
        if (!text.trim()) return {} as T;
        try {
          return JSON.parse(text) as T;
        } catch (e) {
          throw new DecodeError(`${what}: the answer is not JSON`, { cause: e });
        }
      }
      const error = decodeError(res.status, res.headers.get("retry-after"), text, what);
      const retryable = res.status === 429 || (spec.idempotent && [502, 503, 504].includes(res.status));
      if (!last && retryable) {
        const wait = error.retryAfter !== undefined ? error.retryAfter * 1000 : this.#backoff(attempt);
        if (wait <= this.#retry.maxRetryAfterMs) {
          await sleep(wait, spec.signal);
          continue;
        }
      }
      throw error;
    }
  }

  async #send(url: URL, spec: RequestSpec, headers: Record<string, string>, body: string | undefined): Promise<Response> {
    const ctrl = new AbortController();
    const timeoutMs = this.#timeoutMs + (spec.extraTimeoutMs ?? 0);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort();
    }, timeoutMs);
    const onAbort = () => ctrl.abort(spec.signal?.reason);
    spec.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const init: RequestInit = { method: spec.method, headers, signal: ctrl.signal };
      if (body !== undefined) init.body = body;
      return await this.#fetch(url.href, init);
    } catch (e) {
      if (spec.signal?.aborted) throw spec.signal.reason ?? e;
      if (timedOut) throw new TimeoutError(`${spec.method} ${url.href}: no answer in ${timeoutMs} ms`);
      throw new TransportError(`${spec.method} ${url.href}: ${describe(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
      spec.signal?.removeEventListener("abort", onAbort);
    }
  }

  #backoff(attempt: number): number {
    const ceiling = Math.min(this.#retry.maxDelayMs, this.#retry.minDelayMs * 2 ** attempt);
    return Math.random() * ceiling;
  }
}

/** The typed error of a non-2xx answer: the spec body when there is one, else the status. */
export function decodeError(status: number, retryAfterHeader: string | null, text: string, request?: string) {
  let body: unknown = text;
  try {
    body = text.trim() ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON (a proxy's HTML page): keep the text.
  }
  const b = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  const rawCode = b["error"];
  const code = typeof rawCode === "string" ? rawCode : typeof b["code"] === "string" ? (b["code"] as string) : `http_${status}`;
  const message =
    typeof b["message"] === "string"
      ? (b["message"] as string)
      : typeof rawCode === "object" && rawCode !== null && typeof (rawCode as Record<string, unknown>)["message"] === "string"
        ? ((rawCode as Record<string, unknown>)["message"] as string)
        : text.trim().slice(0, 200) || `HTTP ${status}`;
  const details = b["details"];
  const bodyRetry = b["retry_after"] ?? (typeof details === "object" && details !== null ? (details as Record<string, unknown>)["retry_after"] : undefined);
  const retryAfter = parseRetryAfter(retryAfterHeader) ?? (typeof bodyRetry === "number" ? bodyRetry : undefined);
  return apiErrorFor({
    status,
    code,
    message,
    field: typeof b["field"] === "string" ? (b["field"] as string) : undefined,
    details,
    retryAfter,
    body,
    request,
  });
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const c = cause instanceof Error ? cause.message : typeof cause === "object" && cause && "code" in cause ? String((cause as { code: unknown }).code) : "";
    return c && !e.message.includes(c) ? `${e.message}: ${c}` : e.message;
  }
  return String(e);
}
