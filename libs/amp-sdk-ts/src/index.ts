/**
 * The TypeScript SDK of the Agent Messaging Protocol (AMP): agents in Node, Deno, Bun and
 * browsers register an Ed25519 identity with a provider, send signed messages, and receive
 * them by pickup, WebSocket or webhook.
 *
 * ```ts
 * import { AmpClient } from "amp-sdk";
 * const amp = new AmpClient("http://127.0.0.1:8080");
 * const alice = await amp.register({ tenant: "acme", name: "alice" });
 * const bob = await amp.register({ tenant: "acme", name: "bob" });
 * await alice.send(bob.address, "Hello", "Can you review PR 42?");
 * for (const m of (await bob.pending()).messages) {
 *   console.log(m.trust, m.from, m.text);
 *   await bob.ack(m.id);
 * }
 * ```
 *
 * Map: {@link AmpClient} (provider, registration, discovery) · {@link Agent} (every call
 * with an API key) · {@link Subscription} (WebSocket) · {@link verifyWebhook} (webhooks) ·
 * {@link Message} (what is received, with its trust level) · keys ({@link PrivateKey},
 * {@link PublicKey}) · signing ({@link signMessage}, {@link payloadHash}) · addresses
 * ({@link Address}) · errors ({@link AmpError} and subclasses). Node-only helpers (identity
 * files, an `http` webhook listener) are in `amp-sdk/node`.
 *
 * @module amp-sdk
 */

export { AmpClient, type ClientOptions, type Discovery, type DiscoverOptions, type RegisterOptions } from "./client.js";
export { Agent, type AckForm, type PendingOptions, type PendingPage } from "./agent.js";
export { Identity, IDENTITY_VERSION, type IdentityData, normaliseRegistration } from "./identity.js";
export { Message, wrapContent } from "./message.js";
export {
  Subscription,
  type ConnectedInfo,
  type SubscribeOptions,
  type SubscriptionEvent,
  type SubscriptionStats,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./ws.js";
export {
  signWebhook,
  verifyWebhook,
  verifyWebhookRequest,
  WebhookVerificationError,
  type HeaderSource,
  type WebhookDelivery,
  type WebhookVerifyOptions,
} from "./webhook.js";
export {
  buildRoute,
  newIdempotencyKey,
  newMessageId,
  payloadText,
  RawJson,
  rawJson,
  type BuiltRoute,
  type PayloadInput,
  type SendOptions,
} from "./route.js";
export {
  afpAttachment,
  attachmentDigest,
  checkFilename,
  digestMatches,
  isValidScanStatus,
  payloadAttachment,
  ROUTABLE_SCAN_STATUSES,
  SCAN_STATUSES,
  type AttachmentInput,
  type AttachmentStatus,
  type DownloadOptions,
  type UploadOptions,
  type UploadTicket,
} from "./attachments.js";
export { KeyError, PrivateKey, PublicKey } from "./keys.js";
export { canonicalString, PRIORITIES, signMessage, verifyMessage, type Priority, type SignedFields } from "./signing.js";
export { canonicalJson, canonicalJsonOfText, canonicalPayload, compareCodePoints, formatNumber, MAX_DEPTH, payloadHash, type JsonObject, type JsonValue } from "./json.js";
export {
  Address,
  AddressError,
  isLocalNetworkDomain,
  isValidLabel,
  isValidMessageId,
  isValidName,
  MAX_ADDRESS_LENGTH,
  MAX_LABEL_LENGTH,
  parseAddressParts,
  type AddressContext,
  type AddressParts,
} from "./address.js";
export {
  AmpError,
  ApiError,
  apiErrorFor,
  ConflictError,
  DecodeError,
  ErrorCode,
  ForbiddenError,
  GoneError,
  InvalidInputError,
  isAmpError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitedError,
  ServerError,
  SignatureError,
  SocketClosedError,
  SocketError,
  TimeoutError,
  TransportError,
  UnauthorizedError,
  UnsupportedError,
  ValidationError,
  type ApiErrorInit,
  type ErrorCodeValue,
} from "./errors.js";
export { apiRoot, DEFAULT_RETRY, parseRetryAfter, type HttpOptions, type RetryOptions } from "./http.js";
export { fromBase64, fromHex, toBase64, toHex } from "./encoding.js";
export type * from "./types.js";
