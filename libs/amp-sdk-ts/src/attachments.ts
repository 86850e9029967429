/**
 * Attachments (amp-spec-next 04 "Attachments", 08 "Attachments"), used only when the
 * provider lists `attachments` (or `attachments:afp`) in `/v1/info`.
 *
 * Provider attachments: `POST /v1/attachments/upload {filename, content_type, size,
 * digest}` → a presigned `upload_url`; the bytes go there with `upload_method` and
 * `upload_headers` (no API key: the URL is the credential); `POST
 * /v1/attachments/{id}/confirm` starts the scan; `GET /v1/attachments/{id}` is polled until
 * `scan_status` is final. Providers offering `attachment_limits.direct_upload` also take a
 * single multipart `POST /v1/attachments/upload/direct`. The attachment object then goes into
 * the payload before signing, so the signature covers it. A recipient checks the `sha256:`
 * digest of what it downloads ({@link AttachmentsApi.download}).
 *
 * AFP attachments name a file in an Agent Files Protocol space ({@link afpAttachment}); no
 * bytes pass through the provider.
 *
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";
import type { AmpClient } from "./client.js";
import { AmpError, InvalidInputError, TimeoutError, TransportError, UnsupportedError } from "./errors.js";
import { toHex } from "./encoding.js";
import { decodeError } from "./http.js";
import type { Attachment } from "./types.js";

/** File content to upload. */
export type AttachmentInput = Uint8Array | ArrayBuffer | Blob;

/** Options of an upload. */
export interface UploadOptions {
  /** The file name (no path separators or control characters, at most 255 characters). */
  filename: string;
  /** Its MIME type. */
  contentType: string;
  /** Use `POST /v1/attachments/upload/direct` when the provider offers it. */
  direct?: boolean;
  /** How often to poll the scan status, in ms (default 2000; the spec asks for 2–5 s). */
  pollIntervalMs?: number;
  /** How long to wait for the scan, in ms (default and spec maximum 300000). */
  scanTimeoutMs?: number;
  /** Cancels the upload. */
  signal?: AbortSignal;
}

/** Options of a download. */
export interface DownloadOptions {
  /** Cancels the download. */
  signal?: AbortSignal;
}

/** `GET /v1/attachments/{id}`. */
export interface AttachmentStatus {
  attachment_id: string;
  filename?: string;
  content_type?: string;
  size?: number;
  digest?: string;
  /** `pending`, `clean`, `basic_clean`, `suspicious` or `rejected`. */
  scan_status: string;
  /** Signed download URL, once scanned. */
  url?: string;
  download_url?: string;
  uploaded_at?: string;
  expires_at?: string;
  [key: string]: unknown;
}

/** The answer to `POST /v1/attachments/upload`. */
export interface UploadTicket {
  attachment_id: string;
  upload_url: string;
  upload_method?: string;
  upload_headers?: Record<string, string>;
  expires_in?: number;
  [key: string]: unknown;
}

/** Every `scan_status` value of spec 04 and the test vectors (`scan_status`). */
export const SCAN_STATUSES: readonly string[] = ["pending", "clean", "basic_clean", "unscanned", "suspicious", "rejected"];

/** Whether `status` is a `scan_status` the spec defines. */
export function isValidScanStatus(status: string): boolean {
  return SCAN_STATUSES.includes(status);
}

/** Scan results an attachment may be routed with (amp-spec-next 04 "Attachment Rules"). */
export const ROUTABLE_SCAN_STATUSES: readonly string[] = ["clean", "basic_clean", "suspicious"];

/** `sha256:<lowercase hex>` of `bytes`, the digest format of amp-spec-next 04. */
export function attachmentDigest(bytes: Uint8Array): string {
  return `sha256:${toHex(sha256(bytes))}`;
}

/**
 * Whether `bytes` match `digest`.
 *
 * @throws {InvalidInputError} for an algorithm other than `sha256` (spec: unknown prefixes MUST be rejected).
 */
export function digestMatches(bytes: Uint8Array, digest: string): boolean {
  const m = /^([a-z0-9-]+):([0-9a-fA-F]+)$/.exec(digest);
  if (!m) throw new InvalidInputError(`digest ${JSON.stringify(digest)} is not <algorithm>:<hex>`);
  if (m[1] !== "sha256") throw new InvalidInputError(`digest algorithm ${m[1]} is not supported (use sha256)`);
  return toHex(sha256(bytes)) === m[2]!.toLowerCase();
}

