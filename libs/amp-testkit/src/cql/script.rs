//! `deploy/cassandra/node.sh`: where it is, what it needs (bash, a JDK), and `node.sh fetch`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// The script, found from this crate's directory (`libs/amp-testkit` → `deploy/cassandra`), so
/// it works from any test binary's working directory.
pub(super) fn node_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cassandra/node.sh")
}

/// Checks that a node can be started here and fetches Cassandra's jars (once per process;
/// `node.sh fetch` is itself idempotent and takes turns with other processes).
///
/// The error says what is missing: the script, bash, a JDK, or Maven (the fetch fails without
/// it unless the jars are already cached).
pub(super) fn prepare() -> Result<(), String> {
    static PREPARED: OnceLock<Result<(), String>> = OnceLock::new();
    PREPARED.get_or_init(prepare_once).clone()
}

fn prepare_once() -> Result<(), String> {
    let script = node_script();
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    java_runs()?;
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg("fetch")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`node.sh fetch` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    tracing::debug!(
        home = %String::from_utf8_lossy(&output.stdout).trim(),
        elapsed = ?started.elapsed(),
        "cassandra jars ready"
    );
    Ok(())
}

/// Makes the throwaway PKI of a TLS node in `dir` (`node.sh certs`: openssl and keytool).
///
/// The error carries the script's output.
pub(super) fn make_certs(dir: &Path) -> Result<(), String> {
    let output = Command::new("bash")
        .arg(node_script())
        .arg("certs")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", node_script().display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`node.sh certs` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The `java` node.sh will use (`$JAVA_HOME/bin/java`, else `java` on `PATH`) runs.
fn java_runs() -> Result<(), String> {
    let java = env::var_os("JAVA_HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    match Command::new(&java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{} -version` failed ({}): {}",
            java.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Err(format!(
            "no Java ({}: {e}); Cassandra 5.0 needs a JDK 17",
            java.display()
        )),
    }
}
