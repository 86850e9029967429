//! [`Attachments`] on the embedded fjall store: one row per attachment, its first 8 bytes
//! the revision (big-endian), the rest the record's JSON. Compare-and-set is a read and a
//! write in one write transaction.

use async_trait::async_trait;

use super::keys;
use super::{FjallStore, Reads, from_json, to_json};
use crate::*;

/// A row: the revision, then the record's JSON.
fn encode(revision: u64, record: &AttachmentRecord) -> Result<Vec<u8>> {
    let mut out = revision.to_be_bytes().to_vec();
    out.extend_from_slice(&to_json(record)?);
    Ok(out)
}

/// A row read back.
///
/// Fails when it is shorter than its revision or its JSON does not parse.
fn decode(bytes: &[u8]) -> Result<Versioned<AttachmentRecord>> {
    let Some((rev, json)) = bytes.split_first_chunk::<8>() else {
        return Err(Error::Corrupt(
            "attachment row shorter than its revision".into(),
        ));
    };
    Ok(Versioned {
        revision: u64::from_be_bytes(*rev),
        value: from_json(json)?,
    })
}

#[async_trait]
impl Attachments for FjallStore {
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool> {
        let row = encode(1, record)?;
        let key = keys::one(&record.id);
        self.writer
            .write(move |txn| {
                if txn.contains(&txn.ks.attachments, &key)? {
                    return Ok(false);
                }
                txn.insert(&txn.ks.attachments, &key, &row)?;
                Ok(true)
            })
            .await
    }

    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>> {
        let r = self.read()?;
        r.get(&r.ks().attachments, &keys::one(id))?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool> {
        let row = encode(revision.saturating_add(1), record)?;
        let key = keys::one(&record.id);
        self.writer
            .write(move |txn| {
                let current = match txn.get(&txn.ks.attachments, &key)? {
                    Some(v) => Some(decode(&v)?.revision),
                    None => None,
                };
                if current != Some(revision) {
                    return Ok(false);
                }
                txn.insert(&txn.ks.attachments, &key, &row)?;
                Ok(true)
            })
            .await
    }

    async fn attachment_delete(&self, id: &str) -> Result<()> {
        let key = keys::one(id);
        self.writer
            .write(move |txn| txn.remove(&txn.ks.attachments, &key))
            .await
    }
}
