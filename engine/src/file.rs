//! `File`: the user-facing API of one cached file, the same for every write
//! path (write / pwrite / writev / read / pread / fsync / drop_caches).

use crate::address_space::AddressSpace;
use crate::device::{BlockDevice, IoStats};
use crate::error::{Error, Result};
use crate::iov::IovIter;
use crate::mapping::Mapper;
use crate::page_cache::{OrderPolicy, PageCache};
use crate::units::FilePos;
use crate::write_path::WritePath;
use crate::writeback;
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};

/// Options for opening a [`File`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// How new folios get their order.
    pub order: OrderPolicy,
}

impl Default for FileOptions {
    /// The kernel's policy with 2 MiB folios allowed.
    fn default() -> Self {
        FileOptions {
            order: OrderPolicy::FromWrite { max_order: 9 },
        }
    }
}

/// A cached file: a page cache over a mapper and a device, written through
/// one write path. `File` is `Send + Sync`: writers are serialised by a
/// per-file write lock (as i_rwsem serialises buffered writers), readers
/// with `pread` run beside them under folio locks.
pub struct File {
    mapping: AddressSpace,
    write_path: Box<dyn WritePath>,
    /// The write lock; it also guards the file position used by `write`,
    /// `writev` and `read`.
    write_lock: Mutex<u64>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("write_path", &self.write_path.name())
            .field("mapping", &self.mapping)
            .finish()
    }
}

impl File {
    /// Opens a file over `mapper` on `device`, written through `write_path`.
    ///
    /// Fails when the block size is not 1, 2 or 4 KiB or is smaller than the
    /// device's logical block size (no block could be written alone).
    pub fn open(
        device: Arc<dyn BlockDevice>,
        mapper: Arc<dyn Mapper>,
        write_path: Box<dyn WritePath>,
        opts: FileOptions,
    ) -> Result<File> {
        let bs = mapper.block_size().bytes();
        if !matches!(bs, 1024 | 2048 | 4096) {
            return Err(Error::InvalidArgument(format!(
                "block size {bs} (must be 1024, 2048 or 4096)"
            )));
        }
        if bs < device.logical_block_size() {
            return Err(Error::InvalidArgument(format!(
                "block size {bs} is smaller than the device's logical block size {}",
                device.logical_block_size()
            )));
        }
        Ok(File {
            mapping: AddressSpace::new(PageCache::new(opts.order), mapper, device),
            write_path,
            write_lock: Mutex::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `buf` at the file position and advances it.
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        let mut fpos = self.lock();
        let n = self.write_locked(*fpos, IovIter::from_slice(buf))?;
        *fpos += n;
        Ok(n as usize)
    }

    /// Writes `buf` at `pos`; the file position does not move.
    pub fn pwrite(&self, pos: u64, buf: &[u8]) -> Result<usize> {
        let _guard = self.lock();
        Ok(self.write_locked(pos, IovIter::from_slice(buf))? as usize)
    }

    /// Writes the buffers in order at the file position and advances it.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let mut fpos = self.lock();
        let it = iovec(*fpos, bufs)?;
        let n = self.write_locked(*fpos, it)?;
        *fpos += n;
        Ok(n as usize)
    }

    /// Writes the buffers in order at `pos`.
    pub fn pwritev(&self, pos: u64, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let _guard = self.lock();
        let it = iovec(pos, bufs)?;
        Ok(self.write_locked(pos, it)? as usize)
    }

    /// The common write: checks, zero-fills a gap past the old EOF, then
    /// runs the write path's loop. Nothing is written when a check fails.
    fn write_locked(&self, pos: u64, mut src: IovIter<'_>) -> Result<u64> {
        let len = src.remaining();
        if len == 0 {
            return Ok(0);
        }
        if pos.checked_add(len).is_none() {
            return Err(Error::RangeOverflow { offset: pos, len });
        }
        self.mapping.mapper.prepare_write(FilePos::new(pos), len)?;
        let isize = self.mapping.size();
        if pos > isize {
            // The gap reads as zeroes: write them through the cache, since
            // the device below the old EOF may hold anything.
            let mut zeros = IovIter::zeros(pos - isize);
            let n =
                self.write_path
                    .perform_write(&self.mapping, FilePos::new(isize), &mut zeros)?;
            if n < pos - isize {
                return Err(Error::Unsupported(format!(
                    "could not zero the gap [{isize}, {pos}) before the write"
                )));
            }
        }
        self.write_path
            .perform_write(&self.mapping, FilePos::new(pos), &mut src)
    }

    /// Reads at the file position and advances it; short at EOF.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let mut fpos = self.lock();
        let n = self.pread(*fpos, buf)?;
        *fpos += n as u64;
        Ok(n)
    }

    /// Reads up to `buf.len()` bytes at `pos` through the cache; returns the
    /// count, short when the file ends first (0 at or past EOF).
    pub fn pread(&self, mut pos: u64, buf: &mut [u8]) -> Result<usize> {
        let isize = self.mapping.size();
        if pos >= isize {
            return Ok(0);
        }
        let total = (buf.len() as u64).min(isize - pos) as usize;
        let mut done = 0;
        while done < total {
            let want = (total - done) as u64;
            let folio = self.mapping.cache.find_or_create(pos, want);
            let mut g = folio.lock();
            let off = (pos - g.pos()) as usize;
            let n = (g.size() - off).min(total - done);
            if !g.uptodate() {
                self.write_path
                    .read_folio_range(&self.mapping, &mut g, off, off + n)?;
            }
            buf[done..done + n].copy_from_slice(&g.data[off..off + n]);
            done += n;
            pos += n as u64;
        }
        Ok(done)
    }

    /// Sets the file position.
    pub fn seek(&self, pos: u64) {
        *self.lock() = pos;
    }

    /// The file position.
    pub fn position(&self) -> u64 {
        *self.lock()
    }

    /// Writes back every dirty block and flushes the device. On error the
    /// data stays dirty, the error names the file offset, and a later
    /// `fsync` retries.
    pub fn fsync(&self) -> Result<()> {
        writeback::write_back(&self.mapping, self.write_path.as_ref())
    }

    /// Drops the clean folios (drop_caches for this file); returns how many.
    pub fn drop_caches(&self) -> usize {
        self.mapping.cache.drop_clean()
    }

    /// i_size.
    pub fn size(&self) -> u64 {
        self.mapping.size()
    }

    /// The write path's name (`iomap`, `bh-legacy`, ...).
    pub fn write_path_name(&self) -> &'static str {
        self.write_path.name()
    }

    /// The write path.
    pub fn write_path(&self) -> &dyn WritePath {
        self.write_path.as_ref()
    }

    /// The shared state (cache, mapper, device).
    pub fn mapping(&self) -> &AddressSpace {
        &self.mapping
    }

    /// The device's I/O counters.
    pub fn device_stats(&self) -> IoStats {
        self.mapping.device.stats()
    }

    /// Bytes of per-block metadata held by the cached folios, and the bytes
    /// of data they cache.
    pub fn metadata_bytes(&self) -> (usize, usize) {
        let mut meta = 0;
        let mut data = 0;
        for f in self.mapping.cache.folios() {
            let g = f.lock();
            meta += self.write_path.private_bytes(&g);
            data += g.size();
        }
        (meta, data)
    }
}

fn iovec<'a>(pos: u64, bufs: &'a [IoSlice<'a>]) -> Result<IovIter<'a>> {
    IovIter::from_iovec(bufs).ok_or(Error::RangeOverflow {
        offset: pos,
        len: u64::MAX,
    })
}
