//! What a message's injection findings do to it (spec-next 07 "Default Severity-to-Verdict
//! Mapping", per-rule overrides, and the escalation of repeated flags), from the
//! `[router.quarantine]` settings ([`QuarantineConfig`]).
//!
//! - [`decide`]: each category's action (its override, else `categories` → quarantine, else
//!   its severity's verdict with `severity_defaults`, else flag); the message gets the
//!   strongest, with the categories that gave it and their highest severity.
//! - [`escalate`]: 07's "three or more `flag` verdicts from the same sender within 10
//!   minutes escalate the next message to quarantine", counted in the store so that every
//!   router replica sees the same history.

use amp_store::Store;

use crate::config::{Action, QuarantineConfig};
use amp_messaging::injection::{InjectionScanner, Severity};

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The strongest action of its categories; [`Action::Ignore`] when none is left.
    pub action: Action,
    /// The categories that gave `action` (the quarantine entry's `rules_triggered`).
    pub rules: Vec<String>,
    /// The highest severity among `rules`.
    pub severity: Severity,
}

/// The action for one category (see the module doc); an explicit override first.
pub fn action_of(scanner: &InjectionScanner, config: &QuarantineConfig, category: &str) -> Action {
    if let Some(a) = config.actions.get(category) {
        return *a;
    }
    if config.categories.iter().any(|c| c == category) {
        return Action::Quarantine;
    }
    if config.severity_defaults {
        return match scanner.severity(category) {
            Severity::Critical => Action::Block,
            Severity::High => Action::Quarantine,
            Severity::Warning => Action::Flag,
        };
    }
    Action::Flag
}

/// Whether `category` is to be dropped from a message's findings (`ignore`).
pub fn ignored(config: &QuarantineConfig, category: &str) -> bool {
    config.actions.get(category) == Some(&Action::Ignore)
}

/// The verdict on a message with the injection categories `flags`.
pub fn decide(scanner: &InjectionScanner, config: &QuarantineConfig, flags: &[String]) -> Decision {
    let actions: Vec<(&String, Action)> = flags
        .iter()
        .map(|f| (f, action_of(scanner, config, f)))
        .collect();
    let action = actions
        .iter()
        .map(|(_, a)| *a)
        .max()
        .unwrap_or(Action::Ignore);
    let rules: Vec<String> = actions
        .iter()
        .filter(|(_, a)| *a == action && action != Action::Ignore)
        .map(|(f, _)| (*f).clone())
        .collect();
    let severity = rules
        .iter()
        .map(|r| scanner.severity(r))
        .max()
        .unwrap_or(Severity::Warning);
    Decision {
        action,
        rules,
        severity,
    }
}

/// The store key of a sender's recent flag verdicts.
fn history_key(sender: &str) -> String {
    format!(
        "qflags/{}",
        amp_proto::signing::sha256_b64(sender.as_bytes())
    )
}

/// Most flag times kept per sender (a bound whatever the configured count).
const MAX_HISTORY: usize = 64;