/**
 * Checks a file name as spec 04 requires of senders: no path separators, NUL or control
 * characters, no encoded separators, at most 255 characters.
 *
 * @throws {InvalidInputError} when it breaks a rule.
 */
export function checkFilename(name: string): void {
  // eslint-disable-next-line no-control-regex
  if (!name || name.length > 255 || /[/\\\u0000-\u001f\u007f]/.test(name) || /%2f|%5c/i.test(name) || /^[.\s]|[.\s]$/.test(name)) {
    throw new InvalidInputError(`attachment file name ${JSON.stringify(name)} is not allowed`);
  }
}

/**
 * An AFP attachment (amp-spec-next 04 "AFP Attachments"): a reference to a stored file,
 * which the recipient fetches and checks against `digest` itself.
 *
 * @throws {InvalidInputError} for a bad name, size, digest or `ref`.
 */
export function afpAttachment(a: { filename: string; contentType: string; size: number; digest: string; ref: string; endpoint?: string; url?: string }): Attachment {
  checkFilename(a.filename);
  if (!Number.isSafeInteger(a.size) || a.size < 0) throw new InvalidInputError("attachment size must be a non-negative integer");
  if (!/^sha256:[0-9a-f]{64}$/.test(a.digest)) throw new InvalidInputError("attachment digest must be sha256:<64 lowercase hex>");
  if (!/^afp:\/\/[^/]+\/.+/.test(a.ref)) throw new InvalidInputError("an AFP ref is afp://<space>/<path>");
  const out: Attachment = { storage: "afp", filename: a.filename, content_type: a.contentType, size: a.size, digest: a.digest, ref: a.ref };
  if (a.endpoint) out["endpoint"] = a.endpoint;
  if (a.url) out["url"] = a.url;
  return out;
}

/** The payload attachment object for a scanned upload. */
export function payloadAttachment(s: AttachmentStatus): Attachment {
  const out: Attachment = {};
  const set = (k: string, v: unknown) => {
    if (typeof v === "string" || typeof v === "number") out[k] = v;
  };
  set("id", s.attachment_id);
  set("filename", s.filename);
  set("content_type", s.content_type);
  set("size", s.size);
  set("digest", s.digest);
  set("url", s.url ?? s.download_url);
  set("scan_status", s.scan_status);
  set("uploaded_at", s.uploaded_at);
  set("expires_at", s.expires_at);
  return out;
}

async function bytesOf(input: AttachmentInput): Promise<Uint8Array> {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (typeof Blob !== "undefined" && input instanceof Blob) return new Uint8Array(await input.arrayBuffer());
  throw new InvalidInputError("attachment content must be a Uint8Array, an ArrayBuffer or a Blob");
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), reject(signal.reason)), { once: true });
  });

/** The attachment calls of one agent. */
export class AttachmentsApi {
  readonly #client: AmpClient;
  readonly #token: () => string;

  constructor(client: AmpClient, token: () => string) {
    this.#client = client;
    this.#token = token;
  }

