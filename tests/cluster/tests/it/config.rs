//! One configuration file for every binary (one ConfigMap in Kubernetes): each binary reads
//! its own sections and accepts the others' whole; a misspelt key fails in the binary that
//! owns it, naming the key, and a misspelt section fails everywhere; the error is one line,
//! never a backtrace. Checked with `--migrate`, which loads the configuration and exits
//! (the JetStream store has no schema) without needing NATS.

use std::path::Path;
use std::process::Command;

use amp_testkit::cluster::{Kind, binaries};

const ALL: [Kind; 4] = [Kind::Ingest, Kind::Router, Kind::Delivery, Kind::Federation];

/// Every section of every service, as the chart's ConfigMap has them.
const SHARED: &str = r#"
capabilities = ["registration", "relay-queue", "websockets", "webhooks", "federation"]

[server]
domain = "config.test"

[log]
filter = "info"

[nats]
urls = "nats://127.0.0.1:4222"

[store]
backend = "jetstream"

[ingest.registration]
mode = "owner"
open_tenants = ["public"]

[ingest.limits]
mailbox_quota = 500

[ingest.messaging]
outcome_wait_ms = 1500

[router]
workers = 4

[delivery]
resync_secs = 30

[federation]
retry_initial_ms = 500
"#;

/// Runs `kind --config <file> --migrate` with `env`: exit code and stderr.
fn load(kind: Kind, file: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(binaries().join(kind.name()))
        .arg("--config")
        .arg(file)
        .arg("--migrate")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), text).expect("write config");
    file
}

#[test]
fn config_one_file_for_every_binary() {
    let file = write(SHARED);
    // Environment variables for other services' sections are ignored the same way.
    let env = [
        ("AMP__INGEST__LIMITS__MESSAGES_PER_MINUTE", "120"),
        ("AMP__DELIVERY__RESYNC_SECS", "10"),
        ("AMP__ROUTER__WORKERS", "2"),
    ];
    for kind in ALL {
        let (code, stderr) = load(kind, file.path(), &env);
        assert_eq!(code, 0, "{} refused the shared file: {stderr}", kind.name());
    }
}

#[test]
fn config_misspelt_key_fails_in_its_owner_only_in_one_line() {
    let file_key = write(&SHARED.replace("workers = 4", "workerz = 4"));
    for kind in ALL {
        let (code, stderr) = load(kind, file_key.path(), &[]);
        if kind == Kind::Router {
            assert_eq!(code, 2, "{stderr}");
            assert!(stderr.contains("workerz"), "the key is named: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
            assert!(!stderr.contains("backtrace"), "{stderr}");
        } else {
            assert_eq!(code, 0, "{} read another's section: {stderr}", kind.name());
        }
    }
    // A misspelt variable in ingest's section: ingest fails, naming the variable.
    for kind in ALL {
        let (code, stderr) = load(
            kind,
            write(SHARED).path(),
            &[("AMP__INGEST__LIMITS__MAILBOX_QUOTAA", "5")],
        );
        if kind == Kind::Ingest {
            assert_eq!(code, 2, "{stderr}");
            assert!(stderr.to_lowercase().contains("mailbox_quotaa"), "{stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        } else {
            assert_eq!(code, 0, "{}: {stderr}", kind.name());
        }
    }
}

#[test]
fn config_misspelt_section_fails_everywhere() {
    let file = write(&format!("{SHARED}\n[routr]\nworkers = 2\n"));
    for kind in ALL {
        let (code, stderr) = load(kind, file.path(), &[]);
        assert_eq!(code, 2, "{}: {stderr}", kind.name());
        assert!(stderr.contains("routr"), "{}: {stderr}", kind.name());
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
}
