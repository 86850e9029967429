//! Provider attachments (spec 04, 05, 07, 08): the one implementation behind the upload,
//! confirm, status and download endpoints and behind the route-time checks of acceptance.
//!
//! - [`AttachmentService`]: upload (a single-use URL), confirm (then the scan), status,
//!   download (authenticated, or by a signed URL), the checks and the binding of an
//!   attachment to the one message that references it, and the sweep that deletes what
//!   expired.
//! - [`scan`]: the scanning pipeline of spec 07, extensible.
//! - `url`: the signed download URLs.
//!
//! Lifetimes: an upload URL works for `upload_url_ttl_secs` (≤ 1 h); an attachment not
//! referenced by a routed message is deleted 2 h after confirmation (or after its upload URL
//! expired, when never confirmed); a referenced one lives, and its signed URL works, until
//! 7 days after the latest time it could have been routed (confirmation + 2 h), so at least
//! 7 days after routing (spec 05). Deletion is a durable job per attachment (`Jobs`), run by
//! [`AttachmentService::sweep`].

mod direct;
mod extract;
mod quota;
pub(crate) mod route;
pub mod scan;
mod url;

use std::sync::Arc;
use std::time::Duration;

use amp_proto::attachment::{self, Digest, PayloadAttachment, ScanStatus};
use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_store::blob::Blobs;
use amp_store::{AgentRecord, AttachmentRecord, AttachmentUse, Job, Millis, ReceivedBlob, Store};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use self::scan::{ScanInput, Scanner};
use crate::{internal, store_err};

/// An unreferenced attachment is deleted this long after its confirmation (spec 04: 2 h).
pub const UNREFERENCED_MS: Millis = 2 * 3600 * 1000;
/// A routed attachment's download URL works at least this long (spec 05: 7 days).
pub const TTL_MS: Millis = 7 * 24 * 3600 * 1000;
/// The job kind of attachment deletions.
pub const JOB_KIND: &str = "attachment.expire";

/// Attachment policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsConfig {
    /// Serve the attachment endpoints and accept messages that reference `provider`
    /// attachments (advertised as the `attachments` capability).
    pub enabled: bool,
    /// Largest attachment in bytes; at most the spec's 25 MB.
    pub max_attachment_size: u64,
    /// How long an upload URL works, in seconds; at most 3600 (spec 08).
    pub upload_url_ttl_secs: u64,
    /// MIME types refused on top of spec 07's list.
    pub blocked_content_types: Vec<String>,
    /// An external scanner run after the required checks (program and arguments; the file
    /// on its standard input; exit 0 pass, 10 suspicious, anything else rejected). Empty:
    /// none.
    pub scan_command: Vec<String>,
    /// How long the external scanner may take, in seconds.
    pub scan_command_timeout_secs: u64,
    /// Whether the external scanner is an antivirus (then `clean`, and `av_scanning: true`).
    pub scan_command_is_antivirus: bool,
    /// Scan the content of text attachments (text/*, JSON, XML, CSV, HTML, Markdown) and
    /// the text of PDF and DOCX files for prompt injection with the built-in pattern
    /// database (spec-next 07): a finding makes
    /// the attachment `suspicious` (still deliverable), its categories in `scan_flags`
    /// (`injection:<category>,…`) and in the recipient's
    /// `local.security.attachments[].injection_flags`.
    pub injection_scan: bool,
    /// A TOML prompt-injection pattern database replacing the built-in one for attachment
    /// contents (the format of `[router] injection_patterns_file`, usually the same file).
    /// Read at start; a file that cannot be read or parsed refuses the start.
    pub injection_patterns_file: Option<std::path::PathBuf>,
    /// How long confirm waits for the scan before answering `pending`, in milliseconds.
    pub confirm_wait_ms: u64,
    /// How many attachments one agent may hold at once (from its upload request until the
    /// attachment is deleted or rejected by the scan); 0: no limit.
    pub agent_max_attachments: u64,
    /// How many bytes of attachments one agent may hold at once; 0: no limit.
    pub agent_max_bytes: u64,
    /// How many attachments the agents of one tenant may hold at once; 0: no limit.
    pub tenant_max_attachments: u64,
    /// How many bytes of attachments the agents of one tenant may hold at once; 0: no limit.
    pub tenant_max_bytes: u64,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attachment_size: attachment::MAX_ATTACHMENT_SIZE,
            upload_url_ttl_secs: 3600,
            blocked_content_types: Vec::new(),
            scan_command: Vec::new(),
            scan_command_timeout_secs: 30,
            scan_command_is_antivirus: false,
            injection_scan: true,
            injection_patterns_file: None,
            confirm_wait_ms: 2000,
            agent_max_attachments: 100,
            agent_max_bytes: 1 << 30,
            tenant_max_attachments: 1000,
            tenant_max_bytes: 10 << 30,
        }
    }
}

