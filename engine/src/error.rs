//! The engine's error type.
//!
//! Every I/O error carries the operation and the byte offset it failed at, so
//! that an fsync failure can be traced to the block that did not reach the
//! device.

use std::fmt;
use std::io;

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
    /// A device I/O failed. `offset` is the device byte offset (for `Open`
    /// and `Flush`, 0).
    #[error("device {op} failed at byte offset {offset} (length {len}): {source}")]
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
    #[error("writeback of file offset {file_offset} failed: {source}")]
    Writeback {
        /// The file offset of the first byte that could not be written.
        file_offset: u64,
        /// The device error.
        #[source]
        source: Box<Error>,
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
    /// The device was opened read-only.
    #[error("device is read-only")]
    ReadOnly,
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
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
