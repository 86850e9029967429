//! One function per subcommand.

use std::time::Duration;

use amp_client::{Client, ClientError, Frame, Identity, Message, RouteOptions, Subscription};
use amp_proto::{Priority, SecretKey};
use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::config::{Paths, Settings};
use crate::{Cli, Command, RegisterArgs, SendArgs};

/// How often `tail` pings (the provider closes sockets idle for five minutes).
const PING_EVERY: Duration = Duration::from_secs(30);
/// Longest pause between `tail` reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    // The operator plane needs no agent state (no config directory).
    let cli = match cli.command {
        Command::Admin(args) => return crate::admin::run(args, cli.json).await,
        _ => cli,
    };
    let paths = Paths::resolve(cli.config_dir)?;
    let out = Out { json: cli.json };
    let provider = cli.provider.as_deref();
    match cli.command {
        Command::Admin(_) => unreachable!("dispatched above"),
        Command::Init { force } => init(&paths, &out, force),
        Command::Register(args) => register(&paths, &out, provider, args).await,
        Command::Send(args) => send(&paths, &out, provider, args).await,
        Command::Inbox { limit, wait, after } => {
            let (client, me) = session(&paths, provider)?;
            let page = client
                .pending(&me, limit, after.as_deref(), wait.map(Duration::from_secs))
                .await?;
            if out.json {
                return out.print_json(&page);
            }
            if page.messages.is_empty() {
                println!("no pending messages");
            }
            for m in &page.messages {
                print_message(m);
            }
            if page.remaining > 0 {
                println!("({} more pending)", page.remaining);
            }
            Ok(())
        }
        Command::Ack { ids } => {
            let (client, me) = session(&paths, provider)?;
            if let [id] = ids.as_slice() {
                let r = client.ack_one(&me, id).await?;
                if out.json {
                    return out.print_json(&r);
                }
                let note = if r.already_acked {
                    " (already acked)"
                } else {
                    ""
                };
                println!("acked {id}{note}");
                return Ok(());
            }
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let r = client.ack(&me, &refs).await?;
            if out.json {
                out.print_json(&r)?;
            } else {
                println!("acked {} message(s)", r.acknowledged);
                if !r.already_acked.is_empty() {
                    println!("already acked: {}", r.already_acked.join(" "));
                }
            }
            if !r.not_found.is_empty() {
                bail!("not found: {}", r.not_found.join(" "));
            }
            Ok(())
        }
        Command::Read { id } => {
            let (client, me) = session(&paths, provider)?;
            let r = client.read(&me, &id).await?;
            if out.json {
                return out.print_json(&r);
            }
            if r.read_receipt_sent {
                println!("read receipt sent for {id}");
            } else {
                println!("marked {id} read (the sender cannot be reached for a receipt)");
            }
            Ok(())
        }
        Command::Tail { no_ack } => tail(&paths, &out, provider, !no_ack).await,
        Command::Receipts { clear } => {
            let (client, me) = session(&paths, provider)?;
            let r = client.receipts(&me, None, None).await?;
            if out.json {
                out.print_json(&r)?;
            } else if r.receipts.is_empty() {
                println!("no receipts");
            } else {
                for rc in &r.receipts {
                    let at = rc
                        .data
                        .get("read_at")
                        .or_else(|| rc.data.get("delivered_at"))
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    println!("{}  {}  {at}", rc.kind, rc.message_id().unwrap_or("?"));
                }
            }
            if clear && let Some(upto) = r.next_after {
                client.ack_receipts(&me, upto).await?;
            }
            Ok(())
        }
        Command::Info => info(&paths, &out, provider).await,
        // `main` hands `amp load` to its own parser before this one runs.
        Command::Load { .. } => bail!("run `amp load --help`"),
    }
}

/// Output mode.
struct Out {
    json: bool,
}

impl Out {
    fn print_json<T: Serialize>(&self, v: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }
}

/// The client and identity for an authenticated command.
fn session(paths: &Paths, provider: Option<&str>) -> anyhow::Result<(Client, Identity)> {
    let me = paths.load_identity()?;
    let client = Client::new(&paths.provider(provider)?)?;
    Ok((client, me))
}

