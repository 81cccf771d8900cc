//! What can go wrong before a file operation is possible: a volfile the
//! client cannot build, an mgmtd it cannot reach or that refuses, a
//! migration that cannot run. File operations themselves fail with
//! [`mortar_proto::FopError`] (errno + detail), as the kernel expects.
//!
//! Every variant carries the whole operator-facing text (naming the layer,
//! the mgmtd address or the volume), so the messages read as before.

use mortar_proto::FopError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The volfile text or one of its layers cannot be used.
    #[error("{0}")]
    Volfile(String),
    /// mgmtd could not be reached, or refused, or answered oddly.
    #[error("{0}")]
    Mgmt(String),
    /// `remove-brick` migration cannot run on this volume.
    #[error("{0}")]
    Migration(String),
    /// A file operation the setup needed failed.
    #[error(transparent)]
    Fop(#[from] FopError),
}

impl From<ClientError> for String {
    fn from(e: ClientError) -> String {
        e.to_string()
    }
}
