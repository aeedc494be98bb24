//! The crate's error type: coarse public variants, each carrying the text a
//! user needs to find the problem (which structure, where on disk).

use bufwrite_engine::Error as EngineError;

/// Errors returned by the ext4 layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Ext4Error {
    /// The device failed (or a request was out of its bounds).
    #[error("device error: {0}")]
    Io(#[from] EngineError),
    /// An on-disk structure failed a check (magic, bounds, checksum, loop).
    #[error("corrupt {structure} at {location}: {detail}")]
    Corrupt {
        /// The structure: `superblock`, `group descriptor 3`, `inode 12`, ...
        structure: String,
        /// Where it is: a device byte offset or block number.
        location: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The image or file uses something bufwrite does not handle; the text
    /// says what and why. Nothing was written.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A path component does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The path names something that is not a regular file (or a path
    /// component that is not a directory); the text says what it is.
    #[error("wrong file type: {0}")]
    WrongType(String),
}

impl Ext4Error {
    /// Builds an [`Ext4Error::Corrupt`].
    pub fn corrupt(
        structure: impl Into<String>,
        location: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Ext4Error::Corrupt {
            structure: structure.into(),
            location: location.into(),
            detail: detail.into(),
        }
    }
}

impl From<Ext4Error> for EngineError {
    /// The engine has no notion of a corrupt filesystem: device errors pass
    /// through, a corrupt structure becomes an `InvalidData` read error (so
    /// callers see an I/O failure, which is what the kernel reports as
    /// EFSCORRUPTED/EIO), and everything else is `Unsupported`.
    fn from(e: Ext4Error) -> Self {
        match e {
            Ext4Error::Io(inner) => inner,
            corrupt @ Ext4Error::Corrupt { .. } => EngineError::io(
                bufwrite_engine::IoKind::Read,
                0,
                0,
                std::io::Error::new(std::io::ErrorKind::InvalidData, corrupt.to_string()),
            ),
            other => EngineError::Unsupported(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Ext4Error> = std::result::Result<T, E>;