fn init(paths: &Paths, out: &Out, force: bool) -> anyhow::Result<()> {
    let key_path = paths.key();
    let (key, created) = if key_path.exists() && !force {
        (amp_client::identity::load_key(&key_path)?, false)
    } else {
        let key = SecretKey::generate();
        amp_client::identity::save_key(&key_path, &key)?;
        // A registration belongs to the key it was made with.
        let _ = std::fs::remove_file(paths.identity());
        (key, true)
    };
    let public = key.public();
    if out.json {
        return out.print_json(&json!({
            "key_file": key_path,
            "created": created,
            "fingerprint": public.fingerprint(),
            "public_key": public.to_pem(),
        }));
    }
    let verb = if created { "created" } else { "kept existing" };
    println!("{verb} key {}", key_path.display());
    println!("fingerprint {}", public.fingerprint());
    print!("{}", public.to_pem());
    Ok(())
}

async fn register(
    paths: &Paths,
    out: &Out,
    provider: Option<&str>,
    args: RegisterArgs,
) -> anyhow::Result<()> {
    let url = paths.provider(provider)?;
    let key_path = paths.key();
    if !key_path.exists() {
        bail!("no key at {}: run `amp init` first", key_path.display());
    }
    let key = amp_client::identity::load_key(&key_path)?;
    let client = Client::new(&url)?;
    let me = client
        .register(
            args.tenant.as_deref(),
            &args.name,
            &key,
            args.user_key.as_deref(),
        )
        .await?;
    me.save(&paths.identity(), &key_path)?;
    paths.save_settings(&Settings {
        provider: Some(url.clone()),
    })?;
    let reg = me.registration();
    if out.json {
        // Everything but the API key, which stays in the 0600 file.
        return out.print_json(&json!({
            "address": reg.address,
            "agent_id": reg.agent_id,
            "tenant": reg.tenant,
            "provider": reg.provider,
            "identity_file": paths.identity(),
        }));
    }
    println!("registered {}", reg.address);
    println!("agent id   {}", reg.agent_id);
    println!("provider   {url}");
    println!("saved to   {}", paths.identity().display());
    Ok(())
}

async fn send(
    paths: &Paths,
    out: &Out,
    provider: Option<&str>,
    args: SendArgs,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<&'a RawValue>,
    }
    let context: Option<&RawValue> = args
        .context
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--context is not valid JSON")?;
    let priority = Priority::parse(&args.priority).with_context(|| {
        format!(
            "--priority {:?}: use urgent, high, normal or low",
            args.priority
        )
    })?;
    let payload = serde_json::to_string(&Payload {
        kind: &args.kind,
        message: &args.message,
        context,
    })?;
    let (client, me) = session(paths, provider)?;
    let opts = RouteOptions {
        priority: Some(priority),
        in_reply_to: args.reply_to.as_deref(),
        thread_id: args.thread.as_deref(),
        id: args.id.as_deref(),
        receipt: args.receipt,
    };
    let r = client
        .route(&me, &args.to, &args.subject, &payload, &opts)
        .await?;
    if out.json {
        return out.print_json(&r);
    }
    println!("sent {} ({})", r.id, r.status);
    Ok(())
}

async fn info(paths: &Paths, out: &Out, provider: Option<&str>) -> anyhow::Result<()> {
    let url = paths.provider(provider)?;
    let client = Client::new(&url)?;
    let info = client.info().await?;
    let health = client.health().await;
    let me = paths.load_identity().ok();
    let count = match &me {
        Some(me) => client.count(me).await.ok(),
        None => None,
    };
    if out.json {
        return out.print_json(&json!({
            "provider_url": url,
            "info": info,
            "health": health.as_ref().ok(),
            "agent": me.as_ref().map(|m| json!({
                "address": m.address(),
                "agent_id": m.agent_id(),
                "fingerprint": m.key().public().fingerprint(),
            })),
            "pending": count,
        }));
    }
    println!("provider     {} ({url})", info.provider);
    println!("protocol     {}", info.version);
    if let Some(v) = &info.server_version {
        println!("server       {v}");
    }
    println!("fingerprint  {}", info.fingerprint);
    println!("capabilities {}", info.capabilities.join(" "));
    match &health {
        Ok(h) => println!("health       {} (up {} s)", h.status, h.uptime_seconds),
        Err(e) => println!("health       {}: {}", e.code(), e.message()),
    }
    match &me {
        Some(me) => {
            println!("agent        {}", me.address());
            println!("agent id     {}", me.agent_id());
            if let Some(c) = count {
                println!("pending      {}", c.count);
            }
        }
        None => println!("agent        (not registered)"),
    }
    Ok(())
}

