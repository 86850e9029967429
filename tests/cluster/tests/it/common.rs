//! Agents and messages for the cluster tests.

use std::time::Duration;

use amp_client::{Client, Identity, RouteOptions};
use amp_proto::{MessageId, SecretKey, Timestamp};

/// A client of `url` with a short timeout (a killed replica must not hang a test).
pub(crate) fn client(url: &str) -> Client {
    Client::new(url)
        .expect("client")
        .with_timeout(Duration::from_secs(10))
}

/// Registers `name` in `tenant` through `url`.
pub(crate) async fn agent(url: &str, tenant: &str, name: &str) -> Identity {
    client(url)
        .register(Some(tenant), name, &SecretKey::generate(), None)
        .await
        .unwrap_or_else(|e| panic!("register {name}@{tenant}: {e}"))
}

/// A fresh client-chosen message id.
pub(crate) fn message_id() -> String {
    MessageId::generate(Timestamp::now()).to_string()
}

/// Sends a text message with id `id`; the error is the provider's code or the transport's.
pub(crate) async fn send(
    client: &Client,
    from: &Identity,
    to: &str,
    id: &str,
    text: &str,
) -> Result<amp_client::RouteResult, String> {
    let payload = serde_json_payload(text);
    client
        .route(
            from,
            to,
            "cluster test",
            &payload,
            &RouteOptions {
                id: Some(id),
                ..RouteOptions::default()
            },
        )
        .await
        .map_err(|e| e.code().to_owned())
}

fn serde_json_payload(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    format!(r#"{{"type":"notification","message":"{escaped}"}}"#)
}

/// Every message id in `identity`'s mailbox, oldest first, read page by page through `url`
/// (not acknowledged).
pub(crate) async fn mailbox_ids(url: &str, identity: &Identity) -> Vec<String> {
    let client = client(url);
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .pending(identity, Some(100), after.as_deref(), None)
            .await
            .expect("pending page");
        if page.messages.is_empty() {
            return ids;
        }
        ids.extend(page.messages.iter().map(|m| m.id().to_owned()));
        after = page.next_cursor.clone();
        if after.is_none() {
            return ids;
        }
    }
}
