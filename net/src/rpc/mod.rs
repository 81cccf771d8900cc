//! The RPC messenger: request/reply over frames, on any transport.
//!
//! Bodies are encoded with postcard: a compact varint format with a written,
//! frozen wire specification (postcard 1.0), no schema compiler, and a small
//! dependency. Typical metadata calls fit in a few dozen bytes. File data
//! never goes through the codec; it travels as the frame's raw payload.

mod client;
pub mod echo;
mod server;

use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::frame::{FrameError, FrameLimits};
use crate::BoxFuture;

pub use client::{LinkState, RpcClient};
pub use server::{ConnInfo, RpcServer, ServerHandle, LISTEN_RESOLVE_WAIT_MS_MAX};

/// Program number the messenger keeps for itself (ping).
pub const PROGRAM_MESSENGER: u16 = 0;
/// The messenger's ping procedure: an empty request answered with an empty reply.
pub const PROC_PING: u16 = 0;

/// Tunables shared by the RPC client and server. Every queue is bounded and
/// every wait has a deadline; the defaults follow the original system where
/// it has one (ping-timeout 42 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RpcConfig {
    pub limits: FrameLimits,
    /// A connection that has delivered nothing for this long is declared
    /// dead (client and server side).
    pub ping_timeout: Duration,
    /// How often an idle client pings. Must be below `ping_timeout`.
    pub ping_interval: Duration,
    /// Deadline for a call made without an explicit one.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Calls a client may have outstanding at once; more wait (within
    /// their deadline) for a slot.
    pub client_calls_in_flight_max: usize,
    /// Requests one server connection may have executing at once; beyond
    /// that the server stops reading from the connection (back-pressure).
    pub server_calls_in_flight_max: usize,
    /// Frames queued for sending on one connection.
    pub send_queue_frames_max: usize,
    /// Server connections accepted at once; further connects wait.
    pub server_connections_max: usize,
    /// On graceful shutdown, how long running requests may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig::with_ping_timeout(Duration::from_secs(42))
    }
}

impl RpcConfig {
    /// Defaults with a given ping timeout; the ping interval follows it.
    pub fn with_ping_timeout(ping_timeout: Duration) -> Self {
        RpcConfig {
            limits: FrameLimits::default(),
            ping_timeout,
            // Pinging often is cheap (an empty frame), and the peer's idle
            // limit may be shorter than ours: keep well under any sane one.
            ping_interval: (ping_timeout / 4).min(Duration::from_secs(3)),
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            client_calls_in_flight_max: 1024,
            server_calls_in_flight_max: 64,
            send_queue_frames_max: 256,
            server_connections_max: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// Refuse configurations that cannot work, with the reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.ping_timeout.is_zero() || self.ping_interval.is_zero() {
            return Err("ping-timeout and ping interval must be non-zero".into());
        }
        if self.ping_interval >= self.ping_timeout {
            return Err(format!(
                "ping interval {:?} must be shorter than ping-timeout {:?}",
                self.ping_interval, self.ping_timeout
            ));
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err("reconnect backoff minimum exceeds its maximum".into());
        }
        for (what, v) in [
            ("client calls in flight", self.client_calls_in_flight_max),
            ("server calls in flight", self.server_calls_in_flight_max),
            ("send queue", self.send_queue_frames_max),
            ("server connections", self.server_connections_max),
        ] {
            if v == 0 {
                return Err(format!("{what} limit must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Messenger-level failure codes carried in error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultCode {
    /// The program exists but not this procedure (peer is older).
    ProcUnavail,
    /// The request body did not decode.
    GarbageArgs,
    /// The handler failed in a way it could not express as a result.
    SystemErr,
    /// The server is shutting down and did not run the request.
    ShuttingDown,
}

/// An error reply's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Fault {
    pub code: FaultCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Self {
        Fault {
            code,
            message: message.into(),
        }
    }
}

/// Why a call failed, worded for the operator who reads it in a log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// ENOTCONN: the connection is down or went down while the call waited.
    #[error("transport endpoint is not connected ({endpoint}: {detail})")]
    NotConnected { endpoint: String, detail: String },
    /// ETIMEDOUT: the call's deadline passed.
    #[error("call {program}/{procedure} to {endpoint} timed out after {after:?}: the server is slow, overloaded or unreachable")]
    Timeout {
        endpoint: String,
        program: u16,
        procedure: u16,
        after: Duration,
    },
    #[error("server {endpoint} refused call {program}/{procedure}: {fault}")]
    Fault {
        endpoint: String,
        program: u16,
        procedure: u16,
        fault: Fault,
    },
    #[error("could not encode or decode a message body: {0}")]
    Codec(String),
    #[error("message not sent: {0}")]
    Frame(FrameError),
    #[error("client for {0} was closed")]
    Closed(String),
}

impl RpcError {
    /// The errno a filesystem layer should report for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            RpcError::NotConnected { .. } | RpcError::Closed(_) => libc_errno::ENOTCONN,
            RpcError::Timeout { .. } => libc_errno::ETIMEDOUT,
            RpcError::Fault { .. } | RpcError::Codec(_) => libc_errno::EPROTO,
            RpcError::Frame(_) => libc_errno::EMSGSIZE,
        }
    }
}

/// The few errno values the messenger needs, without a libc dependency.
pub mod libc_errno {
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const EPROTO: i32 = 71;
    pub const EMSGSIZE: i32 = 90;
}

/// A request as a service sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub procedure: u16,
    pub body: Bytes,
    pub payload: Bytes,
    pub conn: ConnInfo,
}

