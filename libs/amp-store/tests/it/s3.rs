//! The S3 blob backend against a real S3-compatible server (`s3s-fs` on 127.0.0.1, SigV4
//! credentials required): the blob conformance checks, a second client on the same bucket,
//! objects where the configuration says, and wrong credentials or an unreachable server as
//! `Unavailable`, within seconds.

use amp_store::blob::Blobs;
use amp_store::s3::{S3Blobs, S3BlobsConfig};
use amp_testkit::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
use bytes::Bytes;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn config(server: &S3Server, bucket: &str, secret_file: &std::path::Path) -> S3BlobsConfig {
    S3BlobsConfig {
        bucket: bucket.to_owned(),
        prefix: "amp/attachments".to_owned(),
        endpoint: Some(server.endpoint()),
        region: "us-east-1".to_owned(),
        path_style: true,
        allow_http: true,
        access_key_id: Some(S3_ACCESS_KEY.to_owned()),
        secret_access_key_file: Some(secret_file.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_s3_blobs_on_a_real_s3_server() {
    let Some(server) = S3Server::start(&["amp-test"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s3-secret");
    // A trailing newline, as a mounted secret often has.
    std::fs::write(&secret, format!("{S3_SECRET_KEY}\n")).expect("secret file");
    let cfg = config(&server, "amp-test", &secret);
    let blobs = Blobs::new(S3Blobs::open(&cfg).expect("open"));
    amp_store::blob::testing::run_all(&blobs).await;

    // Another client (another replica) reads what this one wrote, under the prefix.
    let name = format!("{}.att_1_0000000000000001", "ef".repeat(32));
    blobs
        .put(&name, Bytes::from_static(b"shared bytes"))
        .await
        .expect("put");
    let other = Blobs::new(S3Blobs::open(&cfg).expect("open again"));
    assert_eq!(
        other.get(&name).await.expect("get").as_deref(),
        Some(&b"shared bytes"[..])
    );
    let on_disk = server
        .bucket_dir("amp-test")
        .join("amp/attachments")
        .join(&name);
    assert_eq!(
        std::fs::read(&on_disk).expect("the object is in the bucket under the prefix"),
        b"shared bytes"
    );
    other.delete(&name).await.expect("delete");
    assert!(!on_disk.exists(), "deleted on the server");

    // A wrong secret is refused by the server: unavailable, never a silent miss.
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret").expect("secret file");
    let bad = Blobs::new(S3Blobs::open(&config(&server, "amp-test", &wrong)).expect("open"));
    assert!(
        matches!(bad.get(&name).await, Err(amp_store::Error::Unavailable(_))),
        "wrong credentials"
    );
    // A server that is not there: unavailable, and soon (bounded retries).
    let down = S3BlobsConfig {
        endpoint: Some(format!("http://127.0.0.1:{}", free_port())),
        ..cfg.clone()
    };
    let down = Blobs::new(S3Blobs::open(&down).expect("open"));
    let started = std::time::Instant::now();
    assert!(
        matches!(down.get(&name).await, Err(amp_store::Error::Unavailable(_))),
        "no server"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn spec_next_s3_blobs_config_is_checked() {
    let ok = S3BlobsConfig {
        bucket: "b".into(),
        ..S3BlobsConfig::default()
    };
    assert!(ok.validate().is_ok());
    for (bad, why) in [
        (S3BlobsConfig::default(), "bucket is required"),
        (
            S3BlobsConfig {
                endpoint: Some("http://minio:9000".into()),
                ..ok.clone()
            },
            "allow_http",
        ),
        (
            S3BlobsConfig {
                access_key_id: Some("id".into()),
                ..ok.clone()
            },
            "go together",
        ),
        (
            S3BlobsConfig {
                prefix: "/x".into(),
                ..ok.clone()
            },
            "prefix",
        ),
    ] {
        let e = bad.validate().expect_err(why);
        assert!(e.contains(why), "{e}");
    }
}
