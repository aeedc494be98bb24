//! Opening a device or image file by path with a chosen backend.

use super::BlockDevice;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// Which backend performs device I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// pread/pwrite (optionally O_DIRECT): the baseline.
    Sync,
    /// io_uring with O_DIRECT.
    Uring,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sync" => Ok(Backend::Sync),
            "uring" => Ok(Backend::Uring),
            _ => Err(Error::InvalidArgument(format!(
                "backend {s:?} (expected sync or uring)"
            ))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sync => "sync",
            Backend::Uring => "uring",
        })
    }
}

/// How to open a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// The backend.
    pub backend: Backend,
    /// Bypass the host page cache (O_DIRECT). Always on for `Uring`.
    pub direct: bool,
    /// Refuse writes.
    pub read_only: bool,
    /// io_uring queue depth (`Uring` only).
    pub queue_depth: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            backend: Backend::Sync,
            direct: false,
            read_only: false,
            queue_depth: 32,
        }
    }
}

/// Opens the image file or block device at `path` with `opts`.
pub fn open_device(path: &Path, opts: OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    match opts.backend {
        Backend::Sync => super::sync::open(path, opts),
        Backend::Uring => super::uring::open(path, opts),
    }
}
