/**
 * What providers answer, as TypeScript types. Every member a provider may leave out is
 * optional, and unknown members are kept (index signatures), so the SDK works with any
 * provider, not only ours.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.js";
import type { Priority } from "./signing.js";

/** The `provider` object of a registration answer. */
export interface ProviderRef {
  /** The provider's domain. */
  name?: string;
  /** The API base with its version path (`https://api.example.test/v1`). */
  endpoint?: string;
  /** Where to `POST` messages. */
  route_url?: string;
}

/** A successful registration (spec 03), normalised: `agent_id`/`api_key` whichever spelling the provider used. */
export interface Registration {
  /** The agent's full address. */
  address: string;
  /** The address without platform/repo scope. */
  short_address?: string;
  /** The provider's id for the agent. */
  agent_id: string;
  /** The tenant. */
  tenant?: string;
  /** The API key (`amp_live_sk_…`), sent as `Authorization: Bearer`. Secret. */
  api_key: string;
  /** The fingerprint of the registered public key. */
  fingerprint?: string;
  /** Where the provider says it lives. */
  provider: ProviderRef;
  /** When the agent was registered. */
  registered_at?: string;
  /** Anything else the provider sent. */
  [key: string]: unknown;
}

/** Webhook and push preferences (registration and `PATCH /v1/agents/me`). */
export interface DeliveryPrefs {
  /** An `https://` URL the provider POSTs messages to; `null` removes it. */
  webhook_url?: string | null;
  /** The HMAC secret for `X-AMP-Signature`; `null` removes it. */
  webhook_secret?: string | null;
  /** Skip the webhook while a WebSocket is open. */
  prefer_websocket?: boolean;
}

/** `GET /v1/info` (spec 08). */
export interface ProviderInfo {
  /** The provider's domain. */
  provider: string;
  /** Protocol version (`amp/0.1`). */
  version: string;
  /** The server's own version. */
  server_version?: string;
  /** The API base. */
  endpoint?: string;
  /** The provider's public key (PEM). */
  public_key?: string;
  /** Its fingerprint. */
  fingerprint?: string;
  /** `federation`, `websockets`, `webhooks`, `attachments`, `notify:v1`, `notify:longpoll`, … */
  capabilities: string[];
  /** `open`, `owner`. */
  registration_modes?: string[];
  /** Advertised limits. */
  rate_limits?: Record<string, number>;
  /** Present when `attachments` is a capability. */
  attachment_limits?: AttachmentLimits;
  [key: string]: unknown;
}

/** `attachment_limits` of `/v1/info`. */
export interface AttachmentLimits {
  /** Largest single attachment, bytes (spec default 25 MB). */
  max_attachment_size?: number;
  /** Largest total per message, bytes (100 MB). */
  max_total_attachment_size?: number;
  /** Most attachments per message (10). */
  max_attachments_per_message?: number;
  /** `POST /v1/attachments/upload/direct` is offered. */
  direct_upload?: boolean;
  [key: string]: unknown;
}

/** `GET /v1/health`. */
export interface Health {
  /** `healthy` or `unhealthy`. */
  status: string;
  /** Server version. */
  version?: string;
  /** The provider's domain. */
  provider?: string;
  /** Seconds since start. */
  uptime_seconds?: number;
  [key: string]: unknown;
}

/** `/.well-known/agent-messaging.json` (spec 06). */
export interface WellKnown {
  /** The provider's domain. */
  provider: string;
  /** Its API base (`https://api.example.test/v1`). */
  endpoint: string;
  /** Its public key (PEM). */
  public_key?: string;
  /** Its fingerprint. */
  fingerprint?: string;
  /** Discovery version (`AMP1`). */
  version?: string;
  /** Capabilities. */
  capabilities?: string[];
  [key: string]: unknown;
}

/** `GET /v1/agents/me`. */
export interface AgentProfile {
  address: string;
  agent_id?: string;
  alias?: string | null;
  name?: string;
  tenant?: string;
  public_key?: string;
  key_algorithm?: string;
  fingerprint?: string;
  delivery?: DeliveryPrefs;
  metadata?: JsonValue;
  registered_at?: string;
  last_seen_at?: string | null;
  [key: string]: unknown;
}

/** `GET /v1/agents/resolve/{address}`. */
export interface ResolvedAgent {
  address: string;
  alias?: string | null;
  /** The agent's public key (PEM): verify its messages with it. */
  public_key: string;
  key_algorithm?: string;
  fingerprint?: string;
  online?: boolean;
  capabilities?: string[];
  [key: string]: unknown;
}

/** `GET /v1/agents`. */
export interface AgentList {
  agents: { address: string; alias?: string | null; online?: boolean; [key: string]: unknown }[];
  total?: number;
  cursor?: string | null;
  has_more?: boolean;
  [key: string]: unknown;
}

