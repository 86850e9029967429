//! The conformance check of risk rows ([`crate::risk`]); [`super::conformance::run_all`]
//! calls it.

use crate::risk::{Risk as _, RiskCounts};
use crate::testing::unique;
use crate::*;

/// spec_next: rows of two processes are summed over the window asked for; other agents'
/// rows (one whose id extends this one's included) and later hours are not; rows before the
/// window are deleted by the read.
pub async fn spec_next_risk_rows_summed_over_the_window(store: &Store) {
    let a = unique("agt_");
    let longer = format!("{a}0");
    let c = |total, flagged| RiskCounts {
        total_messages: total,
        flagged,
        ..RiskCounts::default()
    };
    let h = 490_000;
    store
        .put_risk(&a, h - 30, "r1", &c(100, 100))
        .await
        .expect("old");
    store
        .put_risk(&a, h - 5, "r1", &c(10, 1))
        .await
        .expect("r1");
    store
        .put_risk(&a, h - 5, "r2", &c(20, 2))
        .await
        .expect("r2");
    store.put_risk(&a, h, "r1", &c(1, 0)).await.expect("r1 now");
    // Replaced: a process writes its running total for the hour.
    store
        .put_risk(&a, h, "r1", &c(3, 1))
        .await
        .expect("r1 now again");
    store
        .put_risk(&a, h + 1, "r1", &c(50, 50))
        .await
        .expect("later");
    store
        .put_risk(&longer, h, "r1", &c(7, 7))
        .await
        .expect("other");

    let sum = store.risk_sum(&a, h - 23, h).await.expect("sum");
    assert_eq!(sum, c(33, 4));
    // The row before the window is gone; asking for it again finds nothing.
    let again = store
        .risk_sum(&a, h - 40, h - 24)
        .await
        .expect("old window");
    assert_eq!(again, RiskCounts::default());
    assert_eq!(
        store.risk_sum(&longer, h - 23, h).await.expect("other"),
        c(7, 7)
    );
    assert_eq!(
        store
            .risk_sum(&unique("agt_"), h - 23, h)
            .await
            .expect("none"),
        RiskCounts::default()
    );
    // Rows of the first layout (one collection for every agent) are deleted, not read.
    let legacy = format!("{a}.{h:010}.r1");
    store
        .record_put(
            crate::risk::RISK,
            &legacy,
            br#"{"total_messages":5}"#.to_vec(),
            PutMode::Replace,
        )
        .await
        .expect("legacy row");
    assert_eq!(store.risk_sum(&a, h - 23, h).await.expect("sum"), c(33, 4));
    let mut dropped = 0;
    loop {
        match store.drop_legacy_risk(2).await.expect("drop legacy") {
            0 => break,
            n => dropped += n,
        }
    }
    assert!(dropped >= 1, "the legacy row is deleted");
    assert_eq!(
        store
            .record_get(crate::risk::RISK, &legacy)
            .await
            .expect("get"),
        None
    );
    assert_eq!(store.risk_sum(&a, h - 23, h).await.expect("sum"), c(33, 4));
    // Dropped (its tenant's deletion): its rows only.
    store.drop_risk(&a).await.expect("drop");
    assert_eq!(
        store.risk_sum(&a, h - 100, h + 100).await.expect("gone"),
        RiskCounts::default()
    );
    assert_eq!(
        store.risk_sum(&longer, h - 23, h).await.expect("kept"),
        c(7, 7)
    );
}
