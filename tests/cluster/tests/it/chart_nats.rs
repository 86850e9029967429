//! The NATS that the chart installs with `nats.enabled` (the nats chart vendored in
//! `helm/amp/charts/nats`): one user per service with the permissions of
//! `deploy/nats/auth.conf`, passwords from the services' Secret and never from a ConfigMap,
//! refusals of every open or half-configured combination, TLS on both sides; and the config it
//! renders run by a real nats-server, against `deploy/nats/auth.conf` and under the cluster's
//! binaries.

use std::collections::{BTreeMap, BTreeSet};

use amp_testkit::{NATS_SERVICES, NatsServer, nats_auth_config};
use serde_yaml::Value;

use crate::chart::{lint, render};

/// What every bundled-NATS render here shares: the operator's Secrets, and routes
/// authenticated by mutual TLS (the chart refuses open routes).
const BUNDLED: [&str; 8] = [
    "--set",
    "nats.enabled=true",
    "--set",
    "identity.existingSecret=amp-identity",
    "--set",
    "nats.auth.existingSecret=amp-nats-users",
    "--set",
    "nats.config.cluster.tls.enabled=true",
];

/// [`BUNDLED`] plus `extra`, linted (`helm lint --strict` passes for it) and rendered.
fn render_bundled(extra: &[&str]) -> String {
    let mut args = BUNDLED.to_vec();
    args.extend_from_slice(extra);
    lint(&args);
    render(&args).unwrap_or_else(|e| panic!("render {args:?}: {e}"))
}

/// The rendered manifests as YAML documents.
fn parse(manifests: &str) -> Vec<Value> {
    manifests
        .split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter_map(|d| {
            let v: Value = serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}"));
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], Vec::as_slice)
}

/// The bundled NATS's server configuration (the nats chart's ConfigMap).
fn nats_conf(docs: &[Value]) -> String {
    named(docs, "ConfigMap", "r-nats-config")["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf")
        .to_owned()
}

/// The `{ ... }` of `"key": { ... }` in a NATS config (braces balanced; subjects hold none).
fn block<'a>(conf: &'a str, key: &str) -> &'a str {
    let start = conf
        .find(&format!("\"{key}\": {{"))
        .unwrap_or_else(|| panic!("no {key} in {conf}"));
    let open = start + conf[start..].find('{').expect("a brace");
    let mut depth = 0;
    for (i, c) in conf[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &conf[open..=open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced {key} in {conf}")
}

/// The nats-server variable holding `service`'s password.
fn password_var(service: &str) -> String {
    format!("AMP_NATS_{}_PASSWORD", service.to_uppercase())
}

/// The rendered `accounts` block as JSON: each password's variable reference (`$VAR`, which
/// nats-server resolves) written as the string "$VAR".
fn accounts_json(conf: &str) -> serde_json::Value {
    let mut text = block(conf, "accounts").to_owned();
    for s in NATS_SERVICES {
        let var = format!("${}", password_var(s));
        text = text.replace(&format!(": {var}"), &format!(": \"{var}\""));
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// The nats container's environment variables that come from a Secret: name -> (Secret, key).
fn nats_server_env(docs: &[Value]) -> BTreeMap<String, (String, String)> {
    let sts = named(docs, "StatefulSet", "r-nats");
    let nats = seq(&sts["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("nats"))
        .expect("the nats container");
    seq(&nats["env"])
        .iter()
        .filter_map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            Some((
                e["name"].as_str()?.to_owned(),
                (
                    r["name"].as_str()?.to_owned(),
                    r["key"].as_str()?.to_owned(),
                ),
            ))
        })
        .collect()
}

/// The pod spec of `service`'s Deployment.
fn pod<'a>(docs: &'a [Value], service: &str) -> &'a Value {
    &named(docs, "Deployment", &format!("r-amp-{service}"))["spec"]["template"]["spec"]
}

/// A pod's volume named `name`.
fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}: {pod:?}"))
}