impl AttachmentsConfig {
    /// Checks the bounds the spec sets.
    ///
    /// Fails with a sentence naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attachment_size == 0
            || self.max_attachment_size > attachment::MAX_ATTACHMENT_SIZE
        {
            return Err("attachments.max_attachment_size must be 1..=26214400 (25 MB)".into());
        }
        if !(1..=3600).contains(&self.upload_url_ttl_secs) {
            return Err("attachments.upload_url_ttl_secs must be 1..=3600 (spec 08)".into());
        }
        // The operator's file is read now, so a bad one refuses the start; the built-in
        // database is compiled once, by `scanner` (its tests prove it compiles).
        if self.injection_scan && self.injection_patterns_file.is_some() {
            self.patterns()?;
        }
        Ok(())
    }

    /// The injection pattern database: the operator's file, or the built-in one.
    ///
    /// Fails with a sentence naming the file (or the built-in database) and what is wrong.
    fn patterns(&self) -> Result<crate::injection::InjectionScanner, String> {
        match &self.injection_patterns_file {
            Some(path) => crate::injection::InjectionScanner::from_file(path).map_err(|e| {
                format!(
                    "attachments.injection_patterns_file {}: {e}",
                    path.display()
                )
            }),
            None => crate::injection::InjectionScanner::builtin()
                .map_err(|e| format!("built-in injection patterns: {e}")),
        }
    }

    /// The pipeline this configuration describes.
    pub fn scanner(&self) -> Scanner {
        let mut scanner = Scanner::required(&self.blocked_content_types);
        if !self.scan_command.is_empty() {
            scanner = scanner.with_stage(Arc::new(scan::CommandStage {
                command: self.scan_command.clone(),
                timeout: Duration::from_secs(self.scan_command_timeout_secs),
                antivirus: self.scan_command_is_antivirus,
            }));
        }
        // The guide's order: the required steps, the malware scan, then injection.
        if self.injection_scan {
            match self.patterns() {
                Ok(patterns) => {
                    scanner = scanner.with_stage(Arc::new(scan::InjectionStage {
                        patterns: Arc::new(patterns),
                    }));
                }
                // `validate` read the operator's file at start (the ingest refuses to
                // start otherwise); only a file changed or removed since lands here.
                Err(e) => {
                    tracing::error!(error = %e, "attachment injection scan off")
                }
            }
        }
        scanner
    }
}

/// The upload request of spec 08.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UploadRequest {
    /// The original filename (sanitised by the provider).
    #[schema(required = true, nullable = false, min_length = 1)]
    pub filename: Option<String>,
    /// The MIME type.
    #[schema(required = true, nullable = false, min_length = 1)]
    pub content_type: Option<String>,
    /// The size in bytes.
    #[schema(value_type = Option<u64>, required = true, nullable = false, minimum = 1)]
    pub size: Option<Value>,
    /// `sha256:<hex>`.
    #[schema(required = true, nullable = false, pattern = "^sha256:[0-9a-f]{64}$")]
    pub digest: Option<String>,
    /// Where to POST `{"attachment_id", "scan_status"}` when the scan ends (spec-next 08
    /// "Scan Notification Alternatives"), signed with the uploader's webhook secret when it
    /// has one. An absolute http(s) URL the provider's outbound policy allows.
    #[schema(nullable = false, max_length = 2048)]
    pub scan_callback_url: Option<String>,
}

/// Longest `scan_callback_url`: the outbound guard's limit, said in its own words.
const MAX_CALLBACK_URL: usize = amp_runtime::outbound::MAX_URL_BYTES;

/// An upload request's metadata once checked.
struct Metadata {
    filename: String,
    content_type: String,
    size: u64,
    digest: Digest,
    scan_callback_url: Option<String>,
}

/// The attachment service: cheap to clone.
#[derive(Clone)]
pub struct AttachmentService(Arc<Inner>);

struct Inner {
    store: Store,
    blobs: Blobs,
    scanner: Scanner,
    url_key: [u8; 32],
    public_url: String,
    config: AttachmentsConfig,
    /// What a `scan_callback_url` must pass.
    callback_policy: amp_runtime::outbound::OutboundPolicy,
}

impl std::fmt::Debug for AttachmentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentService")
    }
}

fn now_ms() -> Millis {
    Timestamp::now().unix_millis()
}

fn rfc3339(ms: Millis) -> Option<String> {
    Timestamp::from_unix_millis(ms).map(Timestamp::to_rfc3339)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::AttachmentNotFound, "no attachment has this id")
}

/// The blob's name: content-addressed, one object per attachment.
fn blob_name(digest: &Digest, id: &str) -> String {
    format!("{}.{id}", digest.hex())
}

