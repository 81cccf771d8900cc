//! The migration worker behind `remove-brick start`: mounts the volume,
//! moves every file off the draining sets and reports progress to the
//! mgmtd that started it (which `remove-brick status` reads). Runs as
//! `mortar migrate` in production and as a process on a simulated host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::{Endpoint, Runtime};
use mortar_proto::mgmt::{CliRequest, MigrationView};

use crate::api::Client;
use crate::distribute::MigrationStats;
use crate::error::ClientError;
use crate::mgmt_rpc::cli_call_flat;

/// How often progress goes to mgmtd while files move.
const REPORT_EVERY_SECS: u64 = 1;
/// How long to wait for the volume's bricks before starting.
const BRICKS_WAIT_SECS: u64 = 30;
/// How long to wait for the mgmtd that started the migration.
const MGMT_CONNECT_WAIT_SECS: u64 = 20;
/// Attempts (a second apart) to tell mgmtd how the migration ended.
const OUTCOME_SENDS_MAX: u32 = 10;

fn view(volume: &str, st: &MigrationStats, status: &str) -> MigrationView {
    MigrationView {
        volume: volume.to_string(),
        node: String::new(),
        status: status.to_string(),
        dirs: st.dirs,
        files: st.files,
        bytes: st.bytes,
        failures: st.failures,
        last_error: st.last_error.clone(),
        bricks: Vec::new(),
    }
}

async fn send(rpc: &RpcClient, v: MigrationView) -> Result<(), String> {
    cli_call_flat(
        rpc,
        &CliRequest::MigrationReport(v),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
}

/// The outcome as the mgmtd that started the migration is told it.
fn outcome(result: &Result<MigrationStats, ClientError>) -> (MigrationStats, &'static str) {
    match result {
        Ok(st) if st.failures == 0 => (st.clone(), MigrationView::COMPLETED),
        Ok(st) => (st.clone(), MigrationView::FAILED),
        Err(e) => (
            MigrationStats {
                failures: 1,
                last_error: Some(e.to_string()),
                ..Default::default()
            },
            MigrationView::FAILED,
        ),
    }
}

/// Send progress to mgmtd every [`REPORT_EVERY_SECS`] while files move;
/// `latest` holds the newest figures not yet sent.
fn spawn_reporter(
    rt: &Runtime,
    rpc: &RpcClient,
    latest: Arc<Mutex<Option<MigrationStats>>>,
    volume: &str,
) -> tokio::task::JoinHandle<Option<()>> {
    let (rt2, rpc, volume) = (rt.clone(), rpc.clone(), volume.to_string());
    rt.spawn(async move {
        loop {
            rt2.clock()
                .sleep(Duration::from_secs(REPORT_EVERY_SECS))
                .await;
            let now = latest.lock().expect("latest").take();
            if let Some(st) = now {
                if let Err(e) = send(&rpc, view(&volume, &st, MigrationView::IN_PROGRESS)).await {
                    tracing::warn!(error = %e, "cannot report migration progress");
                }
            }
        }
    })
}

/// Tell mgmtd the outcome; it must arrive, so retry for a while.
async fn send_outcome(rt: &Runtime, rpc: &RpcClient, v: MigrationView) -> Result<(), ClientError> {
    let status = v.status.clone();
    let mut last = Ok(());
    for _ in 0..OUTCOME_SENDS_MAX {
        last = send(rpc, v.clone()).await;
        if last.is_ok() {
            break;
        }
        rt.clock().sleep(Duration::from_secs(1)).await;
    }
    last.map_err(|e| ClientError::Mgmt(format!("migration {status}, but mgmtd was not told: {e}")))
}

/// Run the migration of `volume` to the end; progress and the outcome go
/// to the mgmtd at `mgmt`. Returns the final figures.
pub async fn run_migration(
    rt: &Runtime,
    mgmt: &Endpoint,
    volume: &str,
) -> Result<MigrationStats, ClientError> {
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    rpc.wait_connected(Duration::from_secs(MGMT_CONNECT_WAIT_SECS))
        .await
        .map_err(|e| ClientError::Mgmt(format!("cannot reach mgmtd at {mgmt}: {e}")))?;
    let client = match Client::mount(rt, mgmt, volume).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot mount {volume}: {e}");
            let st = MigrationStats {
                failures: 1,
                last_error: Some(why.clone()),
                ..Default::default()
            };
            let _ = send(&rpc, view(volume, &st, MigrationView::FAILED)).await;
            return Err(ClientError::Migration(why));
        }
    };
    client
        .wait_all_bricks(Duration::from_secs(BRICKS_WAIT_SECS))
        .await;
    let latest = Arc::new(Mutex::new(None::<MigrationStats>));
    let reporter = spawn_reporter(rt, &rpc, latest.clone(), volume);
    let result = client
        .migrate_drained(&move |st: &MigrationStats| {
            *latest.lock().expect("latest") = Some(st.clone());
        })
        .await;
    reporter.abort();
    client.unmount();
    let (st, status) = outcome(&result);
    tracing::info!(
        volume,
        status,
        files = st.files,
        bytes = st.bytes,
        failures = st.failures,
        "migration finished"
    );
    let sent = send_outcome(rt, &rpc, view(volume, &st, status)).await;
    rpc.close();
    sent?;
    result
}
