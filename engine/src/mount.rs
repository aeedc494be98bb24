//! A mounted filesystem: a device and a [`Filesystem`] (the kernel's super
//! block with its backing device). Files are created, opened and unlinked
//! through it; each open file is a [`File`] over the inode's [`Mapper`].
//!
//! One cache per inode comes with the mount-wide cache (a later issue):
//! until then an inode can be open once per mount, and a second open, or
//! an unlink while it is open, is refused with [`Error::Busy`] instead of
//! giving two caches of one file that would disagree.

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::file::{File, FileOptions};
use crate::mapping::Mapper;
use crate::units::BlockSize;
use crate::write_path::WritePath;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// A filesystem: gives each inode its [`Mapper`] and does the allocation
/// (ext4 here; a Flat layout is not one).
pub trait Filesystem: Send + Sync {
    /// The filesystem block size.
    fn block_size(&self) -> BlockSize;

    /// The mapper of an existing regular file ([`Error::NotFound`] when
    /// absent). The same inode gives the same `Arc`.
    fn open(&self, path: &str) -> Result<Arc<dyn Mapper>>;

    /// Creates an empty regular file ([`Error::AlreadyExists`] when the
    /// name exists) and returns its mapper.
    fn create(&self, path: &str) -> Result<Arc<dyn Mapper>>;

    /// Removes the name and frees the inode and its blocks.
    fn unlink(&self, path: &str) -> Result<()>;

    /// Writes the filesystem's pending metadata (a clean unmount's share).
    fn sync_fs(&self) -> Result<()>;
}

/// How [`Mount::open`] opens: open(2)'s `O_CREAT`, `O_EXCL`, `O_TRUNC`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Create the file when it does not exist.
    pub create: bool,
    /// With `create`: fail with [`Error::AlreadyExists`] when it exists.
    pub exclusive: bool,
    /// Truncate an existing file to size 0.
    pub truncate: bool,
}

/// The inodes open in one mount, by the address of their mapper (the same
/// inode gives the same `Arc`).
type OpenSet = Arc<Mutex<HashSet<usize>>>;

fn lock(set: &OpenSet) -> MutexGuard<'_, HashSet<usize>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// The identity of an inode: its mapper's address.
fn inode_key(m: &Arc<dyn Mapper>) -> usize {
    Arc::as_ptr(m) as *const () as usize
}

/// Held by a [`File`] opened through a [`Mount`]: marks its inode open
/// until the file goes.
pub(crate) struct OpenGuard {
    set: OpenSet,
    key: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.key);
    }
}

/// A mounted filesystem: a device and a [`Filesystem`].
pub struct Mount {
    device: Arc<dyn BlockDevice>,
    fs: Arc<dyn Filesystem>,
    open: OpenSet,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("device", &self.device.describe())
            .field("block_size", &self.fs.block_size())
            .field("open", &lock(&self.open).len())
            .finish()
    }
}

impl Mount {
    /// Mounts `fs` on `device`.
    pub fn new(device: Arc<dyn BlockDevice>, fs: Arc<dyn Filesystem>) -> Mount {
        Mount {
            device,
            fs,
            open: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Opens `path` with `flags`, written through `write_path`. An inode
    /// already open in this mount is refused ([`Error::Busy`]): one cache per
    /// inode comes with the mount-wide cache, later.
    pub fn open(
        &self,
        path: &str,
        flags: OpenFlags,
        write_path: Box<dyn WritePath>,
        opts: FileOptions,
    ) -> Result<File> {
        // Held across the lookup and the open, so two opens of one name
        // cannot both pass the check.
        let mut open = lock(&self.open);
        let mapper = match self.fs.open(path) {
            Ok(_) if flags.create && flags.exclusive => {
                return Err(Error::AlreadyExists(path.to_string()))
            }
            Ok(m) => m,
            Err(Error::NotFound(_)) if flags.create => self.fs.create(path)?,
            Err(e) => return Err(e),
        };
        let key = inode_key(&mapper);
        if open.contains(&key) {
            return Err(Error::Busy(format!(
                "{path} is already open in this mount (one open per inode until the mount-wide cache)"
            )));
        }
        let mut file = File::open(Arc::clone(&self.device), mapper, write_path, opts)?;
        open.insert(key);
        drop(open);
        file.set_open_guard(OpenGuard {
            set: Arc::clone(&self.open),
            key,
        });
        if flags.truncate {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// Unlinks `path`; refused ([`Error::Busy`]) while it is open in this
    /// mount.
    pub fn unlink(&self, path: &str) -> Result<()> {
        let open = lock(&self.open);
        let mapper = self.fs.open(path)?;
        if open.contains(&inode_key(&mapper)) {
            return Err(Error::Busy(format!(
                "{path} is open in this mount: close it before unlinking"
            )));
        }
        drop(mapper);
        self.fs.unlink(path)
    }

    /// Writes the filesystem's pending metadata, then flushes the device.
    pub fn sync(&self) -> Result<()> {
        self.fs.sync_fs()?;
        self.device.flush()
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// The filesystem.
    pub fn filesystem(&self) -> &Arc<dyn Filesystem> {
        &self.fs
    }
}