impl AttachmentService {
    /// The service. `secret` keys the signed download URLs (stable across restarts and
    /// shared by every process of a deployment: the provider's key pepper); `public_url` is
    /// the base clients call, without `/v1`.
    pub fn new(
        store: Store,
        blobs: Blobs,
        config: AttachmentsConfig,
        secret: &[u8],
        public_url: &str,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            blobs,
            scanner: config.scanner(),
            url_key: url::derive_key(secret),
            public_url: public_url.trim_end_matches('/').to_owned(),
            config,
            callback_policy: amp_runtime::outbound::OutboundPolicy::default(),
        }))
    }

    /// The outbound policy a `scan_callback_url` must pass (the one delivery applies to
    /// every attempt): the provider's `outbound` settings.
    #[must_use]
    pub fn with_callback_policy(mut self, policy: amp_runtime::outbound::OutboundPolicy) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.callback_policy = policy;
        }
        self
    }

    /// `/v1/info`'s `attachment_limits`.
    pub fn limits(&self) -> Value {
        json!({
            "max_attachment_size": self.0.config.max_attachment_size,
            "max_total_attachment_size": attachment::MAX_TOTAL_ATTACHMENT_SIZE,
            "max_attachments_per_message": attachment::MAX_ATTACHMENTS_PER_MESSAGE,
            "direct_upload": true,
            "av_scanning": self.0.scanner.has_antivirus(),
            "scan_callbacks": true,
        })
    }

    /// The largest body an upload URL accepts: the declared size may be exceeded by 1 %
    /// (spec 08), and then the scan rejects it.
    pub fn max_upload_body(&self) -> usize {
        let max = self.0.config.max_attachment_size;
        (max + max / 100 + 1) as usize
    }

    /// The upload metadata of spec 08, checked: the sanitised filename, a MIME type, a size
    /// within the limit and a `sha256:` digest.
    ///
    /// Fails with `400` for missing or malformed fields, `413 attachment_too_large`, `422
    /// invalid_digest_algorithm`.
    fn validate(&self, req: UploadRequest) -> Result<Metadata, ApiError> {
        let filename = req.filename.ok_or_else(|| ApiError::missing("filename"))?;
        let filename = attachment::sanitize_filename(&filename).map_err(|_| {
            ApiError::invalid(
                "filename",
                "filename must not contain encoded path separators",
            )
        })?;
        let content_type = req
            .content_type
            .map(|c| c.trim().to_owned())
            .ok_or_else(|| ApiError::missing("content_type"))?;
        let well_formed = content_type.len() <= 255
            && content_type
                .split(';')
                .next()
                .and_then(|e| e.trim().split_once('/'))
                .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
            && !content_type.chars().any(char::is_control);
        if !well_formed {
            return Err(ApiError::invalid(
                "content_type",
                "content_type must be a MIME type (type/subtype)",
            ));
        }
        let size = req
            .size
            .ok_or_else(|| ApiError::missing("size"))?
            .as_u64()
            .ok_or_else(|| ApiError::invalid("size", "size must be a whole number of bytes"))?;
        if size > self.0.config.max_attachment_size {
            return Err(ApiError::new(
                ErrorCode::AttachmentTooLarge,
                format!(
                    "attachments are limited to {} bytes",
                    self.0.config.max_attachment_size
                ),
            )
            .with_field("size"));
        }
        let digest_text = req.digest.ok_or_else(|| ApiError::missing("digest"))?;
        let digest = Digest::parse("digest", &digest_text)?;
        let scan_callback_url = match req.scan_callback_url {
            None => None,
            Some(url) if url.len() > MAX_CALLBACK_URL => {
                return Err(ApiError::invalid(
                    "scan_callback_url",
                    format!("scan_callback_url is limited to {MAX_CALLBACK_URL} bytes"),
                ));
            }
            Some(url) => {
                amp_runtime::outbound::check_url(&url, self.0.callback_policy).map_err(|why| {
                    ApiError::invalid(
                        "scan_callback_url",
                        format!("scan_callback_url is not allowed: {why}"),
                    )
                })?;
                Some(url)
            }
        };
        Ok(Metadata {
            filename,
            content_type,
            size,
            digest,
            scan_callback_url,
        })
    }

    /// `POST /v1/attachments/upload`: validates the metadata, records the attachment and
    /// answers the single-use upload URL (201 body).
    ///
    /// Fails with `400` for missing or malformed fields, `413 attachment_too_large`, `422
    /// invalid_digest_algorithm`, or `503` when the store is unavailable.
    pub async fn init(&self, owner: &AgentRecord, req: UploadRequest) -> Result<Value, ApiError> {
        let meta = self.validate(req)?;
        self.check_quota(owner, meta.size).await?;
        let now = Timestamp::now();
        let id = attachment::generate_id(now);
        let token = hex::encode(rand_bytes());
        let ttl_ms = self.0.config.upload_url_ttl_secs as Millis * 1000;
        let record = AttachmentRecord {
            id: id.clone(),
            tenant: owner.tenant.clone(),
            owner_id: owner.id.clone(),
            owner_address: owner.address.clone(),
            filename: meta.filename,
            content_type: meta.content_type.clone(),
            size: meta.size,
            digest: meta.digest.wire(),
            created_at: now.unix_millis(),
            upload_token_sha256: Some(hex::encode(sha2::Sha256::digest(token.as_bytes()))),
            upload_expires_at: now.unix_millis() + ttl_ms,
            received: None,
            confirmed_at: None,
            scan_status: ScanStatus::Pending.as_str().to_owned(),
            scanned_at: None,
            scan_flags: Vec::new(),
            used_by: None,
            // Never confirmed: gone 2 h after its upload URL expired.
            expires_at: now.unix_millis() + ttl_ms + UNREFERENCED_MS,
            scan_callback_url: meta.scan_callback_url,
        };
        if !self
            .0
            .store
            .attachment_create(&record)
            .await
            .map_err(store_err)?
        {
            return Err(internal("a fresh attachment id was taken"));
        }
        self.schedule_expiry(&record).await?;
        self.note_quota(&record).await?;
        tracing::info!(tenant = %owner.tenant, agent = %owner.id, attachment = %id, size = meta.size, "attachment upload requested");
        Ok(json!({
            "attachment_id": id,
            "upload_url": format!("{}/v1/attachments/{id}/upload?token={token}", self.0.public_url),
            "upload_method": "PUT",
            "upload_headers": { "Content-Type": meta.content_type },
            "expires_in": self.0.config.upload_url_ttl_secs,
            "scan_status": "pending",
        }))
    }

    /// `PUT` to the upload URL: single use, within its expiry, at most the declared size +
    /// 1 %. Returns once the bytes are durable.
    ///
    /// Fails with `404` (unknown id or wrong token, indistinguishable), `409 conflict`
    /// (the URL was used), `410 attachment_expired`, `413 attachment_too_large`, `503`.
    pub async fn upload(&self, id: &str, token: &str, body: Bytes) -> Result<Value, ApiError> {
        let denied = || ApiError::not_found("no upload is waiting at this URL");
        if !attachment::is_valid_id(id) {
            return Err(denied());
        }
        let Some(v) = self.0.store.attachment(id).await.map_err(store_err)? else {
            return Err(denied());
        };
        let mut rec = v.value;
        let presented = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let Some(expected) = rec.upload_token_sha256.clone() else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this upload URL was used already (single use)",
            ));
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            presented.as_bytes(),
        )) {
            return Err(denied());
        }
        let now = now_ms();
        if now >= rec.upload_expires_at {
            return Err(ApiError::new(
                ErrorCode::AttachmentExpired,
                "this upload URL expired; request a new upload",
            ));
        }
        let limit = rec.size + rec.size / 100;
        if body.len() as u64 > limit {
            return Err(ApiError::new(
                ErrorCode::AttachmentTooLarge,
                "the body is larger than the declared size",
            ));
        }
        // Claim the URL before writing: a second PUT, even a concurrent one, is refused.
        rec.upload_token_sha256 = None;
        if !self
            .0
            .store
            .attachment_replace(&rec, v.revision)
            .await
            .map_err(store_err)?
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this upload URL was used already (single use)",
            ));
        }
        let digest = Digest::of(&body);
        let name = blob_name(&digest, id);
        let size = body.len() as u64;
        self.0.blobs.put(&name, body).await.map_err(store_err)?;
        rec.received = Some(ReceivedBlob {
            blob: name,
            size,
            digest: digest.wire(),
            at: now_ms(),
        });
        self.replace_latest(rec, |cur, new| {
            cur.received = new.received.clone();
        })
        .await?;
        Ok(json!({ "attachment_id": id, "size": size }))
    }

    /// `POST /v1/attachments/{id}/confirm`: starts the scan and waits for it up to
    /// `confirm_wait_ms`; answers `attachment_id` and the `scan_status` reached. A second
    /// confirm answers the current status.
    ///
    /// Fails with `404 attachment_not_found` (also for another agent's attachment), `409
    /// conflict` when nothing was uploaded yet, `503`.
    pub async fn confirm(&self, caller: &AgentRecord, id: &str) -> Result<Value, ApiError> {
        let v = self.owned(caller, id).await?;
        let mut rec = v.value;
        if rec.received.is_none() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "nothing was uploaded for this attachment yet: PUT the file to its upload_url first",
            ));
        }
        if rec.confirmed_at.is_none() {
            let now = now_ms();
            rec.confirmed_at = Some(now);
            rec.expires_at = now + UNREFERENCED_MS;
            if !self
                .0
                .store
                .attachment_replace(&rec, v.revision)
                .await
                .map_err(store_err)?
            {
                // Another confirm won; it runs the scan.
                return self.status_body(caller, id).await;
            }
            self.schedule_expiry(&rec).await?;
            self.scan_and_wait(rec).await?;
        }
        let v = self.owned(caller, id).await?;
        Ok(json!({ "attachment_id": id, "scan_status": v.value.scan_status }))
    }

    /// Starts the scan of a confirmed attachment and waits for it up to `confirm_wait_ms`
    /// (past that it goes on, and the status says `pending` until it ends).
    async fn scan_and_wait(&self, rec: AttachmentRecord) -> Result<(), ApiError> {
        let svc = self.clone();
        let scan = tokio::spawn(async move { svc.scan(rec).await });
        let wait = Duration::from_millis(self.0.config.confirm_wait_ms);
        match tokio::time::timeout(wait, scan).await {
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(internal(format!("scan task: {e}"))),
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        }
    }

    /// Runs the pipeline over the received bytes and records the outcome (once: the status
    /// only moves forward). A rejected attachment's bytes are deleted at once.
    async fn scan(&self, rec: AttachmentRecord) -> Result<(), ApiError> {
        let Some(received) = rec.received.clone() else {
            return Ok(());
        };
        let bytes = self
            .0
            .blobs
            .get(&received.blob)
            .await
            .map_err(store_err)?
            .unwrap_or_default();
        let input = ScanInput {
            content_type: &rec.content_type,
            size: rec.size,
            digest: &rec.digest,
            filename: &rec.filename,
            bytes,
        };
        let outcome = self.0.scanner.run(&input).await;
        let scanned = self
            .replace_latest(rec.clone(), |cur, _| {
                let current = ScanStatus::parse(&cur.scan_status).unwrap_or(ScanStatus::Pending);
                if current.may_become(outcome.status) {
                    cur.scan_status = outcome.status.as_str().to_owned();
                    cur.scan_flags = outcome.flags.clone();
                    cur.scanned_at = Some(now_ms());
                }
            })
            .await?;
        tracing::info!(tenant = %rec.tenant, agent = %rec.owner_id, attachment = %rec.id, status = %scanned.scan_status, flags = ?scanned.scan_flags, "attachment scanned");
        self.schedule_callback(&scanned).await;
        if scanned.scan_status == ScanStatus::Rejected.as_str() {
            self.0
                .blobs
                .delete(&received.blob)
                .await
                .map_err(store_err)?;
            // Its bytes are gone: it no longer counts against the quotas.
            self.release_quota(&scanned).await.map_err(store_err)?;
        }
        Ok(())
    }

    /// Schedules the `scan_callback_url` POST of a scanned attachment (delivery runs it,
    /// with retries; one job per attachment, so a second scan's schedule replaces the
    /// first's). A failure is logged: polling still tells the status.
    async fn schedule_callback(&self, rec: &AttachmentRecord) {
        let Some(url) = rec.scan_callback_url.clone() else {
            return;
        };
        if rec.scan_status == ScanStatus::Pending.as_str() {
            return;
        }
        let data = amp_proto::relay::ScanCallbackJob {
            agent_id: rec.owner_id.clone(),
            attachment_id: rec.id.clone(),
            scan_status: rec.scan_status.clone(),
            url,
        };
        let Ok(data) = serde_json::to_string(&data) else {
            return;
        };
        let job = amp_store::Job {
            id: amp_proto::relay::ScanCallbackJob::job_id(&rec.id),
            kind: amp_proto::relay::ScanCallbackJob::KIND.to_owned(),
            due_at: now_ms(),
            attempt: 0,
            data,
        };
        if let Err(e) = self.0.store.schedule(job).await {
            tracing::warn!(error = %e, attachment = %rec.id, "scan callback not scheduled; the status can still be polled");
        }
    }

    /// `GET /v1/attachments/{id}`: the metadata, with `url` once it may be routed.
    ///
    /// Fails with `404 attachment_not_found` unless the caller uploaded it or is the
    /// recipient of the message that references it.
    pub async fn status_body(&self, caller: &AgentRecord, id: &str) -> Result<Value, ApiError> {
        let rec = self.readable(caller, id).await?;
        let mut body = json!({
            "attachment_id": rec.id,
            "filename": rec.filename,
            "content_type": rec.content_type,
            "size": rec.size,
            "digest": rec.digest,
            "scan_status": rec.scan_status,
        });
        if let Some(url) = self.signed_url(&rec) {
            body["url"] = Value::from(url.0);
            if let Some(t) = rfc3339(url.1) {
                body["expires_at"] = Value::from(t);
            }
        }
        if let Some(t) = rec.received.as_ref().and_then(|r| rfc3339(r.at)) {
            body["uploaded_at"] = Value::from(t);
        }
        Ok(body)
    }

    /// `GET /v1/attachments/{id}/download`: the record and its bytes, for the uploader or
    /// the recipient.
    ///
    /// Fails with `404 attachment_not_found`, `409 attachment_pending`, `422
    /// attachment_rejected`, `410 attachment_expired` (bytes gone), `503`.
    pub async fn download(
        &self,
        caller: &AgentRecord,
        id: &str,
    ) -> Result<(AttachmentRecord, Bytes), ApiError> {
        let rec = self.readable(caller, id).await?;
        self.bytes_of(rec).await
    }

    /// The signed download URL: no account needed, only a valid signature within its
    /// expiry (spec 08 "Direct URL").
    ///
    /// Fails with `404` for a bad signature or unknown id (indistinguishable), `410
    /// attachment_expired` past the expiry.
    pub async fn download_signed(
        &self,
        id: &str,
        expires: &str,
        signature: &str,
    ) -> Result<(AttachmentRecord, Bytes), ApiError> {
        if !attachment::is_valid_id(id) {
            return Err(not_found());
        }
        let expires: i64 = expires.parse().map_err(|_| not_found())?;
        if !url::verify(&self.0.url_key, id, expires, signature) {
            return Err(not_found());
        }
        if now_ms() >= expires.saturating_mul(1000) {
            return Err(ApiError::new(
                ErrorCode::AttachmentExpired,
                "this download URL expired",
            ));
        }
        let rec = self
            .0
            .store
            .attachment(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::AttachmentExpired, "this attachment was deleted")
            })?
            .value;
        self.bytes_of(rec).await
    }

    async fn bytes_of(&self, rec: AttachmentRecord) -> Result<(AttachmentRecord, Bytes), ApiError> {
        let status = ScanStatus::parse(&rec.scan_status).unwrap_or(ScanStatus::Pending);
        match status {
            ScanStatus::Rejected => {
                return Err(ApiError::new(
                    ErrorCode::AttachmentRejected,
                    "this attachment failed its security scan",
                ));
            }
            s if !s.routable() => {
                return Err(ApiError::new(
                    ErrorCode::AttachmentPending,
                    "this attachment's scan is not complete",
                ));
            }
            _ => {}
        }
        let Some(received) = rec.received.clone() else {
            return Err(internal("a scanned attachment without bytes"));
        };
        let Some(bytes) = self.0.blobs.get(&received.blob).await.map_err(store_err)? else {
            return Err(ApiError::new(
                ErrorCode::AttachmentExpired,
                "this attachment's content was deleted",
            ));
        };
        // Content-addressed: the bytes must still hash to their name.
        if Digest::of(&bytes).wire() != received.digest {
            return Err(internal(format!(
                "attachment {} blob does not match its digest",
                rec.id
            )));
        }
        Ok((rec, bytes))
    }

    /// Checks a message's `provider` attachments before it is handed to the router (spec
    /// 05 "Messages with Attachments") and binds each to this message (spec 04: one message
    /// per attachment; a retry of the same message, same `fingerprint`, is not a second
    /// use). Returns the route answer's warnings (`attachment_suspicious`).
    ///
    /// Fails with `404 attachment_not_found` (unknown, or not the sender's), `409
    /// attachment_pending`, `422 attachment_rejected`, `400 invalid_field` (digest or size
    /// differ from the upload), `409 attachment_already_used`, `410 attachment_expired`,
    /// `503`.
    pub async fn claim_for_message(
        &self,
        sender: &AgentRecord,
        fingerprint: &str,
        recipient: &str,
        list: &[PayloadAttachment],
    ) -> Result<Vec<&'static str>, ApiError> {
        let mut warnings = Vec::new();
        for (i, a) in list.iter().enumerate() {
            let PayloadAttachment::Provider {
                id,
                size,
                digest,
                scan_status,
                ..
            } = a
            else {
                continue;
            };
            let field = format!("payload.attachments[{i}]");
            for attempt in 0.. {
                let v = self
                    .owned(sender, id)
                    .await
                    .map_err(|e| e.with_field(format!("{field}.id")))?;
                let rec = v.value;
                check_routable(&rec, &field)?;
                if !scan_status.routable() {
                    return Err(match scan_status {
                        ScanStatus::Rejected => ApiError::new(
                            ErrorCode::AttachmentRejected,
                            "the payload declares this attachment rejected",
                        ),
                        ScanStatus::Pending => ApiError::new(
                            ErrorCode::AttachmentPending,
                            "the payload declares this attachment pending: build it from the final status",
                        ),
                        _ => ApiError::invalid(
                            &format!("{field}.scan_status"),
                            "scan_status must be clean, basic_clean or suspicious in a routed message",
                        ),
                    }
                    .with_field(format!("{field}.scan_status")));
                }
                if digest.wire() != rec.digest || *size != rec.size {
                    return Err(ApiError::invalid(
                        &field,
                        "digest and size must be those of the upload",
                    ));
                }
                if rec.scan_status == ScanStatus::Suspicious.as_str()
                    && !warnings.contains(&"attachment_suspicious")
                {
                    warnings.push("attachment_suspicious");
                }
                match &rec.used_by {
                    Some(u) if u.fingerprint == fingerprint => break,
                    Some(_) => {
                        return Err(ApiError::new(
                            ErrorCode::AttachmentAlreadyUsed,
                            "this attachment is referenced by another routed message",
                        )
                        .with_field(format!("{field}.id")));
                    }
                    None => {}
                }
                let now = now_ms();
                let confirmed = rec.confirmed_at.unwrap_or(rec.created_at);
                if now > confirmed + UNREFERENCED_MS {
                    return Err(ApiError::new(
                        ErrorCode::AttachmentExpired,
                        "attachments must be routed within 2 hours of their upload confirmation",
                    )
                    .with_field(format!("{field}.id")));
                }
                let mut bound = rec.clone();
                bound.used_by = Some(AttachmentUse {
                    fingerprint: fingerprint.to_owned(),
                    recipient: recipient.to_ascii_lowercase(),
                    routed_at: now,
                });
                bound.expires_at = confirmed + UNREFERENCED_MS + TTL_MS;
                if self
                    .0
                    .store
                    .attachment_replace(&bound, v.revision)
                    .await
                    .map_err(store_err)?
                {
                    self.schedule_expiry(&bound).await?;
                    break;
                }
                if attempt >= 8 {
                    return Err(crate::unavailable("attachment binding kept conflicting"));
                }
            }
        }
        Ok(warnings)
    }

    /// Deletes up to `limit` attachments whose time is up (records and bytes); returns how
    /// many. Safe to run in every process at once: each deletion is claimed first.
    ///
    /// Fails when the store is unavailable.
    pub async fn sweep(&self, limit: usize) -> Result<usize, amp_store::Error> {
        let now = now_ms();
        let mut done = 0;
        for job in self.0.store.due_jobs(JOB_KIND, now, limit).await? {
            if !self.0.store.claim(&job, now + 60_000).await? {
                continue;
            }
            let id = job.data.as_str();
            match self.0.store.attachment(id).await? {
                Some(v) if v.value.expires_at > now => {
                    // Extended since (confirmed or routed): run again then.
                    self.0
                        .store
                        .schedule(Job {
                            due_at: v.value.expires_at,
                            ..job.clone()
                        })
                        .await?;
                    continue;
                }
                Some(v) => {
                    if let Some(r) = &v.value.received {
                        self.0.blobs.delete(&r.blob).await?;
                    }
                    self.0.store.attachment_delete(id).await?;
                    self.release_quota(&v.value).await?;
                    tracing::info!(tenant = %v.value.tenant, attachment = %id, routed = v.value.used_by.is_some(), "attachment deleted at its expiry");
                    done += 1;
                }
                None => {}
            }
            self.0.store.complete(&job.id).await?;
        }
        Ok(done)
    }

    /// Runs [`sweep`](Self::sweep) every `every` until `shutdown`.
    pub async fn run_sweeper(self, every: Duration, shutdown: amp_runtime::Shutdown) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            match self.sweep(1000).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "attachment sweep"),
                Err(e) => tracing::warn!(error = %e, "attachment sweep failed"),
            }
        }
    }

    async fn schedule_expiry(&self, rec: &AttachmentRecord) -> Result<(), ApiError> {
        self.0
            .store
            .schedule(Job {
                id: format!("att:{}", rec.id),
                kind: JOB_KIND.to_owned(),
                due_at: rec.expires_at,
                attempt: 0,
                data: rec.id.clone(),
            })
            .await
            .map_err(store_err)
    }

    /// The signed URL and its expiry (unix ms), once the attachment may be routed.
    fn signed_url(&self, rec: &AttachmentRecord) -> Option<(String, Millis)> {
        let status = ScanStatus::parse(&rec.scan_status)?;
        let confirmed = rec.confirmed_at?;
        if !status.routable() {
            return None;
        }
        let expires_ms = confirmed + UNREFERENCED_MS + TTL_MS;
        let expires = expires_ms / 1000;
        let sig = url::sign(&self.0.url_key, &rec.id, expires);
        Some((
            format!(
                "{}/v1/attachments/{}/content?expires={expires}&signature={sig}",
                self.0.public_url, rec.id
            ),
            expires * 1000,
        ))
    }

    /// The attachment, if `caller` uploaded it.
    async fn owned(
        &self,
        caller: &AgentRecord,
        id: &str,
    ) -> Result<amp_store::Versioned<AttachmentRecord>, ApiError> {
        if !attachment::is_valid_id(id) {
            return Err(not_found());
        }
        match self.0.store.attachment(id).await.map_err(store_err)? {
            Some(v) if v.value.owner_id == caller.id => Ok(v),
            _ => Err(not_found()),
        }
    }

    /// The attachment, if `caller` uploaded it or received the message that references it.
    async fn readable(&self, caller: &AgentRecord, id: &str) -> Result<AttachmentRecord, ApiError> {
        if !attachment::is_valid_id(id) {
            return Err(not_found());
        }
        match self.0.store.attachment(id).await.map_err(store_err)? {
            Some(v)
                if v.value.owner_id == caller.id
                    || v.value
                        .used_by
                        .as_ref()
                        .is_some_and(|u| u.recipient == caller.address) =>
            {
                Ok(v.value)
            }
            _ => Err(not_found()),
        }
    }

    /// Applies `change` to the latest revision until the write lands; returns the result.
    async fn replace_latest(
        &self,
        new: AttachmentRecord,
        change: impl Fn(&mut AttachmentRecord, &AttachmentRecord),
    ) -> Result<AttachmentRecord, ApiError> {
        for _ in 0..16 {
            let Some(v) = self.0.store.attachment(&new.id).await.map_err(store_err)? else {
                return Err(not_found());
            };
            let mut cur = v.value;
            change(&mut cur, &new);
            if self
                .0
                .store
                .attachment_replace(&cur, v.revision)
                .await
                .map_err(store_err)?
            {
                return Ok(cur);
            }
        }
        Err(crate::unavailable("attachment update kept conflicting"))
    }
}

