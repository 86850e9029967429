//! WebSocket push (spec 08, 12.5; SPEC-CHECKLIST Part 2.2 and §4.8): [`Client::subscribe`]
//! authenticates with the first frame and yields [`Frame`]s; [`Subscription`] also acks,
//! pings and routes over the same socket.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt as _, Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Client, api_error, signed_route};
use crate::error::{ClientError, Result};
use crate::identity::Identity;
use crate::types::{Message, RouteOptions, RouteResult};

/// How long connecting (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the provider may take to answer the `auth` frame (it closes at 10 s itself).
const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `data` of the `connected` frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    /// The authenticated agent's address.
    #[serde(default)]
    pub address: String,
    /// Messages queued when the socket connected (replays follow).
    #[serde(default)]
    pub pending_count: u64,
}

/// A `message.delivered` receipt (only for messages sent with `receipt: true`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredReceipt {
    /// The message id.
    #[serde(default)]
    pub id: String,
    /// The recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// When it was delivered.
    #[serde(default)]
    pub delivered_at: Option<String>,
    /// How (`websocket`, `webhook`, `relay`).
    #[serde(default)]
    pub method: Option<String>,
    /// What was proven (spec 12.2).
    #[serde(default)]
    pub basis: Option<String>,
}

/// A `message.read` receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReceipt {
    /// The message id.
    #[serde(default)]
    pub id: String,
    /// When the recipient read it.
    #[serde(default)]
    pub read_at: Option<String>,
    /// Who read it, when the provider says.
    #[serde(default)]
    pub by: Option<String>,
}

/// A frame from the provider.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Frame {
    /// `connected`; [`Client::subscribe`] consumes the first one, so this is seen only if
    /// the provider sends another.
    Connected(Connected),
    /// `message.new`: a message for this agent; [`Message::replay`] is set on replays of
    /// messages queued before the socket connected (either `replay` place is honoured).
    Message(Box<Message>),
    /// `message.delivered`.
    Delivered(DeliveredReceipt),
    /// `message.read`.
    Read(ReadReceipt),
    /// `pong`, the answer to [`Subscription::ping`].
    Pong {
        /// The provider's clock.
        timestamp: Option<String>,
    },
    /// `route.result`, the answer to [`Subscription::route`] (§4.8).
    RouteResult {
        /// The `ref` the route frame carried.
        reference: Option<String>,
        /// The route answer.
        result: RouteResult,
    },
    /// `error`: `unauthorized` (then close), `invalid_recipient`, `invalid_request`, … with
    /// the `ref` of the route frame it answers, if any.
    Error {
        /// The error code.
        error: String,
        /// The message.
        message: String,
        /// The `ref` of the frame it answers.
        reference: Option<String>,
    },
    /// A frame type this SDK does not know, kept whole.
    Other {
        /// Its `type`.
        kind: String,
        /// The frame text.
        text: String,
    },
}

/// Options of [`Client::subscribe_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions {
    /// Bind the client end to this address first: a load generator holding more sockets
    /// than one source address has ephemeral ports spreads them over `127.0.0.x`.
    pub local_addr: Option<IpAddr>,
}

/// An authenticated WebSocket: a [`Stream`] of [`Frame`]s that can also send. It ends
/// (`None`) after a normal close; any other close is yielded once as
/// [`ClientError::Closed`] (4001 unauthorized, 4008 auth timeout, 1008, 1001 idle).
pub struct Subscription {
    ws: Socket,
    connected: Connected,
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("connected", &self.connected)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens `<api>/ws`, authenticates as `identity` with the first frame and waits for
    /// `connected`. Replayed messages (`replay: true`) follow on the returned stream.
    ///
    /// Fails when the connection or upgrade fails ([`ClientError::Api`] with the HTTP status
    /// for a refused upgrade), on an `error` frame ([`ClientError::Socket`]), on a close
    /// ([`ClientError::Closed`]), or when no `connected` frame arrives in time.
    pub async fn subscribe(&self, identity: &Identity) -> Result<Subscription> {
        self.subscribe_with(identity, SubscribeOptions::default())
            .await
    }

