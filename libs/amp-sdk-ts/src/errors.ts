/**
 * The SDK's errors: one base class, {@link AmpError}, whose `code` is the protocol's error
 * code (`not_found`, `rate_limited`, …) or a fixed word for failures that never reached a
 * provider (`transport`, `timeout`, `decode`, `invalid`). Provider refusals are
 * {@link ApiError}s, subclassed by HTTP status so `catch` clauses can be specific:
 *
 * ```ts
 * try { await alice.send(to, "hi", { message: "…" }); }
 * catch (e) {
 *   if (e instanceof RateLimitedError) await sleep((e.retryAfter ?? 1) * 1000);
 *   else if (e instanceof ApiError && e.code === "not_found") console.log("no such agent");
 *   else throw e;
 * }
 * ```
 *
 * @module
 */

/** Error codes of spec 08 (amp-spec-next) and the ones providers add (ours included). */
export const ErrorCode = {
  InvalidRequest: "invalid_request",
  MissingField: "missing_field",
  InvalidField: "invalid_field",
  Unauthorized: "unauthorized",
  Forbidden: "forbidden",
  NotFound: "not_found",
  MethodNotAllowed: "method_not_allowed",
  NameTaken: "name_taken",
  DuplicateMessage: "duplicate_message",
  DuplicateIdempotencyKey: "duplicate_idempotency_key",
  CursorExpired: "cursor_expired",
  RateLimited: "rate_limited",
  SignatureMissing: "signature_missing",
  SignatureInvalid: "signature_invalid",
  KeyNotFound: "key_not_found",
  KeyMismatch: "key_mismatch",
  KeyConflict: "key_conflict",
  KeyRevoked: "key_revoked",
  TenantAccessDenied: "tenant_access_denied",
  RecipientNotFound: "recipient_not_found",
  InvalidRecipient: "invalid_recipient",
  RecipientNotAllowed: "recipient_not_allowed",
  RecipientSuspended: "recipient_suspended",
  AgentSuspended: "agent_suspended",
  ProviderNotTrusted: "provider_not_trusted",
  MailboxFull: "mailbox_full",
  StorageQuotaExceeded: "storage_quota_exceeded",
  RequestTooLarge: "request_too_large",
  TimestampFuture: "timestamp_future",
  MessageQuarantined: "message_quarantined",
  AttachmentTooLarge: "attachment_too_large",
  TooManyAttachments: "too_many_attachments",
  AttachmentRejected: "attachment_rejected",
  AttachmentNotFound: "attachment_not_found",
  AttachmentExpired: "attachment_expired",
  AttachmentPending: "attachment_pending",
  AttachmentAlreadyUsed: "attachment_already_used",
  InvalidDigestAlgorithm: "invalid_digest_algorithm",
  AttachmentsNotSupported: "attachments_not_supported",
  Internal: "internal_error",
  NotImplemented: "not_implemented",
  BadGateway: "bad_gateway",
  ServiceUnavailable: "service_unavailable",
} as const;

/** A known error code, or any other string a provider sends. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode] | (string & {});

/** Every error this SDK throws. */
export class AmpError extends Error {
  /** The protocol's error code, or `transport`, `timeout`, `decode`, `invalid`, `closed`, … */
  readonly code: ErrorCodeValue;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AmpError";
    this.code = code;
  }
}

/** What a provider's error answer carried. */
export interface ApiErrorInit {
  /** HTTP status. */
  status: number;
  /** The spec's error code (`error`), or `http_<status>` when the body had none. */
  code: string;
  /** The provider's human-readable text (`message`). */
  message: string;
  /** The request field at fault (`field`). */
  field?: string | undefined;
  /** Extra detail (`details`). */
  details?: unknown;
  /** Seconds to wait before trying again: `Retry-After`, or the body's `retry_after`. */
  retryAfter?: number | undefined;
  /** The whole decoded body (or its text when it was not JSON). */
  body?: unknown;
  /** The method and URL of the request. */
  request?: string | undefined;
}

/** A provider answered with a non-2xx status (spec 08 "Error Responses"). */
export class ApiError extends AmpError {
  /** HTTP status. */
  readonly status: number;
  /** The request field at fault, when the provider names one. */
  readonly field: string | undefined;
  /** The `details` member of the error body. */
  readonly details: unknown;
  /** Seconds to wait before retrying (`Retry-After` header or `retry_after`), when given. */
  readonly retryAfter: number | undefined;
  /** The decoded error body. */
  readonly body: unknown;
  /** `METHOD url` of the request that failed. */
  readonly request: string | undefined;