/// A pod's first container's plain environment values.
fn env_values(pod: &Value) -> BTreeMap<String, String> {
    seq(&seq(&pod["containers"])[0]["env"])
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

/// Issue 16: the NATS that `nats.enabled` installs used to accept anyone. Now its config has
/// account AMP with one user per service and the permissions of deploy/nats/auth.conf, each
/// password a variable nats-server reads from its environment, filled from the services'
/// Secret (never a ConfigMap), and each service mounts only its own key of that Secret.
#[test]
fn security_chart_bundled_nats_has_one_user_per_service_with_its_permissions() {
    let docs = parse(&render_bundled(&["--set", "federation.enabled=true"]));
    let conf = nats_conf(&docs);
    for open in ["no_auth_user", "\"authorization\""] {
        assert!(!conf.contains(open), "{open} in\n{conf}");
    }
    let accounts = accounts_json(&conf);
    let amp = &accounts["AMP"];
    assert_eq!(amp["jetstream"], "enabled", "{accounts}");
    let users = amp["users"].as_array().expect("users");
    assert_eq!(users.len(), NATS_SERVICES.len(), "{accounts}");
    for s in NATS_SERVICES {
        let user = users
            .iter()
            .find(|u| u["user"] == s)
            .unwrap_or_else(|| panic!("no user {s}: {accounts}"));
        // A variable, resolved by nats-server from its environment: no value in the ConfigMap.
        assert_eq!(user["password"], format!("${}", password_var(s)));
        let publish = &user["permissions"]["publish"];
        let allowed = strings(&publish["allow"]);
        if s == "router" {
            // Consumes the ingress stream, never feeds it; alone feeds the federation stream.
            assert!(!allowed.contains(&"amp.>"), "{user}");
            assert!(allowed.contains(&"amp.federation.>"), "{user}");
            assert!(
                !allowed.iter().any(|a| a.starts_with("amp.ingress")),
                "{user}"
            );
            assert!(publish.get("deny").is_none(), "{user}");
        } else {
            assert!(allowed.contains(&"amp.>"), "{user}");
            assert_eq!(strings(&publish["deny"]), ["amp.federation.>"], "{user}");
        }
        assert_eq!(
            strings(&user["permissions"]["subscribe"]["allow"]),
            ["amp.>", "_INBOX.>"],
            "{user}"
        );
    }
    assert_eq!(conf.matches("\"password\"").count(), NATS_SERVICES.len());

    // nats-server's environment: each variable from its service's key of the Secret.
    let env = nats_server_env(&docs);
    for s in NATS_SERVICES {
        assert_eq!(
            env.get(&password_var(s)),
            Some(&("amp-nats-users".to_owned(), s.to_owned())),
            "{env:?}"
        );
    }

    // Each service logs in as its own user and mounts only its own key.
    for s in NATS_SERVICES {
        let pod = pod(&docs, s);
        let secret = &volume(pod, "nats-auth")["secret"];
        assert_eq!(secret["secretName"], "amp-nats-users");
        let keys: Vec<&str> = seq(&secret["items"])
            .iter()
            .filter_map(|i| i["key"].as_str())
            .collect();
        assert_eq!(keys, [s], "{s} mounts {keys:?}");
        let env = env_values(pod);
        assert_eq!(
            env.get("AMP__NATS__AUTH__USER").map(String::as_str),
            Some(s)
        );
        assert_eq!(
            env.get("AMP__NATS__AUTH__PASSWORD_FILE")
                .map(String::as_str),
            Some("/run/amp/nats-auth/credential")
        );
        let users_secret = seq(&pod["volumes"])
            .iter()
            .filter(|v| v["secret"]["secretName"] == "amp-nats-users")
            .count();
        assert_eq!(users_secret, 1, "{s}: one volume of the Secret");
    }

    // With a prefix the services' subjects move under it (the JetStream and KV APIs do not).
    let prefixed = parse(&render_bundled(&["--set", "nats.prefix=blue"]));
    let accounts = accounts_json(&nats_conf(&prefixed));
    for user in accounts["AMP"]["users"].as_array().expect("users") {
        let allowed = strings(&user["permissions"]["publish"]["allow"]);
        assert!(
            allowed.iter().all(|a| !a.starts_with("amp.")),
            "unprefixed: {user}"
        );
        assert!(allowed.contains(&"$JS.API.>"), "{user}");
        assert!(
            allowed.contains(&"blue.amp.>") || allowed.contains(&"blue.amp.federation.>"),
            "{user}"
        );
    }

    // Without nats.enabled nothing changes: no login unless nats.auth.mode asks for one.
    let external =
        parse(&render(&["--set", "identity.existingSecret=amp-identity"]).expect("renders"));
    assert!(!env_values(pod(&external, "ingest")).contains_key("AMP__NATS__AUTH__USER"));
}

/// A render that would run the bundled NATS open, or half configured, fails and says what to
/// set: no Secret (and no generate), mode none (or a mode the bundled server cannot check),
/// the chart's account dropped, a `no_auth_user`, TLS on one side only, and an upgrade that
/// cannot find the generated passwords.
#[test]
fn security_chart_bundled_nats_refuses_to_run_open_or_incomplete() {
    let base = [
        "--set",
        "nats.enabled=true",
        "--set",
        "identity.existingSecret=amp-identity",
        "--set",
        "nats.config.cluster.tls.enabled=true",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        render(&args)
    };
    let secret = ["--set", "nats.auth.existingSecret=amp-nats-users"];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec![],
            vec!["nats.auth.existingSecret", "nats.auth.generate=true"],
        ),
        (
            [&secret[..], &["--set", "nats.auth.mode=none"]].concat(),
            vec!["open to every pod"],
        ),
        (
            [&secret[..], &["--set", "nats.auth.mode=nkey"]].concat(),
            vec!["by its password", "nats.enabled=false"],
        ),
        (
            [
                &secret[..],
                &["--set", "nats.config.merge.accounts.amp=null"],
            ]
            .concat(),
            vec!["nats.config.merge.accounts.amp"],
        ),
        (
            [
                &secret[..],
                &[
                    "--set",
                    "nats.config.merge.accounts.amp.users[0].user=anyone",
                ],
            ]
            .concat(),
            vec!["nats.config.merge.accounts.amp"],
        ),
        (
            [
                &secret[..],
                &["--set", "nats.config.merge.no_auth_user=ingest"],
            ]
            .concat(),
            vec!["no_auth_user"],
        ),
        (
            [&secret[..], &["--set", "nats.tls.enabled=true"]].concat(),
            vec!["nats.config.nats.tls.enabled=true"],
        ),
        (
            [&secret[..], &["--set", "nats.config.nats.tls.enabled=true"]].concat(),
            vec!["nats.tls.enabled=true"],
        ),
        (
            vec!["--set", "nats.auth.generate=true", "--is-upgrade"],
            vec![
                "refusing to generate new NATS passwords",
                "nats.auth.existingSecret",
            ],
        ),
    ];
    for (extra, words) in cases {
        let err = with(&extra).expect_err(&format!("{extra:?} rendered"));
        for w in words {
            assert!(err.contains(w), "{extra:?}: {w:?} not in {err}");
        }
    }
    with(&secret).unwrap_or_else(|e| panic!("with the Secret: {e}"));
}