    /// [`Client::subscribe`] with options.
    ///
    /// Fails as [`Client::subscribe`] does, or when `local_addr` cannot be bound.
    pub async fn subscribe_with(
        &self,
        identity: &Identity,
        opts: SubscribeOptions,
    ) -> Result<Subscription> {
        let mut ws = tokio::time::timeout(CONNECT_TIMEOUT, connect(self, opts))
            .await
            .map_err(|_| ClientError::transport("WebSocket connect timed out"))??;
        let auth = serde_json::json!({ "type": "auth", "token": identity.api_key() });
        ws.send(WsMessage::text(auth.to_string())).await?;
        let first = tokio::time::timeout(AUTH_TIMEOUT, next_frame(&mut ws))
            .await
            .map_err(|_| ClientError::transport("no answer to the auth frame"))?;
        match first {
            Some(Ok(Frame::Connected(connected))) => Ok(Subscription {
                ws,
                connected,
                done: false,
            }),
            Some(Ok(Frame::Error { error, message, .. })) => {
                let _ = ws.close(None).await;
                Err(ClientError::Socket { error, message })
            }
            Some(Ok(other)) => {
                let _ = ws.close(None).await;
                Err(ClientError::Invalid(format!(
                    "the provider answered auth with {other:?} instead of `connected`"
                )))
            }
            Some(Err(e)) => Err(e),
            None => Err(ClientError::Closed {
                code: Some(1000),
                reason: "closed before `connected`".into(),
            }),
        }
    }
}