  /** See {@link Agent.uploadAttachment}. */
  async upload(input: AttachmentInput, opts: UploadOptions): Promise<Attachment> {
    const info = await this.#client.info();
    if (!info.capabilities?.includes("attachments")) throw new UnsupportedError("this provider does not advertise attachments");
    checkFilename(opts.filename);
    if (!opts.contentType) throw new InvalidInputError("an attachment needs a content type");
    const bytes = await bytesOf(input);
    const limits = info.attachment_limits ?? {};
    const max = limits.max_attachment_size ?? 25 * 1024 * 1024;
    if (bytes.length > max) throw new InvalidInputError(`attachment is ${bytes.length} bytes; this provider takes at most ${max}`);
    const meta = { filename: opts.filename, content_type: opts.contentType, size: bytes.length, digest: attachmentDigest(bytes) };
    const http = this.#client.http;
    const token = this.#token();
    let id: string;
    if (opts.direct && limits.direct_upload === true) {
      const form = new FormData();
      form.set("metadata", new Blob([JSON.stringify(meta)], { type: "application/json" }));
      form.set("file", new Blob([bytes as BlobPart], { type: opts.contentType }), opts.filename);
      const r = await this.#raw("POST", http.url(["attachments", "upload", "direct"]), { body: form, token, ...(opts.signal ? { signal: opts.signal } : {}) });
      id = String((r as { attachment_id?: unknown }).attachment_id ?? "");
    } else {
      const ticket = await http.request<UploadTicket>({ method: "POST", path: ["attachments", "upload"], body: meta, token, idempotent: false, signal: opts.signal });
      if (typeof ticket.attachment_id !== "string" || !ticket.attachment_id) throw new InvalidInputError("the upload answer has no attachment_id");
      let target: URL;
      try {
        target = new URL(ticket.upload_url);
      } catch {
        throw new InvalidInputError("the upload answer has no valid upload_url");
      }
      if (target.protocol !== "https:" && target.protocol !== "http:") throw new InvalidInputError("upload_url must be http(s)");
      id = ticket.attachment_id;
      // The presigned URL is the credential: the API key is not sent to storage.
      await this.#raw(ticket.upload_method ?? "PUT", target, { body: bytes as Uint8Array<ArrayBuffer>, headers: ticket.upload_headers ?? { "content-type": opts.contentType }, ...(opts.signal ? { signal: opts.signal } : {}) });
      await http.request({ method: "POST", path: ["attachments", id, "confirm"], token, idempotent: true, signal: opts.signal });
    }
    if (!id) throw new InvalidInputError("the upload answer has no attachment_id");
    const deadline = Date.now() + (opts.scanTimeoutMs ?? 300_000);
    for (;;) {
      const s = await this.status(id, opts.signal);
      if (ROUTABLE_SCAN_STATUSES.includes(s.scan_status)) return payloadAttachment({ ...meta, ...s, attachment_id: s.attachment_id ?? id });
      if (s.scan_status === "rejected") throw new AmpError("attachment_rejected", `attachment ${id} failed the provider's scan`);
      if (Date.now() >= deadline) throw new TimeoutError(`attachment ${id} is still ${s.scan_status}; upload it again`);
      await sleep(opts.pollIntervalMs ?? 2000, opts.signal);
    }
  }

  /** See {@link Agent.attachment}. */
  status(id: string, signal?: AbortSignal): Promise<AttachmentStatus> {
    return this.#client.http.request({ method: "GET", path: ["attachments", id], token: this.#token(), idempotent: true, signal });
  }

  /** See {@link Agent.downloadAttachment}. */
  async download(a: Attachment, opts: DownloadOptions = {}): Promise<Uint8Array> {
    const digest = a["digest"];
    if (typeof digest !== "string") throw new InvalidInputError("the attachment has no digest to check");
    let url: URL;
    let token: string | undefined;
    if (typeof a["url"] === "string") {
      url = new URL(a["url"]);
    } else if (typeof a["id"] === "string" && a["storage"] !== "afp") {
      url = this.#client.http.url(["attachments", a["id"], "download"]);
      token = this.#token();
    } else {
      throw new InvalidInputError("the attachment has no URL; fetch an AFP attachment through its space");
    }
    const res = await this.#fetch("GET", url, { ...(token ? { token } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (!digestMatches(bytes, digest)) throw new AmpError("digest_mismatch", `attachment content does not match ${digest}; do not use it`);
    return bytes;
  }

  async #raw(method: string, url: URL, o: { body?: BodyInit; headers?: Record<string, string>; token?: string; signal?: AbortSignal }): Promise<unknown> {
    const res = await this.#fetch(method, url, o);
    const text = await res.text();
    try {
      return text ? JSON.parse(text) : {};
    } catch {
      return {};
    }
  }

  async #fetch(method: string, url: URL, o: { body?: BodyInit; headers?: Record<string, string>; token?: string; signal?: AbortSignal }): Promise<Response> {
    const f = this.#client.options.fetch ?? globalThis.fetch;
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (o.token) headers["authorization"] = `Bearer ${o.token}`;
    let res: Response;
    try {
      const init: RequestInit = { method, headers };
      if (o.body !== undefined) init.body = o.body;
      if (o.signal) init.signal = o.signal;
      res = await f.call(globalThis, url.href, init);
    } catch (e) {
      throw new TransportError(`${method} ${url.href}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      throw decodeError(res.status, res.headers.get("retry-after"), text, `${method} ${url.href}`);
    }
    return res;
  }
}
