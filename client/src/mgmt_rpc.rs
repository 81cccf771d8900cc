//! The client side of the management CLI program: how clients, the
//! self-heal daemon, migration workers and the `mortar` CLI ask an mgmtd
//! something. The wire types are `mortar_proto::mgmt`'s.

use std::time::Duration;

use mortar_net::rpc::{RpcClient, RpcError};
use mortar_proto::mgmt::{CliReply, CliRequest, PROC_CLI, PROGRAM_MGMT_CLI};

/// Send one CLI request over `rpc`. The outer error is the transport's
/// (unreachable, timed out); the inner one is mgmtd refusing, with its
/// reason.
pub async fn cli_call(
    rpc: &RpcClient,
    req: &CliRequest,
    timeout: Duration,
) -> Result<Result<CliReply, String>, RpcError> {
    rpc.call_typed(
        PROGRAM_MGMT_CLI,
        PROC_CLI,
        req,
        bytes::Bytes::new(),
        timeout,
    )
    .await
    .map(|(reply, _)| reply)
}

/// [`cli_call`] with both errors as one text (for callers that only log or
/// pass the reason on).
pub async fn cli_call_flat(
    rpc: &RpcClient,
    req: &CliRequest,
    timeout: Duration,
) -> Result<CliReply, String> {
    match cli_call(rpc, req, timeout).await {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    }
}
