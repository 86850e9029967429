//! [`Attachments`] on the `amp_state` bucket: `att.<id>` → the record's JSON; the KV
//! revision is the record's revision, so compare-and-set is one write with
//! `Nats-Expected-Last-Subject-Sequence`.

use async_trait::async_trait;

use super::JetStreamStore;
use super::conn::{Expect, tok};
use crate::*;

fn key(id: &str) -> String {
    format!("att.{}", tok(id))
}

#[async_trait]
impl Attachments for JetStreamStore {
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool> {
        // Revision 0: the subject holds no message at all (never written, or purged).
        let put = self
            .conn
            .kv_put_json(
                &self.state,
                &key(&record.id),
                record,
                Expect::Revision(0),
                None,
            )
            .await?;
        Ok(put.is_ok())
    }

    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>> {
        let (value, revision) = self
            .conn
            .kv_get_json::<AttachmentRecord>(&self.state, &key(id))
            .await?;
        Ok(value.map(|value| Versioned { value, revision }))
    }

    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool> {
        let put = self
            .conn
            .kv_put_json(
                &self.state,
                &key(&record.id),
                record,
                Expect::Revision(revision),
                None,
            )
            .await?;
        Ok(put.is_ok())
    }

    async fn attachment_delete(&self, id: &str) -> Result<()> {
        self.conn.kv_delete(&self.state, &key(id)).await
    }
}
