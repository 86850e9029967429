//! [`Attachments`] on the embedded store: one row per attachment, its first 8 bytes the
//! revision (big-endian), the rest the record's JSON. Compare-and-set is a read and a write
//! in one write transaction.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::{ATTACHMENTS, RedbStore, from_json, st, to_json};
use crate::*;

fn encode(revision: u64, record: &AttachmentRecord) -> Result<Vec<u8>> {
    let mut out = revision.to_be_bytes().to_vec();
    out.extend_from_slice(&to_json(record)?);
    Ok(out)
}

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
impl Attachments for RedbStore {
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool> {
        let row = encode(1, record)?;
        let id = record.id.clone();
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(ATTACHMENTS).map_err(st)?;
                if t.get(id.as_str()).map_err(st)?.is_some() {
                    return Ok(false);
                }
                t.insert(id.as_str(), row.as_slice()).map_err(st)?;
                Ok(true)
            })
            .await
    }

    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>> {
        let txn = self.read()?;
        let t = txn.open_table(ATTACHMENTS).map_err(st)?;
        let row = t.get(id).map_err(st)?;
        row.map(|v| decode(v.value())).transpose()
    }

    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool> {
        let row = encode(revision + 1, record)?;
        let id = record.id.clone();
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(ATTACHMENTS).map_err(st)?;
                let current = match t.get(id.as_str()).map_err(st)? {
                    Some(v) => Some(decode(v.value())?.revision),
                    None => None,
                };
                if current != Some(revision) {
                    return Ok(false);
                }
                t.insert(id.as_str(), row.as_slice()).map_err(st)?;
                Ok(true)
            })
            .await
    }

    async fn attachment_delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |txn| {
                txn.open_table(ATTACHMENTS)
                    .map_err(st)?
                    .remove(id.as_str())
                    .map_err(st)?;
                Ok(())
            })
            .await
    }
}
