//! The live protocol over WebSocket: the opening handshake (RFC 6455
//! section 4.2) on an HTTP/1.1 upgrade, and the connection's two halves
//! for the hub, over `tokio-tungstenite`.
//!
//! Each outgoing text message is the hub's shared buffer, framed as it is:
//! it was built from Rust strings, so it is UTF-8 already and is not
//! checked again per subscriber.

use std::io;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use busbar_fanout::connection::{Flow, Inbound, Incoming, Outbound};
use busbar_fanout::{CloseReason, Outgoing, Text};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

/// The upgraded connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Why an upgrade request is not a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAHandshake(pub &'static str);

/// A checked handshake request: what is needed to answer and upgrade it.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake").finish_non_exhaustive()
    }
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl Handshake {
    /// Checks that `request` opens a WebSocket (GET, `Connection: upgrade`,
    /// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a key) and takes
    /// its upgrade.
    ///
    /// # Errors
    /// What is missing.
    pub fn from_request(request: &mut Request<Body>) -> Result<Handshake, NotAHandshake> {
        if request.method() != Method::GET {
            return Err(NotAHandshake("a WebSocket handshake is a GET request"));
        }
        let headers = request.headers();
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(NotAHandshake("`Connection: upgrade` is missing"));
        }
        if !header_is(headers, header::UPGRADE, "websocket") {
            return Err(NotAHandshake("`Upgrade: websocket` is missing"));
        }
        if !header_is(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(NotAHandshake("`Sec-WebSocket-Version: 13` is missing"));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotAHandshake("`Sec-WebSocket-Key` is missing"))?;
        let on_upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(NotAHandshake("the connection cannot be upgraded"))?;
        Ok(Handshake { key, on_upgrade })
    }

    /// Answers `101 Switching Protocols` and, once the client has it, runs
    /// `serve` with the socket (limited to `max_message_bytes` per message
    /// and frame).
    pub fn accept<F, Fut>(self, max_message_bytes: usize, serve: F) -> Response<Body>
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message_bytes))
                .max_frame_size(Some(max_message_bytes));
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            serve(socket).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        response
    }
}

/// A WebSocket's receiving half.
pub struct WsInbound(SplitStream<Socket>);

/// A WebSocket's sending half.
pub struct WsOutbound(SplitSink<Socket, Message>);

/// The two halves of `socket`.
pub fn split(socket: Socket) -> (WsInbound, WsOutbound) {
    let (sink, stream) = socket.split();
    (WsInbound(stream), WsOutbound(sink))
}

impl Inbound for WsInbound {
    async fn next(&mut self) -> Incoming {
        match self.0.next().await {
            Some(Ok(Message::Text(text))) => match Text::from_utf8(Bytes::from(text)) {
                Ok(text) => Incoming::Text(text),
                Err(_) => Incoming::Violation(CloseReason {
                    code: 1007,
                    reason: "text that is not UTF-8",
                }),
            },
            Some(Ok(Message::Binary(_))) => Incoming::Refused {
                reason: "unsupported",
                message: "send JSON text messages".to_owned(),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Heard,
            Some(Ok(Message::Close(_))) => Incoming::CloseFrame,
            Some(Err(tungstenite::Error::Capacity(_))) => Incoming::Violation(CloseReason {
                code: 1009,
                reason: "message too big",
            }),
            Some(Err(tungstenite::Error::Protocol(_))) => Incoming::Violation(CloseReason {
                code: 1002,
                reason: "protocol error",
            }),
            Some(Err(tungstenite::Error::Utf8)) => Incoming::Violation(CloseReason {
                code: 1007,
                reason: "text that is not UTF-8",
            }),
            Some(Err(_)) | None => Incoming::Closed,
        }
    }

    fn has_heartbeats(&self) -> bool {
        true
    }
}

/// The tungstenite message of an outgoing one.
fn message(msg: Outgoing) -> Message {
    match msg {
        Outgoing::Text(text) => {
            // SAFETY: a `Text` is UTF-8 by construction (see its docs).
            Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(text.into_bytes()) })
        }
        Outgoing::Ping => Message::Ping(Bytes::new()),
        Outgoing::Close(reason) => Message::Close(reason.map(|r| CloseFrame {
            code: CloseCode::from(r.code),
            reason: Utf8Bytes::from_static(r.reason),
        })),
    }
}

impl Outbound for WsOutbound {
    async fn write(&mut self, batch: &mut Vec<Outgoing>) -> io::Result<Flow> {
        let mut flow = Flow::More;
        for msg in batch.drain(..) {
            if matches!(msg, Outgoing::Close(_)) {
                flow = Flow::Done;
            }
            self.0.feed(message(msg)).await.map_err(io::Error::other)?;
            if flow == Flow::Done {
                break;
            }
        }
        self.0.flush().await.map_err(io::Error::other)?;
        Ok(flow)
    }

    async fn close(&mut self) {
        let _ = self.0.close().await;
    }
}
