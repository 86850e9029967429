//! [`Attachments`] on the CQL store: the `attachments` table (migration 4), one row per
//! attachment; creation is `INSERT … IF NOT EXISTS` and every change `UPDATE … IF revision =
//! ?`, lightweight transactions, so concurrent writers agree.

use async_trait::async_trait;

use super::CqlStore;
use super::conn::corrupt;
use crate::*;

fn to_json(record: &AttachmentRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::Corrupt(e.to_string()))
}

#[async_trait]
impl Attachments for CqlStore {
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool> {
        let lwt = self
            .conn
            .lwt(
                "create an attachment",
                &self.conn.st.att_create,
                (record.id.as_str(), to_json(record)?),
            )
            .await?;
        Ok(lwt.applied)
    }

    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>> {
        let rows = self
            .conn
            .query("read an attachment", &self.conn.st.att_get, (id,))
            .await?;
        let Some((revision, record)) = rows
            .maybe_first_row::<(Option<i64>, Option<Vec<u8>>)>()
            .map_err(corrupt)?
        else {
            return Ok(None);
        };
        let (Some(revision), Some(record)) = (revision, record) else {
            return Err(Error::Corrupt(format!(
                "attachment {id} without its record"
            )));
        };
        Ok(Some(Versioned {
            revision: revision as u64,
            value: serde_json::from_slice(&record).map_err(corrupt)?,
        }))
    }

    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool> {
        let lwt = self
            .conn
            .lwt(
                "update an attachment",
                &self.conn.st.att_replace,
                (
                    revision as i64 + 1,
                    to_json(record)?,
                    record.id.as_str(),
                    revision as i64,
                ),
            )
            .await?;
        Ok(lwt.applied)
    }

    async fn attachment_delete(&self, id: &str) -> Result<()> {
        self.conn
            .exec("delete an attachment", &self.conn.st.att_delete, (id,))
            .await?;
        Ok(())
    }
}