/// The record's state allows routing.
fn check_routable(rec: &AttachmentRecord, field: &str) -> Result<(), ApiError> {
    let status = ScanStatus::parse(&rec.scan_status).unwrap_or(ScanStatus::Pending);
    if status == ScanStatus::Rejected {
        return Err(ApiError::new(
            ErrorCode::AttachmentRejected,
            "this attachment failed its security scan",
        )
        .with_field(format!("{field}.id")));
    }
    if !status.routable() || rec.confirmed_at.is_none() {
        return Err(ApiError::new(
            ErrorCode::AttachmentPending,
            "this attachment's scan is not complete",
        )
        .with_field(format!("{field}.id")));
    }
    Ok(())
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_store::blob::FsBlobs;
    use amp_store::redb::{RedbConfig, RedbStore};

    async fn service(dir: &std::path::Path) -> (AttachmentService, Store, Blobs) {
        let store = Store::new(RedbStore::open(&RedbConfig::in_dir(dir)).expect("redb"));
        let blobs = Blobs::new(FsBlobs::open(&dir.join("blobs")).expect("blobs"));
        let svc = AttachmentService::new(
            store.clone(),
            blobs.clone(),
            AttachmentsConfig::default(),
            b"pepper",
            "http://127.0.0.1:1",
        );
        (svc, store, blobs)
    }

    /// Uploads and confirms `bytes`; returns the id.
    async fn uploaded(svc: &AttachmentService, owner: &AgentRecord, bytes: &[u8]) -> String {
        let t = svc
            .init(
                owner,
                UploadRequest {
                    filename: Some("a.txt".into()),
                    content_type: Some("text/plain".into()),
                    size: Some(json!(bytes.len())),
                    digest: Some(Digest::of(bytes).wire()),
                    scan_callback_url: None,
                },
            )
            .await
            .expect("init");
        let id = t["attachment_id"].as_str().expect("id").to_owned();
        let url = t["upload_url"].as_str().expect("url");
        let token = url.split("token=").nth(1).expect("token");
        svc.upload(&id, token, Bytes::copy_from_slice(bytes))
            .await
            .expect("upload");
        let c = svc.confirm(owner, &id).await.expect("confirm");
        assert_eq!(c["scan_status"], "basic_clean");
        id
    }

    /// Moves an attachment's expiry (and its job) to `at`, as time passing would.
    async fn age(store: &Store, svc: &AttachmentService, id: &str, at: Millis) {
        let v = store.attachment(id).await.expect("read").expect("exists");
        let mut rec = v.value;
        rec.expires_at = at;
        assert!(
            store
                .attachment_replace(&rec, v.revision)
                .await
                .expect("age")
        );
        svc.schedule_expiry(&rec).await.expect("job");
    }

    #[tokio::test]
    async fn spec_next_unreferenced_uploads_are_deleted_within_two_hours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, store, blobs) = service(dir.path()).await;
        let alice = amp_store::testing::agent("t", "alice", now_ms());
        let id = uploaded(&svc, &alice, b"orphan").await;
        let rec = store
            .attachment(&id)
            .await
            .expect("read")
            .expect("exists")
            .value;
        let confirmed = rec.confirmed_at.expect("confirmed");
        assert_eq!(
            rec.expires_at,
            confirmed + UNREFERENCED_MS,
            "the spec's 2 h bound"
        );
        let blob = rec.received.expect("received").blob;
        assert!(blobs.get(&blob).await.expect("get").is_some());
        // Before its time, the sweep leaves it.
        assert_eq!(svc.sweep(100).await.expect("sweep"), 0);
        assert!(store.attachment(&id).await.expect("read").is_some());

        // A routed one lives on past the 2 h.
        let kept = uploaded(&svc, &alice, b"kept").await;
        let list = vec![PayloadAttachment::Provider {
            id: kept.clone(),
            size: 4,
            digest: Digest::of(b"kept"),
            scan_status: ScanStatus::BasicClean,
            url: "u".into(),
        }];
        svc.claim_for_message(&alice, "fp", "bob@t.example.test", &list)
            .await
            .expect("claim");
        let routed = store
            .attachment(&kept)
            .await
            .expect("read")
            .expect("exists")
            .value;
        assert!(
            routed.expires_at >= now_ms() + TTL_MS,
            "7 days after routing"
        );

        // Time passes for the orphan: swept, record and bytes.
        age(&store, &svc, &id, now_ms() - 1).await;
        assert_eq!(svc.sweep(100).await.expect("sweep"), 1);
        assert!(store.attachment(&id).await.expect("read").is_none());
        assert!(blobs.get(&blob).await.expect("get").is_none());
        assert!(store.attachment(&kept).await.expect("read").is_some());
        // A job that fires early (the record was extended since) is moved, not run.
        svc.schedule_expiry(&AttachmentRecord {
            expires_at: now_ms() - 1,
            ..routed.clone()
        })
        .await
        .expect("early job");
        assert_eq!(svc.sweep(100).await.expect("sweep"), 0);
        assert!(store.attachment(&kept).await.expect("read").is_some());
        let due = store
            .due_jobs(JOB_KIND, routed.expires_at, 10)
            .await
            .expect("jobs");
        assert!(
            due.iter().any(|j| j.data == kept),
            "rescheduled at its expiry"
        );
    }
}
