//! [`cql_target`] (the node every CQL test talks to), [`unique_keyspace`], and the rule for
//! a machine where no node can run: skip loudly, or fail under `AMP_REQUIRE_CQL=1`.

use std::env;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{CqlNode, TlsFiles};

/// Names the shared node's directory `amp-cql-shared-<pid>-…`: a static is never dropped, so
/// the next test process removes the directories of processes that are gone.
const SHARED_PREFIX: &str = "amp-cql-shared-";

/// The CQL contact point (`host:port`) every CQL test uses: `$AMP_TEST_CQL` when set (an
/// existing node; nothing is started), else a Cassandra node shared by the whole test process,
/// started on the first call. The shared node outlives every test; `node.sh`'s watchdog kills
/// it when the process exits.
///
/// `None` when no node can be started here (no Java, no Maven, or the node did not start):
/// the test should return early; a loud line on stderr says why it is skipped.
///
/// # Panics
/// Instead of returning `None` when `AMP_REQUIRE_CQL=1` is set: in CI a missing node is a
/// failure, never a skip.
pub fn cql_target() -> Option<String> {
    if let Some(target) = env::var("AMP_TEST_CQL")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Some(target.trim().to_owned());
    }
    match shared() {
        Ok(node) => Some(node.contact_point()),
        Err(reason) => {
            skip_or_fail("the shared Cassandra node is unavailable", reason);
            None
        }
    }
}

/// A node that serves TLS, and the certificates to reach it with.
#[derive(Debug, Clone)]
pub struct CqlTlsTarget {
    /// `127.0.0.1:<port>`: TLS and plain CQL on the same port.
    pub contact_point: String,
    /// The node's CA, a client certificate, and a CA that did not sign the node.
    pub files: TlsFiles,
}

/// A node that serves TLS: the shared node of [`cql_target`] (every node the kit starts
/// serves TLS next to plain CQL), or, when `AMP_TEST_CQL` names a node the kit did not
/// start (whose certificates it cannot know), a node of its own, started on the first call.
///
/// `None` (with a loud line on stderr) when no node can be started here.
///
/// # Panics
/// Instead of returning `None` when `AMP_REQUIRE_CQL=1` is set.
pub fn cql_tls_target() -> Option<CqlTlsTarget> {
    let external = env::var("AMP_TEST_CQL").is_ok_and(|t| !t.trim().is_empty());
    let node = if external {
        static OWN: OnceLock<Result<CqlNode, String>> = OnceLock::new();
        OWN.get_or_init(|| CqlNode::try_start("amp-cql-tls-"))
    } else {
        shared()
    };
    match node {
        Ok(node) => Some(CqlTlsTarget {
            contact_point: node.contact_point(),
            files: node.tls().clone(),
        }),
        Err(reason) => {
            skip_or_fail("no Cassandra node serving TLS", reason);
            None
        }
    }
}

/// The node shared by the test process, started on first use.
fn shared() -> &'static Result<CqlNode, String> {
    static SHARED: OnceLock<Result<CqlNode, String>> = OnceLock::new();
    SHARED.get_or_init(|| {
        remove_stale_shared_dirs();
        CqlNode::try_start(&format!("{SHARED_PREFIX}{}-", std::process::id()))
    })
}

/// Panics under `AMP_REQUIRE_CQL=1`; otherwise prints a line that cannot be missed.
pub(super) fn skip_or_fail(what: &str, reason: &str) {
    if env::var("AMP_REQUIRE_CQL").is_ok_and(|v| v == "1") {
        panic!(
            "{what}: {reason}\nAMP_REQUIRE_CQL=1 is set, so this is a failure, not a skip \
             (see deploy/cassandra/README.md)"
        );
    }
    // Straight to the stderr handle: the test harness captures eprintln! of passing tests.
    let line = format!(
        "\n!!!! CQL TEST SKIPPED: {what}: {reason}\n!!!! Install a JDK 17 and Maven (see \
         deploy/cassandra/README.md) or set AMP_TEST_CQL=host:port; AMP_REQUIRE_CQL=1 makes \
         this a failure.\n"
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Removes the shared-node directories of test processes that no longer run.
fn remove_stale_shared_dirs() {
    // Liveness is read from /proc; without it nothing is known to be stale.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SHARED_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A keyspace name no other test uses: `prefix` (lowercased, anything but `[a-z0-9_]` turned
/// into `_`, cut to fit) then `_<pid>_<process start>_<counter>` in base 36. Unique within the
/// process (counter), across concurrent processes (pid), and across runs against a long-lived
/// node (start time); at most 48 characters (Cassandra's limit) and starting with a letter, so
/// it needs no quoting.
pub fn unique_keyspace(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STARTED_MS: OnceLock<u64> = OnceLock::new();
    let started = *STARTED_MS.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let suffix = format!(
        "_{}_{}_{}",
        base36(u64::from(std::process::id())),
        base36(started),
        base36(COUNTER.fetch_add(1, Ordering::Relaxed)),
    );
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "ks_");
    }
    name.truncate(48 - suffix.len());
    name + &suffix
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cql_unique_keyspace_is_a_valid_unquoted_name() {
        let long = "Store Conformance – Mailbox / Ack ".repeat(4);
        for prefix in ["store", "", "9lives", "_x", long.as_str()] {
            let name = unique_keyspace(prefix);
            assert!(name.len() <= 48, "{name} is too long");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        assert!(unique_keyspace("store").starts_with("store_"));
        assert_ne!(unique_keyspace("store"), unique_keyspace("store"));
    }

    #[test]
    fn cql_base36() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
