//! The example config file and the layering of defaults, file, environment and flags.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use amp_runtime::config::load_with_env;
use amp_runtime::telemetry::LogFormat;
use ampd::Config;
use ampd::config::{ProviderConfig, ServerConfig, StoreConfig};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ampd.example.toml")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

#[test]
fn example_file_parses_and_shows_the_defaults() {
    let cfg: Config =
        load_with_env(Some(&example_path()), "AMP", vars(&[]), &[]).expect("example parses");
    let defaults = Config::default();
    assert_eq!(cfg.server, defaults.server);
    assert_eq!(cfg.log, defaults.log);
    assert_eq!(cfg.store, defaults.store);
    assert_eq!(cfg.provider, defaults.provider);
    assert_eq!(
        format!("{:?}", cfg.ingest),
        format!("{:?}", defaults.ingest)
    );
    assert!(cfg.validate().is_ok());
}

#[test]
fn example_owner_block_parses_once_uncommented() {
    let text = std::fs::read_to_string(example_path()).expect("read example");
    let start = text
        .find("# [[ingest.owners]]")
        .expect("the example has an owners block");
    let uncommented: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let file = toml_file(&format!("{}\n{uncommented}\n", &text[..start]));
    let cfg: Config = load_with_env(Some(file.path()), "AMP", vars(&[]), &[]).expect("parse");
    assert_eq!(cfg.ingest.owners.len(), 1);
    assert_eq!(cfg.ingest.owners[0].tenant, "acme");
    assert_eq!(cfg.ingest.owners[0].agent_limit, 10);
}

#[test]
fn each_layer_overrides_the_previous() {
    let file = toml_file(
        "[server]\nlisten = \"0.0.0.0:7000\"\ndomain = \"file.test\"\ndata_dir = \"/from/file\"\n\
         shutdown_grace_secs = 3\n[store]\nmax_batch = 16\n[log]\nformat = \"json\"\n\
         [ingest.limits]\nmailbox_quota = 7\n",
    );
    let env = vars(&[
        ("AMP__SERVER__DOMAIN", "env.test"),
        ("AMP__SERVER__DATA_DIR", "/from/env"),
        ("AMP__STORE__PURGE_INTERVAL_SECS", "5"),
        ("AMP__INGEST__LIMITS__MAILBOX_QUOTA", "9"),
        ("AMP__PROVIDER__KEY_FILE", "/secrets/key.pem"),
    ]);
    let flags = vars(&[("server.data_dir", "/from/flag"), ("log.format", "pretty")]);

    let defaults: Config = load_with_env(None, "AMP", vars(&[]), &[]).expect("defaults");
    assert_eq!(defaults.server, ServerConfig::default());
    assert_eq!(defaults.store, StoreConfig::default());
    assert_eq!(defaults.provider, ProviderConfig::default());
    assert_eq!(defaults.server.domain, "amp.test");
    assert_eq!(
        defaults.key_file(),
        Path::new("./amp-data").join("provider-key.pem")
    );

    let from_file: Config = load_with_env(Some(file.path()), "AMP", vars(&[]), &[]).expect("file");
    assert_eq!(
        from_file.server.listen,
        "0.0.0.0:7000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(from_file.server.domain, "file.test");
    assert_eq!(from_file.server.shutdown_grace_secs, 3);
    assert_eq!(from_file.server.body_limit_bytes, 532_480, "default kept");
    assert_eq!(from_file.store.max_batch, 16);
    assert_eq!(from_file.log.format, LogFormat::Json);
    assert_eq!(from_file.ingest.limits.mailbox_quota, 7);

    let from_env: Config = load_with_env(Some(file.path()), "AMP", env.clone(), &[]).expect("env");
    assert_eq!(from_env.server.domain, "env.test");
    assert_eq!(from_env.server.data_dir, PathBuf::from("/from/env"));
    assert_eq!(from_env.server.shutdown_grace_secs, 3, "file kept");
    assert_eq!(from_env.store.purge_interval_secs, 5);
    assert_eq!(from_env.ingest.limits.mailbox_quota, 9);
    assert_eq!(from_env.key_file(), PathBuf::from("/secrets/key.pem"));
    assert_eq!(
        from_env.pepper_file(),
        PathBuf::from("/from/env/key-pepper")
    );

    let from_flags: Config = load_with_env(Some(file.path()), "AMP", env, &flags).expect("flags");
    assert_eq!(from_flags.server.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(from_flags.server.domain, "env.test", "env kept");
    assert_eq!(from_flags.log.format, LogFormat::Pretty);
}

#[test]
fn unknown_or_bad_keys_fail_loudly() {
    let file = toml_file("[server]\nlistn = \"127.0.0.1:1\"\n");
    let err = load_with_env::<Config>(Some(file.path()), "AMP", vars(&[]), &[])
        .expect_err("unknown key in file");
    assert!(err.to_string().contains("listn"), "{err}");

    let err = load_with_env::<Config>(None, "AMP", vars(&[("AMP__STORE__MAX_BATCH", "lots")]), &[])
        .expect_err("bad env value");
    assert!(err.to_string().contains("AMP__STORE__MAX_BATCH"), "{err}");

    let err = load_with_env::<Config>(
        None,
        "AMP",
        vars(&[]),
        &vars(&[("server.listen", "not an address")]),
    )
    .expect_err("bad listen address");
    assert!(err.to_string().contains("server.listen"), "{err}");
}
