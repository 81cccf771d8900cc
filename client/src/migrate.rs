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
use crate::mgmt_rpc::cli_call_flat;

/// How often progress goes to mgmtd while files move.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long to wait for the volume's bricks before starting.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

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

/// Run the migration of `volume` to the end; progress and the outcome go
/// to the mgmtd at `mgmt`. Returns the final figures.
pub async fn run_migration(
    rt: &Runtime,
    mgmt: &Endpoint,
    volume: &str,
) -> Result<MigrationStats, String> {
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    rpc.wait_connected(Duration::from_secs(20))
        .await
        .map_err(|e| format!("cannot reach mgmtd at {mgmt}: {e}"))?;
    let client = match Client::mount(rt, mgmt, volume).await {
        Ok(c) => c,
        Err(e) => {
            let st = MigrationStats {
                failures: 1,
                last_error: Some(format!("cannot mount {volume}: {e}")),
                ..Default::default()
            };
            let _ = send(&rpc, view(volume, &st, MigrationView::FAILED)).await;
            return Err(st.last_error.unwrap_or_default());
        }
    };
    client.wait_all_bricks(CONNECT_WAIT).await;
    let latest = Arc::new(Mutex::new(None::<MigrationStats>));
    let reporter = {
        let (rt2, rpc, latest, volume) =
            (rt.clone(), rpc.clone(), latest.clone(), volume.to_string());
        rt.spawn(async move {
            loop {
                rt2.clock().sleep(REPORT_EVERY).await;
                let now = latest.lock().expect("latest").take();
                if let Some(st) = now {
                    if let Err(e) = send(&rpc, view(&volume, &st, MigrationView::IN_PROGRESS)).await
                    {
                        tracing::warn!(error = %e, "cannot report migration progress");
                    }
                }
            }
        })
    };
    let sink = latest.clone();
    let result = client
        .migrate_drained(&move |st: &MigrationStats| {
            *sink.lock().expect("latest") = Some(st.clone());
        })
        .await;
    reporter.abort();
    client.unmount();
    let (st, status) = match &result {
        Ok(st) if st.failures == 0 => (st.clone(), MigrationView::COMPLETED),
        Ok(st) => (st.clone(), MigrationView::FAILED),
        Err(e) => (
            MigrationStats {
                failures: 1,
                last_error: Some(e.clone()),
                ..Default::default()
            },
            MigrationView::FAILED,
        ),
    };
    tracing::info!(
        volume,
        status,
        files = st.files,
        bytes = st.bytes,
        failures = st.failures,
        "migration finished"
    );
    // The outcome must reach mgmtd: retry for a while.
    let mut last = Ok(());
    for _ in 0..10 {
        last = send(&rpc, view(volume, &st, status)).await;
        if last.is_ok() {
            break;
        }
        rt.clock().sleep(Duration::from_secs(1)).await;
    }
    rpc.close();
    last.map_err(|e| format!("migration {status}, but mgmtd was not told: {e}"))?;
    result
}