/** The answer to `POST /v1/route`. */
export interface RouteResult {
  /** The message id. */
  id: string;
  /** `queued`, `delivered`, `quarantined`, … */
  status: string;
  /** `relay`, `websocket`, `webhook`, … */
  method?: string;
  /** What the provider proved (`mailbox_written`, `socket_written`, `webhook_2xx`, `queued`; spec 12.2). */
  basis?: string;
  /** The thread the message was filed in. */
  thread_id?: string;
  queued_at?: string;
  delivered_at?: string;
  expires_at?: string;
  /** How a requested receipt will arrive (`websocket`, `retained`). */
  receipt?: string;
  /** Provider warnings (`attachment_suspicious`). */
  warnings?: string[];
  [key: string]: unknown;
}

/** A message's envelope as delivered (spec 04). */
export interface Envelope {
  version?: string;
  id: string;
  from: string;
  to: string;
  subject: string;
  priority?: Priority | string;
  timestamp?: string;
  expires_at?: string | null;
  signature: string;
  in_reply_to?: string | null;
  thread_id?: string | null;
  idempotency_key?: string;
  [key: string]: unknown;
}

/** A message payload (spec 04). */
export interface Payload {
  /** `request`, `response`, `notification`, `alert`, `task`, `status`, `handoff`, `ack`, `update`, `system`, or `ns:custom`. */
  type: string;
  /** The main text. */
  message: string;
  /** Structured context, kept byte for byte by providers. */
  context?: JsonValue;
  /** Attachment metadata (see {@link Attachment}). */
  attachments?: Attachment[];
  [key: string]: JsonValue | Attachment[] | undefined;
}

/** An attachment object of a payload (spec 04, amp-spec-next). */
export interface Attachment extends JsonObject {
  [key: string]: JsonValue;
}

/** The trust levels of spec 07 (`org-verified` is the optional attestation upgrade). */
export type TrustLevel = "verified" | "external" | "untrusted" | "org-verified";

/** `local.security` (spec 07 "Security Metadata"). */
export interface SecurityInfo {
  /** How far the content can be trusted. */
  trust: TrustLevel;
  /** Appendix A injection categories the provider detected. */
  injection_flags: string[];
  /** Whether the provider wrapped the content (`wrapped_content`). */
  wrapped: boolean;
  /** When the provider verified the signature. */
  verified_at?: string;
  /** `payload.message` in the normative `<external-content>` wrapping. */
  wrapped_content?: string;
  [key: string]: unknown;
}

/** A page of `GET /v1/messages/pending` as the provider sent it. */
export interface PendingPageWire {
  messages: unknown[];
  count?: number;
  remaining?: number;
  next_cursor?: string | null;
}

/** `GET /v1/messages/pending/count`. */
export interface PendingCount {
  /** Messages queued. */
  count: number;
  /** When the oldest was queued (`null` on an empty queue). */
  oldest_queued_at?: string | null;
  /** The head cursor: pass as `after` to get only what arrives later. */
  cursor?: string | null;
}

/** The answer to a single ack. */
export interface AckResult {
  acknowledged: boolean;
  /** It had been acked before (acks are idempotent). */
  already_acked?: boolean;
  [key: string]: unknown;
}

/** The answer to a batch ack. */
export interface BatchAckResult {
  /** How many were newly acknowledged. */
  acknowledged: number;
  /** Ids acked before. */
  already_acked?: string[];
  /** Ids not in the caller's mailbox. */
  not_found?: string[];
  [key: string]: unknown;
}

/** The answer to `POST /v1/messages/{id}/read`. */
export interface ReadResult {
  read_receipt_sent: boolean;
  [key: string]: unknown;
}

/** A `message.delivered` receipt. */
export interface DeliveredReceipt {
  id: string;
  to?: string;
  delivered_at?: string;
  method?: string;
  basis?: string;
  [key: string]: unknown;
}

/** A `message.read` receipt. */
export interface ReadReceipt {
  id: string;
  read_at?: string;
  by?: string;
  [key: string]: unknown;
}

/** A receipt retained for the caller as sender (`GET /v1/messages/receipts`). */
export interface Receipt {
  /** `message.delivered` or `message.read`. */
  type: "message.delivered" | "message.read" | (string & {});
  /** The receipt. */
  data: DeliveredReceipt | ReadReceipt;
  /** Its position: pass the last one as `after`, or to {@link ReceiptsAck}. */
  seq: number;
}

/** `GET /v1/messages/receipts`. */
export interface Receipts {
  receipts: Receipt[];
  count?: number;
  /** Pass as `after` for the next page. */
  next_after?: number | null;
}

/** `upto` of `POST /v1/messages/receipts/ack`. */
export type ReceiptsAck = number;

/** The answer to `POST /v1/auth/rotate-key`. */
export interface ApiKeyRotation {
  /** The new API key. */
  api_key: string;
  /** Until when the old one still works. */
  previous_key_valid_until?: string;
  [key: string]: unknown;
}

/** The answer to `POST /v1/auth/rotate-keys`. */
export interface KeyRotation {
  rotated: boolean;
  /** The new key's fingerprint. */
  fingerprint?: string;
  [key: string]: unknown;
}