/// TCP (bound to `local_addr` when asked), then TLS when `wss`, then the upgrade.
async fn connect(client: &Client, opts: SubscribeOptions) -> Result<Socket> {
    let url = client.ws_url();
    let host = url
        .host_str()
        .ok_or_else(|| ClientError::Invalid(format!("{url} has no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ClientError::Invalid(format!("{url} has no port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = None;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(ClientError::transport)?
        .collect();
    let mut stream = None;
    for addr in addrs {
        match tcp(addr, opts.local_addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(ClientError::transport(e)),
        (None, None) => {
            return Err(ClientError::transport(format!("{host} did not resolve")));
        }
    };
    #[cfg(feature = "tls")]
    let upgraded = tokio_tungstenite::client_async_tls(url.as_str(), stream).await;
    #[cfg(not(feature = "tls"))]
    let upgraded = {
        if url.scheme() == "wss" {
            return Err(ClientError::Invalid(
                "wss:// needs amp-client built with the `tls` feature".into(),
            ));
        }
        tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream)).await
    };
    match upgraded {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = reqwest::StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
            Err(api_error(
                status,
                None,
                resp.body().as_deref().unwrap_or(&[]),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn tcp(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// Reads the next protocol frame, skipping control frames. `None`: closed normally or gone.
async fn next_frame(ws: &mut Socket) -> Option<Result<Frame>> {
    loop {
        let msg = ws.next().await?;
        if let Some(out) = interpret(msg) {
            return out;
        }
    }
}

/// One WebSocket message as a frame: `None` to skip it (control frames), `Some(None)` for
/// the end of the stream.
fn interpret(
    msg: std::result::Result<WsMessage, tokio_tungstenite::tungstenite::Error>,
) -> Option<Option<Result<Frame>>> {
    use tokio_tungstenite::tungstenite::Error as E;
    match msg {
        Ok(WsMessage::Text(t)) => Some(Some(parse_frame(t.as_str()))),
        Ok(WsMessage::Binary(b)) => Some(Some(
            std::str::from_utf8(&b)
                .map_err(|_| ClientError::Invalid("binary frame is not UTF-8".into()))
                .and_then(parse_frame),
        )),
        Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => None,
        Ok(WsMessage::Close(frame)) => match frame {
            Some(f) if f.code != CloseCode::Normal => Some(Some(Err(ClientError::Closed {
                code: Some(u16::from(f.code)),
                reason: f.reason.as_str().to_owned(),
            }))),
            _ => Some(None),
        },
        Err(E::ConnectionClosed | E::AlreadyClosed) => Some(None),
        Err(E::Protocol(p)) => Some(Some(Err(ClientError::Closed {
            code: None,
            reason: p.to_string(),
        }))),
        Err(e) => Some(Some(Err(e.into()))),
    }
}

/// Parses one frame's text.
///
/// Fails when the text is not a JSON object with a `type`, or a known type's `data` does
/// not have its shape.
pub fn parse_frame(text: &str) -> Result<Frame> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: String,
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
        #[serde(default)]
        replay: bool,
        #[serde(default)]
        error: Option<Value>,
        #[serde(default)]
        message: Option<String>,
        #[serde(rename = "ref", default)]
        reference: Option<Value>,
        #[serde(default)]
        timestamp: Option<String>,
    }
    fn data<T: for<'de> Deserialize<'de>>(d: Option<&RawValue>, what: &'static str) -> Result<T> {
        serde_json::from_str(d.map_or("{}", RawValue::get))
            .map_err(|e| ClientError::decode(what, e))
    }
    let reference = |r: Option<Value>| {
        r.and_then(|v| match v {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    };
    let w: Wire<'_> =
        serde_json::from_str(text).map_err(|e| ClientError::decode("WebSocket frame", e))?;
    Ok(match w.kind.as_str() {
        "connected" => Frame::Connected(data(w.data, "connected frame")?),
        "message.new" => {
            let mut m: Box<Message> = data(w.data, "message.new frame")?;
            m.replay |= w.replay;
            Frame::Message(m)
        }
        "message.delivered" => Frame::Delivered(data(w.data, "message.delivered frame")?),
        "message.read" => Frame::Read(data(w.data, "message.read frame")?),
        "pong" => Frame::Pong {
            timestamp: w.timestamp,
        },
        "route.result" => Frame::RouteResult {
            reference: reference(w.reference),
            result: data(w.data, "route.result frame")?,
        },
        "error" => {
            // The code at the top level (Part 2.2), or inside `data` as some servers send it.
            #[derive(Deserialize, Default)]
            struct Inner {
                error: Option<String>,
                code: Option<String>,
                message: Option<String>,
            }
            let inner: Inner = w
                .data
                .and_then(|d| serde_json::from_str(d.get()).ok())
                .unwrap_or_default();
            let error = match w.error {
                Some(Value::String(s)) => Some(s),
                _ => None,
            }
            .or(inner.error)
            .or(inner.code)
            .unwrap_or_else(|| "error".to_owned());
            Frame::Error {
                error,
                message: w.message.or(inner.message).unwrap_or_default(),
                reference: reference(w.reference),
            }
        }
        _ => Frame::Other {
            kind: w.kind,
            text: text.to_owned(),
        },
    })
}

impl Subscription {
    /// What the provider said on connecting.
    pub fn connected(&self) -> &Connected {
        &self.connected
    }

    /// Acknowledges a message (`message.ack`): it leaves the mailbox, as with the REST ack.
    ///
    /// Fails when the socket is closed.
    pub async fn ack(&mut self, id: &str) -> Result<()> {
        self.send_json(&serde_json::json!({ "type": "message.ack", "id": id }))
            .await
    }

    /// Sends `ping` (answered by [`Frame::Pong`]); the provider closes sockets idle for
    /// five minutes, so a long-lived subscriber pings every 30 s.
    ///
    /// Fails when the socket is closed.
    pub async fn ping(&mut self) -> Result<()> {
        self.send_json(&serde_json::json!({ "type": "ping" })).await
    }

    /// Signs and sends a message over the socket (`route` frame with `ref`), answered by a
    /// [`Frame::RouteResult`] or [`Frame::Error`] carrying the same `reference`.
    ///
    /// Fails when `payload` is not JSON or the socket is closed.
    pub async fn route(
        &mut self,
        identity: &Identity,
        to: &str,
        subject: &str,
        payload: &str,
        opts: &RouteOptions<'_>,
        reference: &str,
    ) -> Result<()> {
        #[derive(Serialize)]
        struct RouteFrame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(rename = "ref")]
            reference: &'a str,
            data: crate::client::RouteBody<'a>,
        }
        let data = signed_route(identity, to, subject, payload, opts)?;
        self.send_json(&RouteFrame {
            kind: "route",
            reference,
            data,
        })
        .await
    }

    /// Sends a frame exactly as given: provider extensions the SDK has no method for.
    ///
    /// Fails when the socket is closed.
    pub async fn send_raw(&mut self, frame: &str) -> Result<()> {
        self.ws.send(WsMessage::text(frame)).await?;
        Ok(())
    }

    /// Closes the socket normally.
    ///
    /// Fails when the close frame cannot be sent.
    pub async fn close(mut self) -> Result<()> {
        self.done = true;
        match self.ws.close(None).await {
            Ok(())
            | Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            ) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn send_json(&mut self, v: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string(v).map_err(|e| ClientError::decode("frame", e))?;
        self.ws.send(WsMessage::text(text)).await?;
        Ok(())
    }
}

impl Stream for Subscription {
    type Item = Result<Frame>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let msg = match self.ws.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(m)) => m,
            };
            match interpret(msg) {
                None => continue,
                Some(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Some(item)) => {
                    if matches!(
                        item,
                        Err(ClientError::Closed { .. } | ClientError::Transport(_))
                    ) {
                        self.done = true;
                    }
                    return Poll::Ready(Some(item));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        let f = parse_frame(
            r#"{"type":"connected","data":{"address":"a@t.x.test","pending_count":2}}"#,
        )
        .expect("connected");
        assert!(matches!(f, Frame::Connected(c) if c.pending_count == 2));

        let f = parse_frame(
            r#"{"type":"message.new","replay":true,"data":{"id":"msg_1_a","envelope":{"id":"msg_1_a","from":"a","to":"b","subject":"s","signature":"x"},"payload":{"n":1.50}}}"#,
        )
        .expect("message.new");
        match f {
            Frame::Message(m) => {
                assert!(m.replay);
                assert_eq!(m.payload.get(), r#"{"n":1.50}"#);
            }
            other => panic!("{other:?}"),
        }
        // `replay` inside data only.
        let f = parse_frame(
            r#"{"type":"message.new","data":{"replay":true,"envelope":{"id":"msg_1_a"},"payload":{}}}"#,
        )
        .expect("replay in data");
        assert!(matches!(f, Frame::Message(m) if m.replay && m.id() == "msg_1_a"));

        let f =
            parse_frame(r#"{"type":"error","error":"invalid_recipient","message":"no","ref":7}"#)
                .expect("error");
        assert!(
            matches!(f, Frame::Error { error, reference: Some(r), .. } if error == "invalid_recipient" && r == "7")
        );

        let f = parse_frame(
            r#"{"type":"route.result","ref":"r1","data":{"id":"msg_2_b","status":"queued"}}"#,
        )
        .expect("route.result");
        assert!(
            matches!(f, Frame::RouteResult { reference: Some(r), result } if r == "r1" && result.id == "msg_2_b")
        );

        let f = parse_frame(r#"{"type":"pong","timestamp":"2025-01-01T00:00:00Z"}"#).expect("pong");
        assert!(matches!(f, Frame::Pong { timestamp: Some(_) }));
        let f = parse_frame(r#"{"type":"future.thing","x":1}"#).expect("other");
        assert!(matches!(f, Frame::Other { kind, .. } if kind == "future.thing"));
        assert!(parse_frame("[]").is_err());
        assert!(parse_frame(r#"{"type":"message.new","data":{"payload":1}}"#).is_err());
    }
}
