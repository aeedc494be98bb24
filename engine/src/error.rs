//! The engine's error type.
//!
//! Every I/O error carries the operation and the byte offset it failed at, so
//! that an fsync failure can be traced to the block that did not reach the
//! device. An open is not an I/O at an offset: it has variants of its own
//! that name the path.
//!
//! No variant's text repeats its source: `anyhow`'s `{:#}` (and any other
//! walk of [`std::error::Error::source`]) prints the chain, so a message
//! that also embedded `{source}` would show the OS error twice.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What the engine was doing when an I/O error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Reading blocks from the device (read-in of partial blocks, buffered read).
    Read,
    /// Writing dirty blocks back to the device.
    Write,
    /// A device cache flush (the durability half of fsync).
    Flush,
    /// Opening or querying the device.
    Open,
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoKind::Read => "read",
            IoKind::Write => "write",
            IoKind::Flush => "flush",
            IoKind::Open => "open",
        })
    }
}

/// Errors returned by the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device I/O failed. `offset` is the device byte offset (for a
    /// flush, 0); a request of length 0 (a flush, a failed set-up) prints
    /// no offset.
    #[error("device {op} failed{}", at_offset(*.offset, *.len))]
    Io {
        /// The operation that failed.
        op: IoKind,
        /// Byte offset on the device.
        offset: u64,
        /// Length of the failed request in bytes.
        len: u64,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// Writeback of a file range failed; the data stays dirty in the cache and
    /// a later fsync retries it.
    #[error("writeback of file offset {file_offset} failed")]
    Writeback {
        /// The file offset of the first byte that could not be written.
        file_offset: u64,
        /// The device error.
        #[source]
        source: Box<Error>,
    },
    /// Writeback of a file range failed earlier (in the flusher's
    /// background pass, or another file's fsync) and is reported once to
    /// each open file of the inode, at its next fsync (the kernel's errseq).
    /// The data stayed dirty; this fsync wrote it again.
    #[error("writeback of file offset {file_offset} failed earlier")]
    WritebackEarlier {
        /// The file offset of the first byte that could not be written.
        file_offset: u64,
        /// The error recorded then.
        #[source]
        source: std::sync::Arc<Error>,
    },
    /// `offset + length` overflows, or the iovec lengths add up past `u64`.
    #[error("range overflows: offset {offset} + length {len}")]
    RangeOverflow {
        /// Start of the range.
        offset: u64,
        /// Length that overflowed (saturated when the iovec sum itself overflows).
        len: u64,
    },
    /// A write would end past the largest size the file may reach.
    #[error(
        "write of {len} bytes at offset {offset} ends past the file's capacity of {capacity} bytes"
    )]
    FileTooLarge {
        /// Start of the write.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's capacity (Flat: the region size).
        capacity: u64,
    },
    /// A device request would fall outside the device.
    #[error("{op} of {len} bytes at device offset {offset} is outside the device ({size} bytes)")]
    OutOfBounds {
        /// The operation.
        op: IoKind,
        /// Device offset.
        offset: u64,
        /// Request length.
        len: u64,
        /// Device size.
        size: u64,
    },
    /// A request whose offset, length or buffer is not aligned as the device needs.
    #[error("misaligned {op} at device offset {offset}, length {len}: the device needs {align}-byte alignment")]
    Misaligned {
        /// The operation.
        op: IoKind,
        /// Device offset.
        offset: u64,
        /// Request length.
        len: u64,
        /// The alignment the device requires.
        align: u64,
    },
    /// A bad argument (block size, order, capacity, ...); the text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation needs something this prototype does not do (allocation,
    /// unwritten conversion, ...); nothing was written.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// ENOSPC: the write at `offset` could not reserve space for its
    /// first block (nothing of it was written).
    #[error("no space left on the filesystem for the write of {len} bytes at offset {offset}")]
    NoSpace {
        /// Start of the write (or of the part that could not be reserved).
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// EEXIST: the name exists (an exclusive create).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// ENOENT: no such file.
    #[error("{0} does not exist")]
    NotFound(String),
    /// EBUSY: the file is in use in a way the operation cannot share (open
    /// twice in one mount, unlinked while open); the text says how.
    #[error("{0}")]
    Busy(String),
    /// The device was opened read-only.
    #[error("device is read-only")]
    ReadOnly,
    /// The filesystem's metadata is corrupt: the layer that reads it (the
    /// ext4 mapper) found an on-disk structure failing a check. `source`
    /// is that layer's error, which says which structure, where and what
    /// was wrong; the kernel reports the same as EFSCORRUPTED (EUCLEAN).
    /// Not an I/O error: the device read fine.
    #[error("{what}")]
    Corrupt {
        /// A short description: `ext4 metadata is corrupt`, ...
        what: &'static str,
        /// The filesystem layer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Opening a device or image file failed; `source` is the OS error.
    #[error("cannot open {}{}", .path.display(), open_note(.source, *.direct))]
    Open {
        /// The path given.
        path: PathBuf,
        /// The open asked for O_DIRECT.
        direct: bool,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file opened, but asking the kernel about it (size, block size,
    /// lock) failed.
    #[error("cannot {what} {}", .path.display())]
    Query {
        /// What was asked, as a verb phrase: `read the size of`, ...
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device or image file is in use by the system: mounted (directly,
    /// or through a loop device it backs) or held by another device built
    /// on it. Refused before anything was written.
    #[error("{} is in use: {why}", .path.display())]
    InUse {
        /// The path given.
        path: PathBuf,
        /// Where it is in use, e.g. `it is mounted at /mnt (ext4)`.
        why: String,
    },
    /// Another process holds the write lock of this image file (another
    /// bufwrite writing to it). Refused before anything was written.
    #[error("{} is in use by another process (it holds the image's write lock)", .path.display())]
    Locked {
        /// The path given.
        path: PathBuf,
    },
    /// io_uring could not be set up; `what` says whether the kernel refuses
    /// it outright (and why it may) or the set-up failed otherwise.
    #[error("{what}")]
    UringSetup {
        /// The fact, e.g. `io_uring is unavailable on this system (...)`.
        what: String,
        /// The OS error of io_uring_setup.
        #[source]
        source: io::Error,
    },
}

/// ` at byte offset N (length L)`, or nothing for a request of no length
/// (a flush, or a failure before any request).
fn at_offset(offset: u64, len: u64) -> String {
    if len == 0 {
        String::new()
    } else {
        format!(" at byte offset {offset} (length {len})")
    }
}

/// What an open's errno means here, when it says more than its own text:
/// EBUSY from an exclusive open of a block device, EINVAL from O_DIRECT on a
/// filesystem without direct I/O.
fn open_note(e: &io::Error, direct: bool) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => ": it is mounted or in use by another opener",
        Some(libc::EINVAL) if direct => ": its filesystem does not support O_DIRECT",
        _ => "",
    }
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: IoKind, offset: u64, len: u64, source: io::Error) -> Self {
        Error::Io {
            op,
            offset,
            len,
            source,
        }
    }

    /// A copy of this error for a second reader (errseq hands one error to
    /// every open file). I/O errors keep their operation, offset, length
    /// and errno; a variant that carries a non-cloneable source keeps its
    /// text, as [`Error::Unsupported`].
    pub fn duplicate(&self) -> Error {
        let io_copy = |e: &io::Error| match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        match self {
            Error::Io {
                op,
                offset,
                len,
                source,
            } => Error::io(*op, *offset, *len, io_copy(source)),
            Error::Writeback {
                file_offset,
                source,
            } => Error::Writeback {
                file_offset: *file_offset,
                source: Box::new(source.duplicate()),
            },
            Error::WritebackEarlier {
                file_offset,
                source,
            } => Error::WritebackEarlier {
                file_offset: *file_offset,
                source: std::sync::Arc::clone(source),
            },
            Error::NoSpace { offset, len } => Error::NoSpace {
                offset: *offset,
                len: *len,
            },
            Error::OutOfBounds {
                op,
                offset,
                len,
                size,
            } => Error::OutOfBounds {
                op: *op,
                offset: *offset,
                len: *len,
                size: *size,
            },
            Error::ReadOnly => Error::ReadOnly,
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::Unsupported(s) => Error::Unsupported(s.clone()),
            other => Error::Unsupported(format!("{other}")),
        }
    }

    /// True when an open failed because the file's filesystem does not
    /// support O_DIRECT (tmpfs, some FUSE filesystems).
    pub fn is_direct_io_unsupported(&self) -> bool {
        matches!(self, Error::Open { direct: true, source, .. }
            if source.raw_os_error() == Some(libc::EINVAL))
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Every variant with a source leaves the source's text to the chain.
    #[test]
    fn no_message_repeats_its_source() {
        let os = || io::Error::from_raw_os_error(libc::ENOENT);
        let cause = os().to_string();
        let cases = [
            Error::io(IoKind::Write, 4096, 512, os()),
            Error::io(IoKind::Flush, 0, 0, os()),
            Error::Writeback {
                file_offset: 7,
                source: Box::new(Error::io(IoKind::Write, 0, 512, os())),
            },
            Error::Open {
                path: "/x.img".into(),
                direct: false,
                source: os(),
            },
            Error::Query {
                what: "read the size of",
                path: "/x.img".into(),
                source: os(),
            },
            Error::UringSetup {
                what: "io_uring_setup failed".into(),
                source: os(),
            },
            Error::Corrupt {
                what: "metadata is corrupt",
                source: Box::new(os()),
            },
        ];
        for e in cases {
            let text = e.to_string();
            assert!(!text.contains(&cause), "{text}");
            assert!(e.source().is_some(), "{text}");
        }
    }

    #[test]
    fn an_open_error_has_no_offset_and_says_what_its_errno_means() {
        let e = Error::Open {
            path: "/dev/sdz".into(),
            direct: false,
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(
            e.to_string(),
            "cannot open /dev/sdz: it is mounted or in use by another opener"
        );
        let e = Error::Open {
            path: "/dev/shm/x".into(),
            direct: true,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(e.is_direct_io_unsupported());
        assert!(e.to_string().ends_with("does not support O_DIRECT"), "{e}");
        let flush = Error::io(IoKind::Flush, 0, 0, io::Error::other("x"));
        assert_eq!(flush.to_string(), "device flush failed");
        let write = Error::io(IoKind::Write, 8192, 4096, io::Error::other("x"));
        assert_eq!(
            write.to_string(),
            "device write failed at byte offset 8192 (length 4096)"
        );
    }
}
