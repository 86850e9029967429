//! Rendering a pickup page of 100 stored messages (about 1 KiB of payload each): the spliced
//! writer the provider uses against parsing each stored message into its type and serialising
//! the serde `Item` (what pickup did before). Run with `cargo bench -p amp-messaging`.

use std::hint::black_box;

use amp_messaging::render::{Item, write_item};
use amp_proto::relay::StoredMessage;
use amp_store::MailboxEntry;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A stored message as the router writes it: the envelope, a ~1 KiB payload, the sender's key.
fn stored(i: u64) -> String {
    let message = "Please review the OAuth changes in lib/auth.ts. ".repeat(20);
    let text = format!(
        r#"{{"envelope":{{"version":"amp/0.1","id":"msg_1700000000123_{i:016x}","from":"alice@acme.crabmail.ai","to":"bob@acme.crabmail.ai","subject":"Code review request","priority":"normal","timestamp":"2023-11-14T22:13:20.123Z","signature":"c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl","in_reply_to":null,"thread_id":"msg_1700000000123_{i:016x}"}},"payload":{{"type":"request","message":"{message}","context":{{"pr":42,"score":0.75}}}},"sender_public_key":"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"}}"#
    );
    let typed: StoredMessage = serde_json::from_str(&text).expect("a stored message");
    serde_json::to_string(&typed).expect("serialises")
}

fn page() -> Vec<MailboxEntry> {
    (1..=100)
        .map(|i| MailboxEntry {
            seq: i,
            message_id: format!("msg_1700000000123_{i:016x}"),
            sender: "alice@acme.crabmail.ai".into(),
            data: stored(i),
            queued_at: 1_700_000_000_123 + i as i64,
            expires_at: 1_700_604_800_123 + i as i64,
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let entries = page();
    let mut g = c.benchmark_group("render_page_100");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_serialise_item", |b| {
        b.iter(|| {
            let parsed: Vec<StoredMessage> = entries
                .iter()
                .map(|e| serde_json::from_str(&e.data).expect("parses"))
                .collect();
            let items: Vec<Item<'_>> = entries
                .iter()
                .zip(&parsed)
                .map(|(e, m)| Item::new(e, m, None))
                .collect();
            black_box(serde_json::to_vec(&items).expect("serialises"))
        });
    });
    g.bench_function("write_item_spliced", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(entries.iter().map(|e| e.data.len() + 200).sum());
            out.push(b'[');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_item(&mut out, e, None).expect("writes");
            }
            out.push(b']');
            black_box(out)
        });
    });
    g.finish();
}

criterion_group!(render, benches);
criterion_main!(render);
