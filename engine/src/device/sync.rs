//! `SyncDevice`: pread/pwrite backend (work in progress).

use super::open::OpenOptions;
use super::BlockDevice;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::path::Path;

/// pread/pwrite backend (being written).
#[derive(Debug)]
pub struct SyncDevice;

impl SyncDevice {
    /// Opens `path`.
    pub fn open(_path: &Path, _opts: OpenOptions) -> Result<Self> {
        Err(Error::Unsupported("the sync backend is not built yet".into()))
    }
}

/// Opens `path` with this backend, as a shared device.
pub fn open(path: &Path, opts: OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    SyncDevice::open(path, opts)?;
    Err(Error::Unsupported("the sync backend is not built yet".into()))
}
