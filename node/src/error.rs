//! Why a brick cannot open or serve. File operations report
//! [`mortar_proto::FopError`] to clients; this is for the operator, so
//! every message names the brick and, where there is one, what to do.

use mortar_proto::{Errno, FopError};

/// A brick that cannot start. `brick` is the storage's own description
/// ([`mortar_storage::Storage::describe`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("brick {brick}: cannot stat the brick directory: {errno}")]
    StatRoot { brick: String, errno: Errno },
    #[error("brick {brick}: not a directory")]
    NotADirectory { brick: String },
    #[error(
        "brick {brick} belongs to volume {found:?}, not {wanted:?}: use another directory, or \
         remove the {xattr} xattr and the .mortar directory if its old volume is gone"
    )]
    ForeignVolume {
        brick: String,
        found: String,
        wanted: String,
        xattr: &'static str,
    },
    #[error(
        "brick {brick}: cannot store trusted.* xattrs ({errno}); run the brick as root on a \
         filesystem with xattr support (ext4, xfs)"
    )]
    NoXattrs { brick: String, errno: Errno },
    #[error("brick {brick}: cannot read xattrs: {errno}")]
    ReadVolumeId { brick: String, errno: Errno },
    #[error("brick {brick}: root directory has a foreign gfid")]
    ForeignRootGfid { brick: String },
    #[error("brick {brick}: cannot set the root gfid: {errno}")]
    SetRootGfid { brick: String, errno: Errno },
    #[error("brick {brick}: cannot read the root gfid: {errno}")]
    ReadRootGfid { brick: String, errno: Errno },
    #[error("brick {brick}: cannot create {dir}: {errno}")]
    CreateMetaDir {
        brick: String,
        dir: &'static str,
        errno: Errno,
    },
    #[error("brick {brick}: fsync failed: {errno}")]
    Fsync { brick: String, errno: Errno },
    #[error("brick {brick}: recovery failed: {error}")]
    Recovery { brick: String, error: FopError },
    /// The server could not listen; `brick` is the operator's brick path.
    #[error("brick {brick}: {error}")]
    Listen { brick: String, error: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operators and scripts match on these texts; they must read as they
    /// did when `Brick::init` returned plain strings.
    #[test]
    fn messages_read_as_before() {
        let cases = [
            (
                NodeError::StatRoot {
                    brick: "/b".into(),
                    errno: Errno::ENOENT,
                },
                format!(
                    "brick /b: cannot stat the brick directory: {}",
                    Errno::ENOENT
                ),
            ),
            (
                NodeError::ForeignVolume {
                    brick: "/b".into(),
                    found: "v1".into(),
                    wanted: "v2".into(),
                    xattr: "trusted.mortar.volume-id",
                },
                "brick /b belongs to volume \"v1\", not \"v2\": use another directory, or remove \
                 the trusted.mortar.volume-id xattr and the .mortar directory if its old volume \
                 is gone"
                    .to_string(),
            ),
            (
                NodeError::NoXattrs {
                    brick: "/b".into(),
                    errno: Errno::EOPNOTSUPP,
                },
                format!(
                    "brick /b: cannot store trusted.* xattrs ({}); run the brick as root on a \
                     filesystem with xattr support (ext4, xfs)",
                    Errno::EOPNOTSUPP
                ),
            ),
            (
                NodeError::CreateMetaDir {
                    brick: "/b".into(),
                    dir: ".mortar/tmp",
                    errno: Errno::EACCES,
                },
                format!("brick /b: cannot create .mortar/tmp: {}", Errno::EACCES),
            ),
            (
                NodeError::Listen {
                    brick: "/data/b1".into(),
                    error: "address in use".into(),
                },
                "brick /data/b1: address in use".to_string(),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
