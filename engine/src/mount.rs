//! A mounted filesystem: a device, a [`Filesystem`] (the kernel's super
//! block with its backing device) and one cache memory for all its files
//! ([`CacheMemory`]: the budget, the LRU, dirty throttling, the flusher).
//! Files are created, opened and unlinked through it; each open file is a
//! [`File`] over the inode's [`Mapper`], and opens of one inode share its
//! cache, so they always agree. Unlinking an open file is refused
//! ([`Error::Busy`]): the filesystem frees an inode's blocks at unlink, and
//! an open file would go on writing to them.

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::file::{File, FileOptions, Inode};
use crate::flusher::CacheMemory;
use crate::mapping::Mapper;
use crate::memory::{CacheLimits, MemStats};
use crate::units::BlockSize;
use crate::write_path::WritePath;
use crate::writeback;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

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
type OpenSet = Mutex<HashMap<usize, Weak<Inode>>>;

fn lock(set: &OpenSet) -> MutexGuard<'_, HashMap<usize, Weak<Inode>>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// The identity of an inode: its mapper's address.
fn inode_key(m: &Arc<dyn Mapper>) -> usize {
    Arc::as_ptr(m) as *const () as usize
}

/// A mounted filesystem: a device, a [`Filesystem`] and the cache memory.
pub struct Mount {
    device: Arc<dyn BlockDevice>,
    fs: Arc<dyn Filesystem>,
    memory: Arc<CacheMemory>,
    open: OpenSet,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("device", &self.device.describe())
            .field("block_size", &self.fs.block_size())
            .field("open", &lock(&self.open).len())
            .field("memory", &self.memory.stats())
            .finish()
    }
}

impl Mount {
    /// Mounts `fs` on `device` with the default [`CacheLimits`].
    pub fn new(device: Arc<dyn BlockDevice>, fs: Arc<dyn Filesystem>) -> Mount {
        Mount {
            device,
            fs,
            memory: CacheMemory::with_defaults(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Mounts `fs` on `device` with a cache under `limits` (checked).
    pub fn with_limits(
        device: Arc<dyn BlockDevice>,
        fs: Arc<dyn Filesystem>,
        limits: CacheLimits,
    ) -> Result<Mount> {
        Ok(Mount {
            device,
            fs,
            memory: CacheMemory::new(limits)?,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Opens `path` with `flags`, written through `write_path`. An inode
    /// already open in this mount is shared: the new file sees the same
    /// cache (its `write_path` must be the same path, and `opts` of the
    /// first open stay in force).
    pub fn open(
        &self,
        path: &str,
        flags: OpenFlags,
        write_path: Box<dyn WritePath>,
        opts: FileOptions,
    ) -> Result<File> {
        // Held across the lookup and the open, so two opens of one name
        // cannot make two caches.
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
        let file = match open.get(&key).and_then(Weak::upgrade) {
            Some(inode) => {
                let file = File::of_inode(inode);
                if file.write_path_name() != write_path.name() {
                    return Err(Error::InvalidArgument(format!(
                        "{path} is open in this mount through {}; a second open cannot use {}",
                        file.write_path_name(),
                        write_path.name()
                    )));
                }
                file
            }
            None => {
                let file = File::open_in(
                    &self.memory,
                    Arc::clone(&self.device),
                    mapper,
                    write_path,
                    opts,
                )?;
                open.retain(|_, w| w.strong_count() > 0);
                open.insert(key, Arc::downgrade(file.inode()));
                file
            }
        };
        drop(open);
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
        if open
            .get(&inode_key(&mapper))
            .is_some_and(|w| w.strong_count() > 0)
        {
            return Err(Error::Busy(format!(
                "{path} is open in this mount: close it before unlinking"
            )));
        }
        drop(mapper);
        self.fs.unlink(path)
    }

    /// sync(2): writes back every open file's dirty data, makes it durable
    /// and completes it, then writes the filesystem's pending metadata and
    /// flushes the device. Returns the first error.
    pub fn sync(&self) -> Result<()> {
        let inodes: Vec<Arc<Inode>> = lock(&self.open)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut first = None;
        for inode in &inodes {
            if let Err(e) = writeback::write_back(inode.mapping()) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.fs.sync_fs() {
            first.get_or_insert(e);
        }
        if let Err(e) = self.device.flush() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// The filesystem.
    pub fn filesystem(&self) -> &Arc<dyn Filesystem> {
        &self.fs
    }

    /// The cache memory (budget, flusher) the mount's files share.
    pub fn memory(&self) -> &Arc<CacheMemory> {
        &self.memory
    }

    /// The cache memory's counters.
    pub fn memory_stats(&self) -> MemStats {
        self.memory.stats()
    }
}