/// 07's escalation for a message of `sender` at `now` whose own verdict is `flagged` (a
/// `flag`) or clean: `true` when the sender had `escalate_after_flags` flag verdicts
/// within the window, and this message is then to be quarantined (the history starts
/// again: it is "the next message" that escalates). Otherwise a flag is added to the
/// history. Off (no store access) with `escalate_after_flags` 0.
///
/// Concurrent messages of one sender on several replicas may each miss the other's flag
/// (read, then write): the count is a guard, never a ledger.
///
/// Fails on store errors (the caller retries the message).
pub async fn escalate(
    store: &Store,
    config: &QuarantineConfig,
    sender: &str,
    now: i64,
    flagged: bool,
) -> amp_store::Result<bool> {
    let threshold = config.escalate_after_flags as usize;
    if threshold == 0 {
        return Ok(false);
    }
    let window = amp_store::revocation::secs_to_millis(config.escalate_window_secs.max(1));
    let key = history_key(sender);
    let mut times: Vec<i64> = match store.get(&key).await? {
        Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
        None => Vec::new(),
    };
    times.retain(|t| now.saturating_sub(*t) < window);
    if times.len() >= threshold {
        store.delete(&key).await?;
        return Ok(true);
    }
    if flagged {
        times.push(now);
        if times.len() > MAX_HISTORY {
            times.drain(..times.len() - MAX_HISTORY);
        }
        let value = serde_json::to_vec(&times).unwrap_or_default();
        store
            .put(&key, value, Some(now.saturating_add(window)))
            .await?;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut QuarantineConfig)) -> QuarantineConfig {
        let mut c = QuarantineConfig::default();
        f(&mut c);
        c
    }

    fn flags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn spec_next_default_is_flag_severity_table_is_opt_in_and_overrides_win() {
        let scanner = InjectionScanner::builtin().expect("builtin");
        assert_eq!(scanner.severity("command_injection"), Severity::Critical);
        assert_eq!(scanner.severity("instruction_override"), Severity::High);
        assert_eq!(scanner.severity("social_engineering"), Severity::Warning);
        assert_eq!(scanner.severity("no_such_category"), Severity::Warning);
        let found = flags(&["instruction_override", "command_injection"]);

        // Nothing configured: every detection flags (today's behaviour).
        let d = decide(&scanner, &QuarantineConfig::default(), &found);
        assert_eq!(d.action, Action::Flag);
        assert_eq!(d.rules, found);

        // 07's table: critical blocks, high quarantines, warning flags.
        let table = config(|c| c.severity_defaults = true);
        let d = decide(&scanner, &table, &found);
        assert_eq!(
            (d.action, d.rules.clone(), d.severity),
            (
                Action::Block,
                flags(&["command_injection"]),
                Severity::Critical
            )
        );
        let d = decide(&scanner, &table, &flags(&["instruction_override"]));
        assert_eq!((d.action, d.severity), (Action::Quarantine, Severity::High));
        let d = decide(&scanner, &table, &flags(&["social_engineering"]));
        assert_eq!(d.action, Action::Flag);

        // An override beats the table, both ways; `ignore` leaves nothing.
        let o = config(|c| {
            c.severity_defaults = true;
            c.actions.insert("command_injection".into(), Action::Flag);
            c.actions.insert("social_engineering".into(), Action::Block);
            c.actions
                .insert("instruction_override".into(), Action::Ignore);
        });
        let d = decide(&scanner, &o, &found);
        assert_eq!(
            (d.action, d.rules),
            (Action::Flag, flags(&["command_injection"]))
        );
        let d = decide(&scanner, &o, &flags(&["social_engineering"]));
        assert_eq!(d.action, Action::Block);
        let d = decide(&scanner, &o, &flags(&["instruction_override"]));
        assert_eq!((d.action, d.rules.len()), (Action::Ignore, 0));
        assert!(ignored(&o, "instruction_override") && !ignored(&o, "command_injection"));

        // `categories` is `quarantine`, unless an action says otherwise.
        let legacy = config(|c| {
            c.categories = flags(&["instruction_override", "tool_abuse"]);
            c.actions.insert("tool_abuse".into(), Action::Flag);
        });
        assert_eq!(
            decide(&scanner, &legacy, &flags(&["instruction_override"])).action,
            Action::Quarantine
        );
        assert_eq!(
            decide(&scanner, &legacy, &flags(&["tool_abuse"])).action,
            Action::Flag
        );
        assert_eq!(
            decide(&scanner, &legacy, &[]),
            Decision {
                action: Action::Ignore,
                rules: vec![],
                severity: Severity::Warning
            }
        );
    }

    #[tokio::test]
    async fn spec_next_three_flags_in_the_window_escalate_the_next_message_once() {
        use amp_store::redb::{RedbConfig, RedbStore};
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("redb"));
        let off = QuarantineConfig::default();
        let on = config(|c| c.escalate_after_flags = 3);
        let t0 = 1_800_000_000_000_i64;
        let min = 60_000;
        let esc = |c: &QuarantineConfig, who: &str, at: i64, flagged: bool| {
            let (store, c, who) = (store.clone(), c.clone(), who.to_owned());
            async move {
                escalate(&store, &c, &who, at, flagged)
                    .await
                    .expect("store")
            }
        };
        // Off: never, and nothing is written.
        for i in 0..5 {
            assert!(!esc(&off, "a@x.test", t0 + i, true).await);
        }
        // Three flags, then the next message (clean) escalates, once.
        for i in 0..3 {
            assert!(!esc(&on, "a@x.test", t0 + i * min, true).await);
        }
        assert!(
            !esc(&on, "b@x.test", t0 + 3 * min, false).await,
            "per sender"
        );
        assert!(esc(&on, "a@x.test", t0 + 3 * min, false).await);
        assert!(!esc(&on, "a@x.test", t0 + 4 * min, false).await, "once");
        // Flags older than the window do not count.
        for i in 0..2 {
            assert!(!esc(&on, "c@x.test", t0 + i * min, true).await);
        }
        assert!(!esc(&on, "c@x.test", t0 + 11 * min, true).await);
        assert!(!esc(&on, "c@x.test", t0 + 12 * min, false).await);
    }
}
