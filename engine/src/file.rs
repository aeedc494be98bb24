//! `File`: the user-facing API of one cached file, the same for every write
//! path (write / pwrite / writev / read / pread / fsync / drop_caches).

use crate::address_space::AddressSpace;
use crate::device::{BlockDevice, IoStats};
use crate::error::{Error, Result};
use crate::flusher::CacheMemory;
use crate::iov::IovIter;
use crate::mapping::{ExtentKind, FallocMode, MapIntent, Mapper};
use crate::page_cache::{FolioHint, OrderPolicy, PageCache};
use crate::units::FilePos;
use crate::write_path::WritePath;
use crate::writeback;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// per-inode write lock (as i_rwsem serialises buffered writers), readers
/// with `pread` run beside them under folio locks. Files of one inode
/// opened through a [`crate::Mount`] share its cache, write lock and
/// writeback errors; each has its own position and its own view of those
/// errors (errseq: each sees a writeback error once).
///
/// Dropping the last `File` of an inode writes its dirty data back, best
/// effort: the errors of that are lost. [`close`](File::close) is how to
/// see them.
pub struct File {
    inode: Arc<Inode>,
    /// The file position used by `write`, `writev` and `read` (changed
    /// under the inode's write lock).
    pos: AtomicU64,
    /// The inode's writeback error counter when this file last looked.
    wb_err_seen: AtomicU64,
    /// `Drop` writes dirty data back (see [`File::set_writeback_on_drop`]).
    writeback_on_drop: AtomicBool,
}

/// What the files of one inode share: the address space (cache, mapper,
/// device, write path), the write lock with the writers' folio lookup hint
/// (one writer at a time, so the hint needs no lock of its own), and the
/// mount's memory (which keeps its flusher running).
pub(crate) struct Inode {
    mapping: Arc<AddressSpace>,
    write_lock: Mutex<FolioHint>,
    memory: Arc<CacheMemory>,
}

impl Inode {
    /// The inode's address space.
    pub(crate) fn mapping(&self) -> &AddressSpace {
        &self.mapping
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("write_path", &self.write_path().name())
            .field("mapping", &self.inode.mapping)
            .finish()
    }
}

impl File {
    /// Opens a file over `mapper` on `device`, written through `write_path`,
    /// with a cache of its own under the default [`crate::CacheLimits`] (and a
    /// flusher thread); [`File::open_in`] shares a mount's.
    ///
    /// Fails when the block size is not 1, 2 or 4 KiB or is smaller than the
    /// device's logical block size (no block could be written alone).
    pub fn open(
        device: Arc<dyn BlockDevice>,
        mapper: Arc<dyn Mapper>,
        write_path: Box<dyn WritePath>,
        opts: FileOptions,
    ) -> Result<File> {
        Self::open_in(
            &CacheMemory::with_defaults(),
            device,
            mapper,
            write_path,
            opts,
        )
    }

    /// As [`File::open`], charging the cache to `memory` (a mount's, or
    /// one made with [`CacheMemory::new`] for a budget of one's own).
    pub fn open_in(
        memory: &Arc<CacheMemory>,
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
        let cache = PageCache::with_memory(opts.order, Arc::clone(memory.shared()));
        let mapping = AddressSpace::new(cache, mapper, device, write_path);
        let hint = mapping.cache.hint();
        let inode = Arc::new(Inode {
            mapping,
            write_lock: Mutex::new(hint),
            memory: Arc::clone(memory),
        });
        Ok(File::of_inode(inode))
    }

    /// A new open file of `inode`: position 0, its errseq sampled now.
    pub(crate) fn of_inode(inode: Arc<Inode>) -> File {
        let seen = inode.mapping.wb_err_seq();
        File {
            inode,
            pos: AtomicU64::new(0),
            wb_err_seen: AtomicU64::new(seen),
            writeback_on_drop: AtomicBool::new(true),
        }
    }

    /// The inode this file is open on (a mount shares it between opens).
    pub(crate) fn inode(&self) -> &Arc<Inode> {
        &self.inode
    }

    fn lock(&self) -> MutexGuard<'_, FolioHint> {
        self.inode
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// After a write: `balance_dirty_pages` (the writer may be paused);
    /// with no flusher, a writer at the hard limit writes back itself.
    #[inline]
    fn balance(&self, written: u64) {
        let mem = self.inode.memory.shared();
        if mem.nr_dirty() > mem.limits().dirty_background {
            self.balance_slow(written);
        }
    }