  constructor(init: ApiErrorInit) {
    super(init.code, init.message);
    this.name = "ApiError";
    this.status = init.status;
    this.field = init.field;
    this.details = init.details;
    this.retryAfter = init.retryAfter;
    this.body = init.body;
    this.request = init.request;
  }
}

/** 400 and 422: the request is malformed or a field is invalid (`invalid_field`, `missing_field`, `signature_missing`, …). */
export class ValidationError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "ValidationError";
  }
}

/** 401: missing, invalid, rotated-out or revoked API key. */
export class UnauthorizedError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "UnauthorizedError";
  }
}

/** 403: not allowed (`forbidden`, `signature_invalid`, `key_revoked`, `tenant_access_denied`, …). */
export class ForbiddenError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "ForbiddenError";
  }
}

/** 404: unknown recipient, message or agent. */
export class NotFoundError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "NotFoundError";
  }
}

/** 409: `name_taken` (see `details`/`body.suggestions`), `duplicate_message`, `key_conflict`, … */
export class ConflictError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "ConflictError";
  }
}

/** 410: `cursor_expired` (restart pickup without `after`), `attachment_expired`. */
export class GoneError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "GoneError";
  }
}

/** 413: the request or an attachment is too large. */
export class PayloadTooLargeError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "PayloadTooLargeError";
  }
}

/** 429: slow down; {@link ApiError.retryAfter} says for how long. */
export class RateLimitedError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "RateLimitedError";
  }
}

/** 5xx (and 507 `mailbox_full`, `storage_quota_exceeded`): the provider could not do it now. */
export class ServerError extends ApiError {
  constructor(init: ApiErrorInit) {
    super(init);
    this.name = "ServerError";
  }
}

/** The {@link ApiError} subclass for a status. */
export function apiErrorFor(init: ApiErrorInit): ApiError {
  const s = init.status;
  if (s === 400 || s === 422) return new ValidationError(init);
  if (s === 401) return new UnauthorizedError(init);
  if (s === 403) return new ForbiddenError(init);
  if (s === 404) return new NotFoundError(init);
  if (s === 409) return new ConflictError(init);
  if (s === 410) return new GoneError(init);
  if (s === 413) return new PayloadTooLargeError(init);
  if (s === 429) return new RateLimitedError(init);
  if (s >= 500) return new ServerError(init);
  return new ApiError(init);
}

/** The request never got an answer: connection refused or reset, DNS, TLS, aborted. */
export class TransportError extends AmpError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? "transport", message, options);
    this.name = "TransportError";
  }
}

/** The request or the wait took longer than its timeout. */
export class TimeoutError extends TransportError {
  constructor(message: string) {
    super(message, { code: "timeout" });
    this.name = "TimeoutError";
  }
}

/** A 2xx answer or a frame that is not what the protocol says it is. */
export class DecodeError extends AmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("decode", message, options);
    this.name = "DecodeError";
  }
}

/** An argument refused before anything was sent (bad URL, payload not an object, …). */
export class InvalidInputError extends AmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("invalid", message, options);
    this.name = "InvalidInputError";
  }
}

/** The provider does not offer what was asked (e.g. attachments without the capability). */
export class UnsupportedError extends AmpError {
  constructor(message: string) {
    super("unsupported", message);
    this.name = "UnsupportedError";
  }
}

/** An `error` frame on the WebSocket (`unauthorized`, `invalid_recipient`, …). */
export class SocketError extends AmpError {
  /** The `ref` of the frame it answers, if any. */
  readonly ref: string | undefined;
  /** The whole frame. */
  readonly frame: unknown;

  constructor(code: string, message: string, ref?: string, frame?: unknown) {
    super(code, message);
    this.name = "SocketError";
    this.ref = ref;
    this.frame = frame;
  }
}

/** The WebSocket closed for good (4001 unauthorized, or closed by the application). */
export class SocketClosedError extends AmpError {
  /** The close code, when there was a close frame. */
  readonly closeCode: number | undefined;
  /** The close reason. */
  readonly reason: string;

  constructor(closeCode: number | undefined, reason: string) {
    super("closed", `websocket closed${closeCode === undefined ? "" : ` (${closeCode})`}${reason ? `: ${reason}` : ""}`);
    this.name = "SocketClosedError";
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/** A signature that does not verify (a message, a key-rotation proof). */
export class SignatureError extends AmpError {
  constructor(message: string) {
    super("signature_invalid", message);
    this.name = "SignatureError";
  }
}

/** Whether `e` is an {@link AmpError} with `code`. */
export function isAmpError(e: unknown, code?: string): e is AmpError {
  return e instanceof AmpError && (code === undefined || e.code === code);
}