/// Without the operator's Secret, `nats.auth.generate=true` makes one (kept on uninstall) that
/// both the NATS server and the services read; its passwords appear nowhere else. Offline
/// every render generates new ones, which is why it is not the default.
#[test]
fn security_chart_bundled_nats_generates_passwords_only_when_asked() {
    use base64::Engine as _;

    let args = [
        "--set",
        "nats.enabled=true",
        "--set",
        "identity.existingSecret=amp-identity",
        "--set",
        "nats.config.cluster.tls.enabled=true",
        "--set",
        "nats.auth.generate=true",
    ];
    lint(&args);
    let passwords = |docs: &[Value]| -> Vec<String> {
        let secret = named(docs, "Secret", "r-amp-nats-auth");
        assert_eq!(
            secret["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        NATS_SERVICES
            .iter()
            .map(|s| {
                let b64 = secret["data"][*s].as_str().expect("a key per service");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64");
                String::from_utf8(raw).expect("utf-8")
            })
            .collect()
    };
    let manifests = render(&args).unwrap_or_else(|e| panic!("render: {e}"));
    let docs = parse(&manifests);
    let generated = passwords(&docs);
    let distinct: BTreeSet<&String> = generated.iter().collect();
    assert_eq!(distinct.len(), NATS_SERVICES.len());
    for p in &generated {
        assert!(
            p.len() >= 32 && p.bytes().all(|b| b.is_ascii_alphanumeric()),
            "a weak or unparseable password: {p:?}"
        );
        // Nowhere but in the Secret (base64): no ConfigMap, no env value.
        assert!(
            !manifests.contains(p.as_str()),
            "a password in the manifests"
        );
    }
    let env = nats_server_env(&docs);
    for s in NATS_SERVICES {
        assert_eq!(
            env.get(&password_var(s)),
            Some(&("r-amp-nats-auth".to_owned(), s.to_owned()))
        );
    }
    for s in ["ingest", "router", "delivery"] {
        assert_eq!(
            volume(pod(&docs, s), "nats-auth")["secret"]["secretName"],
            "r-amp-nats-auth"
        );
    }
    let again = passwords(&parse(&render(&args).expect("renders")));
    assert_ne!(generated, again, "offline renders generate new passwords");
}

/// TLS stays opt-in, and when on, both sides have it: the server's `tls` block with the
/// certificate Secret mounted, and `[nats.tls]` (required, the CA) in the services' config.
#[test]
fn security_chart_bundled_nats_tls_on_both_sides() {
    let docs = parse(&render_bundled(&[
        "--set",
        "nats.tls.enabled=true",
        "--set",
        "nats.tls.caSecret=amp-nats-ca",
        "--set",
        "nats.config.nats.tls.enabled=true",
        "--set",
        "nats.config.nats.tls.secretName=amp-nats-server-tls",
    ]));
    let conf = nats_conf(&docs);
    let tls = &conf[conf.rfind("\"tls\": {").expect("a tls block")..];
    assert!(
        tls.contains("\"cert_file\": \"/etc/nats-certs/nats/tls.crt\""),
        "{conf}"
    );
    let sts = named(&docs, "StatefulSet", "r-nats");
    assert!(
        seq(&sts["spec"]["template"]["spec"]["volumes"])
            .iter()
            .any(|v| v["secret"]["secretName"] == "amp-nats-server-tls"),
        "{sts:?}"
    );
    let toml = named(&docs, "ConfigMap", "r-amp-config")["data"]["cluster.toml"]
        .as_str()
        .expect("cluster.toml");
    let section = &toml[toml.find("[nats.tls]").expect("[nats.tls]")..];
    assert!(section.contains("required = true"), "{toml}");
    assert!(
        section.contains("ca_file = \"/run/amp/nats-tls/ca/ca.crt\""),
        "{toml}"
    );
    assert_eq!(
        volume(pod(&docs, "ingest"), "nats-tls-ca")["secret"]["secretName"],
        "amp-nats-ca"
    );
    // Off by default: no tls block for clients.
    let plain = nats_conf(&parse(&render_bundled(&[])));
    assert!(!plain.contains("/etc/nats-certs/nats/"), "{plain}");
}

/// The server configuration the chart renders with `extra` values, for
/// [`NatsServer::start_with`] (which adds a port, JetStream and a temporary directory): its
/// `accounts` block, each `$AMP_NATS_<SERVICE>_PASSWORD` defined as [`password`] of the Secret
/// key the StatefulSet fills it from (in a pod, nats-server reads it from its environment).
fn chart_nats_config(extra: &[&str]) -> String {
    let docs = parse(&render_bundled(extra));
    let conf = nats_conf(&docs);
    let mut config = String::new();
    for (var, (_, key)) in nats_server_env(&docs) {
        config.push_str(&format!("{var}: \"{}\"\n", password(&key)));
    }
    config + &format!("accounts: {}\n", block(&conf, "accounts"))
}

fn password(service: &str) -> String {
    format!("pw-{service}-5be3c0d9e1")
}

/// Subjects each user is probed with, by a publish and by a subscription.
const PROBES: [&str; 18] = [
    "amp.ingress.acme",
    "amp.ingress-1.acme.bob",
    "amp.federation.acme",
    "amp.mbox.acme.bob",
    "amp.mboxp.1.acme.bob",
    "amp.rcpt.acme",
    "amp.notify.acme.bob",
    "amp.delivered.acme",
    "amp.registry.changed",
    "amp.reply.acme",
    "amp.dlq.acme",
    "amp.limits.messages",
    "$JS.API.INFO",
    "$JS.ACK.PROBE.c.1.1.1.1.0",
    "$KV.amp_probe.k",
    "_INBOX.probe",
    "other.subject",
    "$SYS.REQ.SERVER.PING",
];

/// `user` logged in to `url`.
async fn login(url: &str, user: &str, password: &str) -> Result<async_nats::Client, String> {
    let connect = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(url);
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// What NATS refuses `user`, as "publish <subject>" and "subscribe <subject>" over
/// [`PROBES`] (from the server's permission violations).
async fn refused(url: &str, user: &str) -> BTreeSet<String> {
    use std::sync::{Arc, Mutex};
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().expect("lock").push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    let mut subscriptions = Vec::new();
    for subject in PROBES {
        client
            .publish(subject, "probe".into())
            .await
            .expect("publish");
        subscriptions.push(client.subscribe(subject).await.expect("subscribe"));
    }
    // A barrier: the server answers in order, so once the refusal of this publish (no user
    // may send outside AMP's subjects) is in, every refusal of the probes before it is too.
    let end = "zz.probes.end";
    client.publish(end, "end".into()).await.expect("publish");
    client.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let errors = loop {
        let errors = errors.lock().expect("lock").clone();
        if errors
            .iter()
            .any(|e| e.contains(&format!("Publish to \"{end}\"")))
        {
            break errors;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user}: the barrier's refusal never came: {errors:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut out = BTreeSet::new();
    for e in &errors {
        for (op, marker) in [
            ("publish", "Publish to \""),
            ("subscribe", "Subscription to \""),
        ] {
            if let Some((_, rest)) = e.split_once(marker) {
                out.insert(format!(
                    "{op} {}",
                    rest.split('"').next().unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// The NATS server configuration the chart renders, run by a real nats-server (JetStream on, a
/// temporary directory): its `accounts` block, with each `$AMP_NATS_<SERVICE>_PASSWORD`
/// defined as the password of the Secret key the StatefulSet feeds it from. Every service
/// user is allowed and refused exactly what `deploy/nats/auth.conf` allows and refuses it
/// (so the two stay equal), which is what each must not do (the router may not feed the
/// ingress stream, nor the others the federation stream; nobody leaves AMP's subjects); each
/// can do its job (ingest feeds a JetStream stream in account AMP, the router hears it), and
/// a client without the right password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_chart_bundled_nats_permissions_equal_deploy_auth_conf() {
    let chart_nats = NatsServer::start_with(&chart_nats_config(&[]));
    let deploy_nats = NatsServer::start_with(&nats_auth_config(password));

    for s in NATS_SERVICES {
        let from_chart = refused(&chart_nats.url(), s).await;
        let from_deploy = refused(&deploy_nats.url(), s).await;
        assert_eq!(
            from_chart, from_deploy,
            "{s}: the chart's NATS and deploy/nats/auth.conf differ"
        );
        let is = |what: &str| from_chart.contains(what);
        for outside in [
            "publish other.subject",
            "subscribe other.subject",
            "publish $SYS.REQ.SERVER.PING",
        ] {
            assert!(is(outside), "{s} may {outside}: {from_chart:?}");
        }
        for needed in [
            "publish amp.mbox.acme.bob",
            "publish amp.mboxp.1.acme.bob",
            "publish amp.registry.changed",
            "publish $JS.API.INFO",
            "publish $KV.amp_probe.k",
            "publish _INBOX.probe",
            "subscribe amp.ingress.acme",
            "subscribe _INBOX.probe",
        ] {
            assert!(!is(needed), "{s} may not {needed}: {from_chart:?}");
        }
        if s == "router" {
            for feed in [
                "publish amp.ingress.acme",
                "publish amp.ingress-1.acme.bob",
                "publish amp.limits.messages",
            ] {
                assert!(is(feed), "the router may {feed}: {from_chart:?}");
            }
            assert!(!is("publish amp.federation.acme"), "{from_chart:?}");
        } else {
            assert!(is("publish amp.federation.acme"), "{s}: {from_chart:?}");
            for feed in ["publish amp.ingress.acme", "publish amp.ingress-1.acme.bob"] {
                assert!(!is(feed), "{s} may not {feed}: {from_chart:?}");
            }
        }
    }

    // Their jobs: ingest feeds a stream (JetStream in account AMP), the router hears it.
    let url = chart_nats.url();
    let ingest = login(&url, "ingest", &password("ingest"))
        .await
        .expect("ingest");
    let router = login(&url, "router", &password("router"))
        .await
        .expect("router");
    let mut heard = router.subscribe("amp.ingress.>").await.expect("subscribe");
    router.flush().await.expect("flush");
    let js = async_nats::jetstream::new(ingest);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "AMP_PROBE".to_owned(),
        subjects: vec!["amp.ingress.>".to_owned()],
        ..Default::default()
    })
    .await
    .expect("ingest declares a stream");
    js.publish("amp.ingress.acme", "accepted".into())
        .await
        .expect("publish")
        .await
        .expect("the stream acknowledges");
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), {
        use futures::StreamExt;
        heard.next()
    })
    .await
    .expect("the router hears ingest")
    .expect("a message");
    assert_eq!(got.payload.as_ref(), b"accepted");

    // Without the right password: refused.
    let anonymous = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        async_nats::connect(&url),
    )
    .await;
    assert!(
        !matches!(anonymous, Ok(Ok(_))),
        "an anonymous client got in"
    );
    assert!(login(&url, "ingest", "wrong").await.is_err());
    assert!(
        login(&url, "delivery", &password("ingest")).await.is_err(),
        "one service's password opens another's user"
    );
    assert!(!chart_nats.log().contains(&password("ingest")));
}

/// The cluster's binaries on the NATS the chart renders, with a `nats.prefix`: each logs in as
/// its own user from its password file (as the chart mounts it), and a message crosses ingest,
/// the router and the mailbox with no permission refused on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_chart_bundled_nats_runs_the_cluster() {
    use crate::common::{agent, client, mailbox_ids, message_id, send};
    use amp_testkit::cluster::{Deployment, HEAVY, Topology};

    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start_with(&chart_nats_config(&["--set", "nats.prefix=blue"]));
    let secrets = tempfile::tempdir().expect("temp dir");
    for s in NATS_SERVICES {
        std::fs::write(
            secrets.path().join(format!("{s}.password")),
            password(s) + "\n",
        )
        .expect("write a password file");
    }
    let mut topology = Topology::new("chart.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    topology.prefix = "blue".to_owned();
    topology.nats_passwords = Some(secrets.path().to_owned());
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let alice = agent(&url, "acme", "alice").await;
    let bob = agent(&url, "acme", "bob").await;
    let id = message_id();
    send(
        &client(&url),
        &alice,
        bob.address(),
        &id,
        "through the chart",
    )
    .await
    .unwrap_or_else(|e| panic!("route: {e}\n{}", d.logs()));
    let deadline = tokio::time::Instant::now() + d.drain_timeout;
    while mailbox_ids(&url, &bob).await != [id.clone()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = d.logs().to_lowercase();
    assert!(!logs.contains("permissions violation"), "{}", d.logs());
}
