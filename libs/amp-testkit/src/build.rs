//! The workspace's binaries the tests start, built in the test's own profile (a no-op when
//! fresh), so a test never runs a stale build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The built `ampd`: `$CARGO_BIN_EXE_ampd` when cargo set it for the running test (`ampd`'s
/// own tests), else built once per test run by [`build`].
///
/// # Panics
/// When cargo cannot build it.
pub(crate) fn ampd_binary() -> PathBuf {
    if let Some(exe) = std::env::var_os("CARGO_BIN_EXE_ampd").filter(|p| !p.is_empty()) {
        return PathBuf::from(exe);
    }
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build(&["ampd"])).join("ampd")
}

/// Builds `packages` (each with a binary of its name) in the test's own profile and returns
/// the directory holding them.
///
/// # Panics
/// When cargo cannot build them.
pub(crate) fn build(packages: &[&str]) -> PathBuf {
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
    for package in packages {
        build.args(["-p", package]);
    }
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for the service binaries");
    assert!(status.success(), "cargo build of {packages:?} failed");
    dir
}
