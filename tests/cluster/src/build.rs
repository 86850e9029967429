//! Building the binaries the tests start, in the test's own profile, once per test run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::Kind;

/// The directory holding the freshly built service binaries.
///
/// # Panics
/// When cargo cannot build them.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build(&[Kind::Ingest, Kind::Router, Kind::Delivery, Kind::Federation]))
}

/// The path of `kind`'s freshly built binary; `ampd` is built only by the tests that run it.
///
/// # Panics
/// When cargo cannot build it.
pub fn binary(kind: Kind) -> PathBuf {
    static AMPD: OnceLock<PathBuf> = OnceLock::new();
    let dir = match kind {
        Kind::Ampd => AMPD.get_or_init(|| build(&[Kind::Ampd])).as_path(),
        _ => binaries(),
    };
    dir.join(kind.name())
}

/// Builds `kinds` in the test's own profile (a no-op when fresh) and returns the directory
/// holding them.
fn build(kinds: &[Kind]) -> PathBuf {
    // The test runs from <target>/<profile>/deps/; the binaries live in <target>/<profile>.
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet"]);
    // What `cargo test` sets for this test crate must not reach the inner build: `ring`'s
    // build script reruns when CARGO_MANIFEST_DIR changes, and with it everything above
    // `ring`, so every test run and every manual `cargo build` rebuilt half the workspace.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_CRATE_")
            || name.starts_with("CARGO_BIN_")
            || name == "CARGO_TARGET_TMPDIR"
            || name == "CARGO_PRIMARY_PACKAGE"
        {
            build.env_remove(name.as_ref());
        }
    }
    for kind in kinds {
        build.args(["-p", kind.name()]);
    }
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for the service binaries");
    assert!(status.success(), "cargo build of {kinds:?} failed");
    dir
}
