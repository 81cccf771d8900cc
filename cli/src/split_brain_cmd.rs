//! `mortar volume heal NAME split-brain bigger-file FILE | latest-mtime
//! FILE | source-brick HOST:/PATH [FILE]`: run in this process, as `heal
//! info` is: fetch the volume's client volfile, build its graph, and
//! resolve through `mortar_heal::resolve` directly on the bricks (no
//! mgmtd request). The text is shaped like the original's: "Healed
//! FILE." on stdout; "Healing FILE failed: REASON." on stderr with a
//! nonzero exit; without a file, a line per split-brain entry and
//! "Number of healed entries: N".

use std::io::Write;
use std::time::Duration;

use mortar_client::api::Client;
use mortar_heal::resolve::{self, Choice, Located, ResolveError, Resolved};
use mortar_net::Runtime;
use mortar_proto::Gfid;

use crate::mgmt_cmds::Target;
use crate::Failure;

/// How long the volume's bricks may take to connect before the command
/// goes on with those that did (a file on a set with a brick down is
/// then refused with which one).
const CONNECT_MS: u64 = 10_000;

/// Run the command (`file` is `None` only with `source-brick`).
pub async fn run(
    t: &Target,
    volume: &str,
    choice: &Choice,
    file: Option<&str>,
) -> Result<(), Failure> {
    let rt = Runtime::production("mortar-cli");
    let r = run_on(&rt, t, volume, choice, file).await;
    rt.scope().kill();
    r
}

async fn run_on(
    rt: &Runtime,
    t: &Target,
    volume: &str,
    choice: &Choice,
    file: Option<&str>,
) -> Result<(), Failure> {
    let (text, port) = mortar_heal::info::fetch_volfile(rt, t.endpoint(), volume)
        .await
        .map_err(|e| Failure::Runtime(format!("volume {volume}: {e}")))?;
    let client = Client::from_volfile(rt, volume, &text, port)
        .map_err(|e| Failure::Runtime(format!("volfile of {volume}: {e}")))?;
    client
        .wait_all_bricks(Duration::from_millis(CONNECT_MS))
        .await;
    let out = match (file, choice) {
        (Some(file), _) => one_file(rt, t, &client, choice, file).await,
        (None, Choice::SourceBrick(brick)) => every_file(t, &client, brick).await,
        (None, _) => Err(Failure::Runtime(format!(
            "bigger-file and latest-mtime need a FILE\n{}",
            crate::heal_cmds::USAGE
        ))),
    };
    client.unmount();
    out
}

/// Resolve `file` (a path in the volume or `gfid:UUID`).
async fn one_file(
    rt: &Runtime,
    t: &Target,
    client: &Client,
    choice: &Choice,
    file: &str,
) -> Result<(), Failure> {
    let g = client.graph();
    let work = async {
        let at = locate(client, file).await?;
        resolve::resolve_located(&g, &at, choice).await
    };
    let r = match rt.clock().timeout(t.timeout(), work).await {
        Ok(r) => r,
        Err(_) => Err(ResolveError::Failed(resolve::late(t.timeout()))),
    };
    match r {
        Ok(_) => {
            let _ = writeln!(std::io::stdout().lock(), "{}", healed_line(file));
            Ok(())
        }
        Err(e) => Err(Failure::Runtime(failed_line(file, &e))),
    }
}

async fn locate(client: &Client, file: &str) -> Result<Located, ResolveError> {
    match file.strip_prefix("gfid:") {
        Some(uuid) => match resolve::parse_gfid(uuid) {
            Some(g) => resolve::locate_gfid(&client.graph(), g).await,
            None => Err(ResolveError::Refused(format!(
                "{uuid:?} is not a gfid (8-4-4-4-12 hex digits)"
            ))),
        },
        None => resolve::locate_path(client, file).await,
    }
}

/// `source-brick` without a file: every split-brain entry of its set.
async fn every_file(t: &Target, client: &Client, brick: &str) -> Result<(), Failure> {
    let g = client.graph();
    let results = resolve::resolve_all_from(&g, brick, t.timeout())
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let (out, err) = report(&results);
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    let _ = std::io::stderr().lock().write_all(err.as_bytes());
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        return Err(Failure::Runtime(format!(
            "{failed} of {} split-brain entries were not healed",
            results.len()
        )));
    }
    Ok(())
}

fn healed_line(what: &str) -> String {
    format!("Healed {what}.")
}

fn failed_line(what: &str, e: &ResolveError) -> String {
    format!("Healing {what} failed: {e}.")
}

/// The stdout and stderr text of `source-brick` without a file.
fn report(results: &[(Gfid, Result<Resolved, ResolveError>)]) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    let mut healed = 0;
    for (gfid, r) in results {
        let what = format!("gfid:{gfid}");
        match r {
            Ok(_) => {
                healed += 1;
                out.push_str(&healed_line(&what));
                out.push('\n');
            }
            Err(e) => {
                err.push_str(&failed_line(&what, e));
                err.push('\n');
            }
        }
    }
    out.push_str(&format!("Number of healed entries: {healed}\n"));
    (out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_every_entry() {
        let ok = |n: u128| {
            (
                Gfid::from_u128(n),
                Ok(Resolved {
                    gfid: Gfid::from_u128(n),
                    sources: vec![],
                    healed: vec!["vol-client-1".into()],
                }),
            )
        };
        let results = vec![
            ok(1),
            (
                Gfid::from_u128(2),
                Err(ResolveError::Failed(
                    "vol-client-0 is down; heal waits until every brick of vol-replicate-0 is up"
                        .into(),
                )),
            ),
            ok(3),
        ];
        let (out, err) = report(&results);
        assert_eq!(
            out,
            "Healed gfid:00000000-0000-0000-0000-000000000001.\n\
             Healed gfid:00000000-0000-0000-0000-000000000003.\n\
             Number of healed entries: 2\n"
        );
        assert_eq!(
            err,
            "Healing gfid:00000000-0000-0000-0000-000000000002 failed: vol-client-0 is down; heal waits until every brick of vol-replicate-0 is up.\n"
        );
        assert_eq!(report(&[]).0, "Number of healed entries: 0\n");
        assert_eq!(
            failed_line("/d/f", &ResolveError::NotInSplitBrain),
            "Healing /d/f failed: not in split-brain."
        );
        assert_eq!(healed_line("/d/f"), "Healed /d/f.");
    }
}