    #[cold]
    #[inline(never)]
    fn balance_slow(&self, written: u64) {
        let mem = self.inode.memory.shared();
        mem.balance_dirty(written);
        if mem.needs_own_writeback() {
            let _ = writeback::background(&self.inode.mapping, None);
        }
    }

    /// Writes `buf` at the file position and advances it.
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        let n = {
            let hint = &mut *self.lock();
            let pos = self.pos.load(Ordering::Relaxed);
            let n = self.write_locked(hint, pos, IovIter::from_slice(buf))?;
            self.pos.store(pos + n, Ordering::Relaxed);
            n
        };
        self.balance(n);
        Ok(n as usize)
    }

    /// Writes `buf` at `pos`; the file position does not move.
    pub fn pwrite(&self, pos: u64, buf: &[u8]) -> Result<usize> {
        let n = self.write_locked(&mut self.lock(), pos, IovIter::from_slice(buf))?;
        self.balance(n);
        Ok(n as usize)
    }

    /// Writes the buffers in order at the file position and advances it.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let n = {
            let hint = &mut *self.lock();
            let pos = self.pos.load(Ordering::Relaxed);
            let it = iovec(pos, bufs)?;
            let n = self.write_locked(hint, pos, it)?;
            self.pos.store(pos + n, Ordering::Relaxed);
            n
        };
        self.balance(n);
        Ok(n as usize)
    }

    /// Writes the buffers in order at `pos`.
    pub fn pwritev(&self, pos: u64, bufs: &[IoSlice<'_>]) -> Result<usize> {
        let it = iovec(pos, bufs)?;
        let n = self.write_locked(&mut self.lock(), pos, it)?;
        self.balance(n);
        Ok(n as usize)
    }

    /// The common write: checks, zeroes the tail of the old EOF block when
    /// the write starts past it, then runs the write path's loop. Nothing
    /// is written when a check fails.
    fn write_locked(&self, hint: &mut FolioHint, pos: u64, mut src: IovIter<'_>) -> Result<u64> {
        let len = src.remaining();
        if len == 0 {
            return Ok(0);
        }
        if pos.checked_add(len).is_none() {
            return Err(Error::RangeOverflow { offset: pos, len });
        }
        self.mapping()
            .mapper
            .prepare_write(FilePos::new(pos), len)?;
        let isize = self.mapping().size();
        if pos > isize {
            return self.write_past_eof(hint, pos, isize, src);
        }
        self.write_path()
            .perform_write(self.mapping(), hint, FilePos::new(pos), &mut src)
    }

    /// A write starting past EOF `isize`: ext4_write_checks (2026) zeroes
    /// only `[old EOF, min(pos, end of its block))`, the one place the
    /// cache can hold stale bytes; the blocks past it are holes (or
    /// unwritten) and read as zeroes without a write. Out of line, so the
    /// overwrite hot path pays nothing for it.
    #[cold]
    #[inline(never)]
    fn write_past_eof(
        &self,
        hint: &mut FolioHint,
        pos: u64,
        isize: u64,
        mut src: IovIter<'_>,
    ) -> Result<u64> {
        self.zero_eof_tail(hint, isize, pos)?;
        let res =
            self.write_path()
                .perform_write(self.mapping(), hint, FilePos::new(pos), &mut src);
        if !matches!(res, Ok(n) if n > 0) && self.mapping().size() != isize {
            // The zeroing moved i_size for its write; a write that failed
            // whole leaves the size as it found it.
            self.mapping().mapper.set_size(isize);
        }
        res
    }

    /// Zeroes `[old, min(limit, round_up(old)))`, the tail of the block
    /// holding the EOF `old`, before the file grows past it.
    fn zero_eof_tail(&self, hint: &mut FolioHint, old: u64, limit: u64) -> Result<()> {
        let end = self.mapping().bs().round_up(old).min(limit);
        if end <= old {
            return Ok(());
        }
        self.zero_partial(hint, old, end)
    }

    /// Zeroes file bytes `[from, to)`, which lie inside one block: in the
    /// cache, and dirty (so the disk gets the zeroes, block_truncate_page)
    /// when the block has data there (mapped, delalloc with its data in
    /// the cache, or unwritten with data on its way to the device). A hole
    /// or an unwritten block with none reads as zeroes already: only a
    /// cached copy is zeroed.
    fn zero_partial(&self, hint: &mut FolioHint, from: u64, to: u64) -> Result<()> {
        let bs = self.mapping().bs();
        let block = bs.round_down(from);
        let m =
            self.mapping()
                .mapper
                .iomap_begin(FilePos::new(block), bs.get(), MapIntent::Read)?;
        let mut has_data = matches!(m.kind, ExtentKind::Mapped | ExtentKind::Delalloc);
        if !has_data {
            if let Some(folio) = self.mapping().cache.find(from) {
                let mut g = folio.lock();
                // The mapper hears of written data only at end_io, after
                // the flush: an unwritten block may hold data in a dirty
                // folio, in one under writeback (copied, unlocked, its I/O
                // in flight) or in a completed write waiting for end_io.
                // Zeroing the cached copy alone would let those old bytes
                // land and be converted; such a block gets its zeroes
                // written like a mapped one (as iomap_zero_range zeroes an
                // unwritten extent whose cache needs writeback).
                has_data = m.kind == ExtentKind::Unwritten
                    && (g.dirty()
                        || folio.under_writeback()
                        || self.mapping().pending_io_overlaps(block, block + bs.get()));
                if !has_data {
                    let fpos = g.pos();
                    let (a, b) = ((from - fpos) as usize, (to - fpos) as usize);
                    let b = b.min(g.size());
                    g.data[a..b].fill(0);
                    return Ok(());
                }
            }
        }
        if !has_data {
            // Not cached: nothing to zero.
            return Ok(());
        }
        let mut zeros = IovIter::zeros(to - from);
        let n = self.write_path().perform_write(
            self.mapping(),
            hint,
            FilePos::new(from),
            &mut zeros,
        )?;
        if n < to - from {
            return Err(Error::Unsupported(format!(
                "could not zero [{from}, {to}) in the cache"
            )));
        }
        Ok(())
    }

    /// Drops the cache over `[from, to)` (block aligned; `to` may be
    /// `u64::MAX`): folios inside go, dirty data with them; a folio
    /// straddling an end has the part inside zeroed and its blocks'
    /// state forgotten (`WritePath::invalidate_range`), and is clean when
    /// no dirty block is left. Pending completions over the range go too.
    ///
    /// Writeback in flight over the range is waited for first, and that of
    /// every folio removed: the caller frees the blocks next, and an I/O
    /// still landing on a freed (maybe reallocated) block would corrupt its
    /// next owner.
    fn invalidate_cache(&self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let mapping = self.mapping();
        mapping.wait_writeback_range(from, to);
        let (partial, removed) = mapping.cache.truncate_range(from, to);
        for f in &removed {
            mapping.wait_on_writeback(f);
        }
        for folio in partial {
            // Locked with no writeback in flight: none can start while the
            // lock is held.
            let mut g = loop {
                let g = folio.lock();
                if !folio.under_writeback() {
                    break g;
                }
                drop(g);
                mapping.wait_on_writeback(&folio);
            };
            let fpos = g.pos();
            let size = g.size() as u64;
            let a = from.max(fpos) - fpos;
            let b = to.min(fpos + size) - fpos;
            if a >= b {
                continue;
            }
            let range = a as usize..b as usize;
            self.write_path()
                .invalidate_range(mapping, &mut g, range.clone());
            g.data[range].fill(0);
            g.flags.set(crate::FolioFlags::UPTODATE, false);
            if g.dirty() && self.write_path().clear_dirty(&mut g, &[]) {
                mapping.clear_folio_dirty(&mut g);
            }
        }
        mapping.forget_pending_io(from, to);
    }

    /// Sets the file size (ftruncate). Shrinking drops the cache past
    /// `size` (dirty data there is discarded, as truncate_inode_pages does),
    /// zeroes the new EOF block past `size` (dirty, so the disk gets the
    /// zeroes, when it has data on disk or is delalloc) and has the mapper
    /// free the blocks past it; growing zeroes the old EOF block's tail and
    /// leaves a hole. Under the write lock.
    pub fn set_len(&self, size: u64) -> Result<()> {
        let hint = &mut *self.lock();
        let capacity = self.mapping().mapper.max_size();
        if size > capacity {
            return Err(Error::FileTooLarge {
                offset: size,
                len: 0,
                capacity,
            });
        }
        let old = self.mapping().size();
        let bs = self.mapping().bs();
        if size < old {
            // The zeroing stays below the old EOF, so it moves no size.
            let tail = bs.round_up(size).min(old);
            if tail > size {
                self.zero_partial(hint, size, tail)?;
            }
            self.zero_cached_tail(size);
            self.invalidate_cache(bs.round_up(size), u64::MAX);
        } else if size > old {
            self.zero_eof_tail(hint, old, size)?;
        }
        self.mapping().mapper.truncate(size)
    }

    /// Zeroes the cached bytes of the block holding `size` past it (what
    /// [`zero_partial`](Self::zero_partial) did not dirty: past the old EOF,
    /// or over a hole).
    fn zero_cached_tail(&self, size: u64) {
        let bs = self.mapping().bs();
        let end = bs.round_up(size);
        if end == size {
            return;
        }
        if let Some(folio) = self.mapping().cache.find(size) {
            let mut g = folio.lock();
            let fpos = g.pos();
            let (a, b) = ((size - fpos) as usize, (end - fpos) as usize);
            let b = b.min(g.size());
            g.data[a..b].fill(0);
        }
    }

    /// fallocate(2) over `[offset, offset + len)`. `Allocate` and `KeepSize`
    /// leave the cache alone (`Allocate` growing the file zeroes the old EOF
    /// block's tail first, as growing does); `PunchHole` zeroes the partial
    /// edge blocks in the cache (dirty where they have data), drops the
    /// cache over the whole blocks and has the mapper free them. A zero
    /// length is refused (EINVAL), as fallocate(2) refuses it.
    pub fn fallocate(&self, offset: u64, len: u64, mode: FallocMode) -> Result<()> {
        let hint = &mut *self.lock();
        if len == 0 {
            return Err(Error::InvalidArgument(format!(
                "fallocate of 0 bytes at offset {offset}"
            )));
        }
        let Some(end) = offset.checked_add(len) else {
            return Err(Error::RangeOverflow { offset, len });
        };
        let mapper = &self.mapping().mapper;
        match mode {
            FallocMode::Allocate | FallocMode::KeepSize => {
                let capacity = mapper.max_size();
                if end > capacity {
                    return Err(Error::FileTooLarge {
                        offset,
                        len,
                        capacity,
                    });
                }
                let old = self.mapping().size();
                if mode == FallocMode::Allocate && end > old {
                    self.zero_eof_tail(hint, old, end)?;
                }
            }
            FallocMode::PunchHole => {
                let bs = self.mapping().bs();
                let size = self.mapping().size();
                let (first, last) = (bs.round_up(offset), bs.round_down(end));
                // The partial edges, below EOF only: past it nothing is read.
                let mut edge = |a: u64, b: u64| -> Result<()> {
                    let b = b.min(size);
                    if a < b {
                        self.zero_partial(hint, a, b)?;
                    }
                    Ok(())
                };
                if first > last {
                    edge(offset, end)?;
                } else {
                    edge(offset, first)?;
                    edge(last, end)?;
                }
                self.invalidate_cache(first, last);
            }
        }
        mapper.fallocate(FilePos::new(offset), len, mode)
    }

    /// Reads at the file position and advances it; short at EOF.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let _w = self.lock();
        let pos = self.pos.load(Ordering::Relaxed);
        let n = self.pread(pos, buf)?;
        self.pos.store(pos + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Reads up to `buf.len()` bytes at `pos` through the cache; returns the
    /// count, short when the file ends first (0 at or past EOF).
    pub fn pread(&self, mut pos: u64, buf: &mut [u8]) -> Result<usize> {
        let isize = self.mapping().size();
        if pos >= isize {
            return Ok(0);
        }
        let total = (buf.len() as u64).min(isize - pos) as usize;
        let mut done = 0;
        while done < total {
            let want = (total - done) as u64;
            let folio = self.mapping().cache.find_or_create(pos, want);
            let mut g = folio.lock();
            let off = (pos - g.pos()) as usize;
            let n = (g.size() - off).min(total - done);
            if !g.uptodate() {
                self.write_path()
                    .read_folio_range(self.mapping(), &mut g, off, off + n)?;
            }
            buf[done..done + n].copy_from_slice(&g.data[off..off + n]);
            done += n;
            pos += n as u64;
        }
        Ok(done)
    }

    /// Sets the file position.
    pub fn seek(&self, pos: u64) {
        let _w = self.lock();
        self.pos.store(pos, Ordering::Relaxed);
    }

    /// The file position.
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }

    /// Writes back every dirty block, flushes the device and has the mapper
    /// make the file's metadata durable. On error the data stays dirty, the
    /// error names the file offset, and a later `fsync` retries.
    pub fn fsync(&self) -> Result<()> {
        self.sync(false)
    }

    /// As [`fsync`](File::fsync), telling the mapper only what fdatasync
    /// needs (`Mapper::sync_metadata(true)`).
    pub fn fdatasync(&self) -> Result<()> {
        self.sync(true)
    }

    fn sync(&self, datasync: bool) -> Result<()> {
        let mapping = self.mapping();
        if let Err(e) = writeback::write_back(mapping) {
            // This pass's error is this file's answer: it is not reported
            // to it a second time (other files see it once each).
            mapping.check_and_advance_wb_err(&self.wb_err_seen);
            return Err(e);
        }
        if let Some(e) = mapping.check_and_advance_wb_err(&self.wb_err_seen) {
            return Err(e);
        }
        mapping.mapper.sync_metadata(datasync)
    }

    /// Writes back the dirty blocks over `[offset, offset + len)` and waits
    /// for those writes (sync_file_range with WRITE and WAIT_AFTER): no
    /// device flush, no metadata, and folios already under writeback are
    /// left to it. Errors are reported here and, once, at each open
    /// file's next fsync. `len == 0` means to the end of the file.
    pub fn writeback(&self, offset: u64, len: u64) -> Result<()> {
        let end = if len == 0 {
            u64::MAX
        } else {
            offset
                .checked_add(len)
                .ok_or(Error::RangeOverflow { offset, len })?
        };
        writeback::write_range(
            self.mapping(),
            offset,
            end,
            writeback::SyncMode::Background,
            None,
        )?;
        writeback::complete_if_journaled(self.mapping())
    }

    /// Whether dropping the file writes its dirty data back (the default)
    /// or leaves it unwritten, as a crash would (`replay
    /// --no-final-writeback`, crash experiments).
    pub fn set_writeback_on_drop(&self, on: bool) {
        self.writeback_on_drop.store(on, Ordering::Relaxed);
    }

    /// Closes the file: writes its dirty data back (as fsync does) and
    /// reports the error that dropping it would lose.
    pub fn close(self) -> Result<()> {
        self.fsync()
    }

    /// Drops the clean folios (drop_caches for this file), but those whose
    /// written data still waits for its completion; returns how many.
    pub fn drop_caches(&self) -> usize {
        self.mapping().drop_clean()
    }

    /// i_size.
    pub fn size(&self) -> u64 {
        self.mapping().size()
    }

    /// The write path's name (`iomap`, `bh-legacy`, ...).
    pub fn write_path_name(&self) -> &'static str {
        self.write_path().name()
    }

    /// The write path.
    pub fn write_path(&self) -> &dyn WritePath {
        self.inode.mapping.write_path()
    }

    /// The shared state (cache, mapper, device).
    pub fn mapping(&self) -> &AddressSpace {
        &self.inode.mapping
    }

    /// The device's I/O counters.
    pub fn device_stats(&self) -> IoStats {
        self.mapping().device.stats()
    }

    /// Bytes of per-block metadata held by the cached folios, and the bytes
    /// of data they cache.
    pub fn metadata_bytes(&self) -> (usize, usize) {
        let mut meta = 0;
        let mut data = 0;
        for f in self.mapping().cache.folios() {
            let g = f.lock();
            meta += self.write_path().private_bytes(&g);
            data += g.size();
        }
        (meta, data)
    }
}

impl Drop for File {
    /// The inode's last file writes back what is dirty, best effort
    /// (close() reports errors): a file that goes away does not leave its
    /// data only in a cache nobody can reach.
    fn drop(&mut self) {
        if std::thread::panicking()
            || Arc::strong_count(&self.inode) > 1
            || !self.writeback_on_drop.load(Ordering::Relaxed)
            || (self.mapping().cache.nr_dirty() == 0
                && self.mapping().cache.nr_writeback() == 0
                && !self.mapping().has_pending_io())
        {
            return;
        }
        let _ = self.fsync();
    }
}

fn iovec<'a>(pos: u64, bufs: &'a [IoSlice<'a>]) -> Result<IovIter<'a>> {
    IovIter::from_iovec(bufs).ok_or(Error::RangeOverflow {
        offset: pos,
        len: u64::MAX,
    })
}
