//! Error numbers as they travel between bricks and clients.
//!
//! Linux values, so a FUSE layer can hand them to the kernel unchanged.

use serde::{Deserialize, Serialize};

/// A POSIX error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $v:expr, $text:expr;)*) => {
        impl Errno {
            $(pub const $name: Errno = Errno($v);)*

            /// The symbolic name (`"ENOENT"`), or `"E?"` for unknown values.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($v => stringify!($name),)*
                    _ => "E?",
                }
            }

            /// What the error means, in the words an operator reads.
            pub fn text(self) -> &'static str {
                match self.0 {
                    $($v => $text,)*
                    _ => "unknown error",
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "operation not permitted";
    ENOENT = 2, "no such file or directory";
    ENXIO = 6, "no such device or address";
    E2BIG = 7, "argument list too long";
    EIO = 5, "input/output error";
    EBADF = 9, "bad file descriptor";
    EAGAIN = 11, "resource temporarily unavailable";
    ENOMEM = 12, "out of memory";
    EACCES = 13, "permission denied";
    EEXIST = 17, "file exists";
    EXDEV = 18, "cross-device link";
    ENOTDIR = 20, "not a directory";
    EISDIR = 21, "is a directory";
    EINVAL = 22, "invalid argument";
    EFBIG = 27, "file too large";
    ENOSPC = 28, "no space left on device";
    EROFS = 30, "read-only file system";
    EMLINK = 31, "too many links";
    ERANGE = 34, "result out of range";
    EDEADLK = 35, "resource deadlock avoided";
    ENAMETOOLONG = 36, "file name too long";
    ENOSYS = 38, "function not implemented";
    ENOTEMPTY = 39, "directory not empty";
    ELOOP = 40, "too many levels of symbolic links";
    ENODATA = 61, "no data available";
    EPROTO = 71, "protocol error";
    EOVERFLOW = 75, "value too large for defined data type";
    EOPNOTSUPP = 95, "operation not supported";
    ENOTCONN = 107, "transport endpoint is not connected";
    ETIMEDOUT = 110, "connection timed out";
    ESTALE = 116, "stale file handle";
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text(), self.name())
    }
}

impl std::error::Error for Errno {}

/// An errno with the detail that explains it (which path, which limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{errno}: {detail}")]
pub struct FopError {
    pub errno: Errno,
    pub detail: String,
}

impl FopError {
    pub fn new(errno: Errno, detail: impl Into<String>) -> Self {
        FopError {
            errno,
            detail: detail.into(),
        }
    }
}

impl From<Errno> for FopError {
    fn from(errno: Errno) -> Self {
        FopError {
            errno,
            detail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_texts() {
        assert_eq!(Errno::ENOENT.name(), "ENOENT");
        assert_eq!(Errno(9999).name(), "E?");
        assert_eq!(
            FopError::new(Errno::EACCES, "auth.reject matched 10.0.0.1").to_string(),
            "permission denied (EACCES): auth.reject matched 10.0.0.1"
        );
    }
}
