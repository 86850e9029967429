//! [`Receipts`] on the embedded fjall store: rows by (agent, seq), the agent's last seq in
//! `receipt_head`.

use async_trait::async_trait;

use super::keys;
use super::mailboxes::{seq_key, seq_keys_upto};
use super::{FjallStore, Reads, from_json, row, to_json};
use crate::*;

#[async_trait]
impl Receipts for FjallStore {
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                let head = keys::one(&agent_id);
                let seq = match txn.get(&txn.ks.receipt_head, &head)? {
                    Some(v) => keys::u64_value(&v)?,
                    None => 0,
                } + 1;
                txn.insert(&txn.ks.receipt_head, &head, &seq.to_be_bytes())?;
                let r = Receipt { seq, ..receipt };
                txn.insert(&txn.ks.receipts, &seq_key(&agent_id, seq), &to_json(&r)?)?;
                Ok(seq)
            })
            .await
    }

    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>> {
        let r = self.read()?;
        let mut out = Vec::new();
        let start = after.unwrap_or(0).saturating_add(1);
        for g in r.range(
            &r.ks().receipts,
            seq_key(agent_id, start)..=seq_key(agent_id, u64::MAX),
        ) {
            let (_, v) = row(g)?;
            let rec: Receipt = from_json(&v)?;
            if rec.expires_at > now {
                out.push(rec);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                for k in seq_keys_upto(txn, &txn.ks.receipts, &agent_id, upto)? {
                    txn.remove(&txn.ks.receipts, &k)?;
                }
                Ok(())
            })
            .await
    }
}
