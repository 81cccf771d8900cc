//! A diagnostic program: echo, delayed echo, and a call counter.
//!
//! Served by every Mortar daemon-to-be for reachability checks, and used by
//! the messenger's own tests and benchmark on every transport.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Fault, FaultCode, Reply, Request, Service};
use crate::time::Clock;
use crate::BoxFuture;

pub const PROGRAM_ECHO: u16 = 0x7e57;
/// Reply with the request's body and payload.
pub const PROC_ECHO: u16 = 1;
/// Body: postcard `u64` milliseconds. Sleep that long, then echo the body.
pub const PROC_SLEEP: u16 = 2;
/// Reply with how many calls (of any procedure) this service has run.
pub const PROC_COUNT: u16 = 3;
/// Panic inside the handler (tests that a panic becomes an error reply).
pub const PROC_PANIC: u16 = 4;
/// Accept the payload and reply with nothing (a write-shaped call).
pub const PROC_SINK: u16 = 5;

#[derive(Debug, Default)]
pub struct EchoService {
    clock: Clock,
    calls: AtomicU64,
    disconnects: AtomicU64,
}

impl EchoService {
    pub fn new() -> Arc<Self> {
        Arc::new(EchoService::default())
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Acquire)
    }
}

impl Service for Arc<EchoService> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let me = self.clone();
        Box::pin(async move {
            let n = me.calls.fetch_add(1, Ordering::AcqRel) + 1;
            match req.procedure {
                PROC_ECHO => Ok(Reply {
                    body: req.body,
                    payload: req.payload,
                }),
                PROC_SLEEP => {
                    let ms: u64 = req.decode()?;
                    me.clock.sleep(Duration::from_millis(ms)).await;
                    Ok(Reply {
                        body: req.body,
                        payload: req.payload,
                    })
                }
                PROC_COUNT => Reply::encode(&n),
                PROC_PANIC => panic!("echo service asked to panic"),
                PROC_SINK => Ok(Reply::default()),
                p => Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("echo has no procedure {p}"),
                )),
            }
        })
    }

    fn disconnected(&self, _conn: &super::ConnInfo) {
        self.disconnects.fetch_add(1, Ordering::AcqRel);
    }
}