impl Request {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Fault> {
        decode_body(&self.body).map_err(|e| Fault::new(FaultCode::GarbageArgs, e))
    }
}

/// A successful reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub body: Bytes,
    pub payload: Bytes,
}

impl Reply {
    pub fn encode<T: Serialize>(value: &T) -> Result<Reply, Fault> {
        Self::with_payload(value, Bytes::new())
    }

    pub fn with_payload<T: Serialize>(value: &T, payload: Bytes) -> Result<Reply, Fault> {
        let body = encode_body(value).map_err(|e| Fault::new(FaultCode::SystemErr, e))?;
        Ok(Reply { body, payload })
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        decode_body(&self.body).map_err(RpcError::Codec)
    }
}

/// A program served over the messenger (a brick's file operations, the
/// management protocol...). Handlers return `'static` futures so the server
/// can run several requests of one connection concurrently.
pub trait Service: Send + Sync + 'static {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>>;

    /// The connection is gone (closed, or declared dead by the ping
    /// timeout). Services release what the peer held here, e.g. locks.
    fn disconnected(&self, _conn: &ConnInfo) {}
}

/// Frames written before a flush when more are queued: bounds how long one
/// burst can delay the flush of the first frame in it.
const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// Owns a connection's sending side: writes queued frames, coalescing what
/// is already queued, and flushes whenever the queue runs dry.
pub(crate) async fn write_loop(
    mut sink: Box<dyn crate::transport::FrameSink>,
    mut rx: tokio::sync::mpsc::Receiver<crate::frame::EncodedFrame>,
) -> std::io::Result<()> {
    while let Some(f) = rx.recv().await {
        sink.send(f).await?;
        let mut batch = 1;
        while batch < WRITE_BATCH_FRAMES_MAX {
            match rx.try_recv() {
                Ok(f) => {
                    sink.send(f).await?;
                    batch += 1;
                }
                Err(_) => break,
            }
        }
        sink.flush().await?;
    }
    sink.close().await
}

pub fn encode_body<T: Serialize>(value: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|e| format!("encode: {e}"))
}

pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_pings_well_inside_the_timeout() {
        let c = RpcConfig::default();
        c.validate().unwrap();
        assert_eq!(c.ping_timeout, Duration::from_secs(42));
        assert!(c.ping_interval * 3 < c.ping_timeout);
        assert_eq!(c.ping_interval, Duration::from_secs(3));
        assert_eq!(
            RpcConfig::with_ping_timeout(Duration::from_secs(4)).ping_interval,
            Duration::from_secs(1)
        );
        let bad = RpcConfig {
            ping_interval: c.ping_timeout,
            ..c
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn errors_name_the_endpoint_and_the_errno() {
        let e = RpcError::NotConnected {
            endpoint: "tcp:10.0.0.1:49152".into(),
            detail: "connection reset".into(),
        };
        assert!(e
            .to_string()
            .starts_with("transport endpoint is not connected"));
        assert!(e.to_string().contains("10.0.0.1"));
        assert_eq!(e.errno(), 107);
    }
}
