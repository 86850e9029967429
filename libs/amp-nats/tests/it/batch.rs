//! [`BatchPublisher`]: concurrent publishes to one stream share atomic batches, and every
//! caller gets the answer a plain publish would have given it.

use amp_nats::{BatchPublisher, PublishError};
use amp_testkit::NatsServer;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

async fn stream_on(server: &NatsServer, name: &str, atomic: bool) -> async_nats::Client {
    let client = async_nats::connect(server.url()).await.expect("connect");
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{}.>", name.to_lowercase())],
            allow_atomic_publish: atomic,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .expect("create stream");
    client
}

/// The subject stored at `seq` of `stream`.
async fn subject_at(client: &async_nats::Client, stream: &str, seq: u64) -> String {
    let s = jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .expect("stream");
    s.direct_get(seq)
        .await
        .expect("direct get")
        .subject
        .to_string()
}

#[tokio::test]
async fn batch_concurrent_publishes_share_commits_and_get_their_own_sequences() {
    let server = NatsServer::start();
    let client = stream_on(&server, "B1", true).await;
    let publisher = BatchPublisher::new(client.clone(), 64);
    let n = 300u64;
    let all: Vec<_> = (0..n)
        .map(|i| {
            let p = publisher.clone();
            tokio::spawn(async move {
                let subject = format!("b1.m.{i}");
                let r = p
                    .publish("B1", subject.clone(), HeaderMap::new(), Bytes::from("x"))
                    .await;
                (subject, r)
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in all {
        let (subject, r) = task.await.expect("task");
        let published = r.expect("published");
        assert!(!published.duplicate);
        // The sequence each caller got is where its own message is.
        assert_eq!(subject_at(&client, "B1", published.sequence).await, subject);
        seqs.push(published.sequence);
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "each stored once");
    let stats = publisher.stats();
    assert_eq!(stats.messages, n);
    assert!(
        stats.commits < n,
        "{n} concurrent publishes went out in {} commits: nothing was batched",
        stats.commits
    );
}

#[tokio::test]
async fn batch_refusals_and_duplicates_reach_only_their_own_callers() {
    let server = NatsServer::start();
    let client = stream_on(&server, "B2", true).await;
    let publisher = BatchPublisher::new(client.clone(), 64);
    let with = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    };
    let first = publisher
        .publish(
            "B2",
            "b2.first".into(),
            with(&[("Nats-Msg-Id", "dup-1")]),
            Bytes::from("x"),
        )
        .await
        .expect("first");
    // In one burst: plain messages, a repeat of `dup-1`, and an expectation that fails. Any
    // batch holding the last two is refused as a whole by the server.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let p = publisher.clone();
        let headers = match i {
            7 => with(&[("Nats-Msg-Id", "dup-1")]),
            13 => with(&[("Nats-Expected-Last-Subject-Sequence", "999")]),
            _ => HeaderMap::new(),
        };
        tasks.push(tokio::spawn(async move {
            p.publish("B2", format!("b2.m.{i}"), headers, Bytes::from("y"))
                .await
        }));
    }
    let mut stored = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("task");
        match i {
            7 => {
                let p = r.expect("a duplicate is not an error");
                assert!(p.duplicate);
                assert_eq!(p.sequence, first.sequence);
            }
            13 => assert_eq!(r, Err(PublishError::WrongLastSequence)),
            _ => {
                let p = r.expect("stored");
                assert!(!p.duplicate);
                assert_eq!(
                    subject_at(&client, "B2", p.sequence).await,
                    format!("b2.m.{i}")
                );
                stored += 1;
            }
        }
    }
    assert_eq!(stored, 38);
    let info = jetstream::new(client)
        .get_stream("B2")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .messages;
    assert_eq!(info, 39, "the first message and the 38 others, each once");
}

#[tokio::test]
async fn batch_falls_back_to_plain_publishes_where_atomic_batches_are_off() {
    let server = NatsServer::start();
    let client = stream_on(&server, "B3", false).await;
    let publisher = BatchPublisher::new(client.clone(), 64);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let p = publisher.clone();
            tokio::spawn(async move {
                p.publish(
                    "B3",
                    format!("b3.m.{i}"),
                    HeaderMap::new(),
                    Bytes::from("z"),
                )
                .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let p = t
            .await
            .expect("task")
            .expect("stored without atomic batches");
        assert_eq!(
            subject_at(&client, "B3", p.sequence).await,
            format!("b3.m.{i}")
        );
    }
}

#[tokio::test]
async fn batch_of_one_is_a_plain_publish_with_its_errors() {
    let server = NatsServer::start();
    let client = stream_on(&server, "B4", true).await;
    let publisher = BatchPublisher::new(client, 1);
    let err = publisher
        .publish("NONE", "nowhere.x".into(), HeaderMap::new(), Bytes::new())
        .await
        .expect_err("no stream takes the subject");
    assert!(
        matches!(err, PublishError::Other(ref m) if m.contains("no responders")),
        "{err:?}"
    );
    let ok = publisher
        .publish("B4", "b4.x".into(), HeaderMap::new(), Bytes::new())
        .await
        .expect("stored");
    assert_eq!(ok.sequence, 1);
}