/// Follows the inbox; after a drop it reconnects with backoff (replays bring back whatever
/// was not acked). Refusals (bad key, policy closes) end it with an error.
async fn tail(paths: &Paths, out: &Out, provider: Option<&str>, ack: bool) -> anyhow::Result<()> {
    let (client, me) = session(paths, provider)?;
    let mut sub = client.subscribe(&me).await?;
    let mut backoff = Duration::from_secs(1);
    loop {
        if !out.json {
            eprintln!(
                "connected as {} ({} pending)",
                sub.connected().address,
                sub.connected().pending_count
            );
        }
        match follow(&mut sub, out, ack).await {
            Ok(Flow::Interrupted) => {
                let _ = sub.close().await;
                return Ok(());
            }
            Ok(Flow::Dropped) => eprintln!("connection closed; reconnecting"),
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => eprintln!("{}: {}; reconnecting", e.code(), e.message()),
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match client.subscribe(&me).await {
                Ok(s) => {
                    sub = s;
                    backoff = Duration::from_secs(1);
                    break;
                }
                Err(e) if fatal(&e) => return Err(e.into()),
                Err(e) => eprintln!("{}: {}; retrying", e.code(), e.message()),
            }
        }
    }
}

enum Flow {
    Interrupted,
    Dropped,
}

/// Errors a reconnect cannot fix: the key was refused or the provider closed on policy.
fn fatal(e: &ClientError) -> bool {
    match e {
        ClientError::Socket { error, .. } => error == "unauthorized",
        ClientError::Closed { code, .. } => matches!(code, Some(4001 | 1008)),
        ClientError::Api { status, .. } => matches!(status, 401 | 403 | 404),
        _ => false,
    }
}

async fn follow(sub: &mut Subscription, out: &Out, ack: bool) -> Result<Flow, ClientError> {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            frame = sub.next() => {
                let Some(frame) = frame else { return Ok(Flow::Dropped) };
                let frame = frame?;
                show_frame(&frame, out);
                if let (Frame::Message(m), true) = (&frame, ack) {
                    sub.ack(m.id()).await?;
                }
            }
            _ = ping.tick() => sub.ping().await?,
            _ = tokio::signal::ctrl_c() => return Ok(Flow::Interrupted),
        }
    }
}

fn show_frame(frame: &Frame, out: &Out) {
    if out.json {
        let line = match frame {
            Frame::Message(m) => json!({ "type": "message.new", "data": m }),
            Frame::Delivered(d) => json!({ "type": "message.delivered", "data": d }),
            Frame::Read(r) => json!({ "type": "message.read", "data": r }),
            Frame::Error {
                error,
                message,
                reference,
            } => json!({ "type": "error", "error": error, "message": message, "ref": reference }),
            Frame::Connected(c) => json!({ "type": "connected", "data": c }),
            Frame::RouteResult { reference, result } => {
                json!({ "type": "route.result", "data": result, "ref": reference })
            }
            // Pongs are keep-alive noise; unknown frames are not ours to interpret.
            _ => return,
        };
        println!("{line}");
        return;
    }
    match frame {
        Frame::Message(m) => print_message(m),
        Frame::Delivered(d) => println!(
            "delivered {} to {} ({})",
            d.id,
            d.to.as_deref().unwrap_or("?"),
            d.basis.as_deref().unwrap_or("?")
        ),
        Frame::Read(r) => println!(
            "read {} by {} at {}",
            r.id,
            r.by.as_deref().unwrap_or("recipient"),
            r.read_at.as_deref().unwrap_or("?")
        ),
        Frame::Error { error, message, .. } => eprintln!("provider error: {error}: {message}"),
        _ => {}
    }
}

fn print_message(m: &Message) {
    let e = &m.envelope;
    let verified = match m.verify(None) {
        Ok(_) => "signed",
        Err(_) => "UNVERIFIED",
    };
    let priority = e.priority.as_deref().unwrap_or("normal");
    let replay = if m.replay { " (replay)" } else { "" };
    println!(
        "{}  {}  from {}  [{priority}, {verified}]{replay}",
        m.id(),
        m.queued_at
            .as_deref()
            .or(e.timestamp.as_deref())
            .unwrap_or(""),
        e.from
    );
    println!("  subject: {}", e.subject);
    let kind = m.payload_type().unwrap_or_else(|| "message".into());
    match m.text() {
        Some(t) => println!("  {kind}: {t}"),
        None => println!("  payload: {}", m.payload.get()),
    }
}
