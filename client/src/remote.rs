//! Talking to a brick: a typed stub over an RPC connection. Used by the
//! client graph, the self-heal daemon, the command line and tests.
//!
//! It is the client side of the brick program, so it needs only the wire
//! types (`mortar-proto`) and the messenger (`mortar-net`), never the brick
//! server (`mortar-node`); keeping it here is what lets the client crate
//! not depend on the server (issue 10).

use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::{RpcClient, RpcError};
use mortar_proto::brick::{self as bp, BrickRequest, FopResult, PROGRAM_BRICK};
use mortar_proto::{Errno, FopError};

/// A connection to one brick.
#[derive(Debug, Clone)]
pub struct RemoteBrick {
    pub rpc: RpcClient,
}

/// Map a messenger failure to the errno a file operation reports.
pub fn rpc_to_fop(e: RpcError) -> FopError {
    FopError::new(Errno(e.errno()), e.to_string())
}

impl RemoteBrick {
    pub fn new(rpc: RpcClient) -> Self {
        RemoteBrick { rpc }
    }

    /// Send `q` with a raw payload; returns the reply and its payload.
    pub async fn call_with<Q: BrickRequest>(
        &self,
        q: &Q,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(Q::Reply, Bytes), FopError> {
        let (res, data): (FopResult<Q::Reply>, Bytes) = self
            .rpc
            .call_typed(PROGRAM_BRICK, Q::PROC, q, payload, timeout)
            .await
            .map_err(rpc_to_fop)?;
        Ok((res?, data))
    }

    pub async fn call<Q: BrickRequest>(
        &self,
        q: &Q,
        timeout: Duration,
    ) -> Result<Q::Reply, FopError> {
        Ok(self.call_with(q, Bytes::new(), timeout).await?.0)
    }

    /// Identify this client to the brick; required before anything else.
    /// `brick_path` names the brick meant (empty: whichever serves the
    /// port); another brick on the port refuses with `ENXIO`.
    pub async fn connect(
        &self,
        volume_id: &str,
        brick_path: &str,
        client_id: &str,
        client_name: &str,
        timeout: Duration,
    ) -> Result<bp::ConnectReply, FopError> {
        self.call(
            &bp::Connect {
                volume_id: volume_id.into(),
                client_id: client_id.into(),
                client_name: client_name.into(),
                brick_path: brick_path.into(),
            },
            timeout,
        )
        .await
    }

    pub async fn read(&self, q: &bp::Read, timeout: Duration) -> Result<Bytes, FopError> {
        Ok(self.call_with(q, Bytes::new(), timeout).await?.1)
    }

    pub async fn write(
        &self,
        q: &bp::Write,
        data: Bytes,
        timeout: Duration,
    ) -> Result<bp::WriteReply, FopError> {
        Ok(self.call_with(q, data, timeout).await?.0)
    }
}
