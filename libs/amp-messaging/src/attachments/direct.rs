//! Direct upload (spec 08 "Direct Upload (Alternative)"): the metadata and the file in one
//! request, `POST /v1/attachments/upload/direct`, which is upload and confirm in one step.
//! The metadata is checked as for the upload URL flow, then the file against it (exact size,
//! SHA-256 equal to the digest) before anything is stored; the bytes are durable before the
//! answer, and the same scan runs.

use amp_proto::attachment::{self, Digest, ScanStatus};
use amp_proto::{ApiError, Timestamp};
use amp_store::{AgentRecord, AttachmentRecord, ReceivedBlob};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{AttachmentService, UNREFERENCED_MS, UploadRequest, blob_name, now_ms};
use crate::{internal, store_err};

/// Room for the metadata part and the multipart framing on top of the largest file.
const FRAMING: usize = 64 * 1024;

impl AttachmentService {
    /// The largest request body the direct upload endpoint reads.
    pub fn max_direct_body(&self) -> usize {
        self.0.config.max_attachment_size as usize + FRAMING
    }

    /// `POST /v1/attachments/upload/direct`: checks the metadata and the file against it,
    /// stores the bytes durably, records the attachment as confirmed and runs the scan,
    /// waiting for it up to `confirm_wait_ms`. Answers the 201 body: `attachment_id` and the
    /// `scan_status` reached.
    ///
    /// Fails as [`init`](Self::init) does for the metadata, with `400 invalid_field`
    /// (`field: file`) when the file's size or SHA-256 differs from the metadata (nothing is
    /// stored then), the quota errors, or `503`.
    pub async fn direct(
        &self,
        owner: &AgentRecord,
        req: UploadRequest,
        file: Bytes,
    ) -> Result<Value, ApiError> {
        let meta = self.validate(req)?;
        if file.len() as u64 != meta.size {
            return Err(ApiError::invalid(
                "file",
                format!(
                    "the file is {} bytes; the metadata declares {}",
                    file.len(),
                    meta.size
                ),
            ));
        }
        let digest = Digest::of(&file);
        if digest.wire() != meta.digest.wire() {
            return Err(ApiError::invalid(
                "file",
                "the file's SHA-256 does not match the metadata's digest",
            ));
        }
        self.check_quota(owner, meta.size).await?;
        let now = Timestamp::now();
        let id = attachment::generate_id(now);
        let name = blob_name(&digest, &id);
        self.0.blobs.put(&name, file).await.map_err(store_err)?;
        let at = now_ms();
        let record = AttachmentRecord {
            id: id.clone(),
            tenant: owner.tenant.clone(),
            owner_id: owner.id.clone(),
            owner_address: owner.address.clone(),
            filename: meta.filename,
            content_type: meta.content_type,
            size: meta.size,
            digest: digest.wire(),
            created_at: now.unix_millis(),
            // No upload URL: the bytes came with the request.
            upload_token_sha256: None,
            upload_expires_at: now.unix_millis(),
            received: Some(ReceivedBlob {
                blob: name.clone(),
                size: meta.size,
                digest: digest.wire(),
                at,
            }),
            confirmed_at: Some(at),
            scan_status: ScanStatus::Pending.as_str().to_owned(),
            scanned_at: None,
            scan_flags: Vec::new(),
            used_by: None,
            expires_at: at + UNREFERENCED_MS,
            scan_callback_url: meta.scan_callback_url,
        };
        let created = match self.0.store.attachment_create(&record).await {
            Ok(c) => c,
            Err(e) => {
                // Nothing refers to the bytes: do not leave them behind.
                let _ = self.0.blobs.delete(&name).await;
                return Err(store_err(e));
            }
        };
        if !created {
            let _ = self.0.blobs.delete(&name).await;
            return Err(internal("a fresh attachment id was taken"));
        }
        self.schedule_expiry(&record).await?;
        self.note_quota(&record).await?;
        tracing::info!(tenant = %owner.tenant, agent = %owner.id, attachment = %id, size = meta.size, "attachment uploaded directly");
        self.scan_and_wait(record).await?;
        let v = self.owned(owner, &id).await?;
        Ok(json!({ "attachment_id": id, "scan_status": v.value.scan_status }))
    }
}
