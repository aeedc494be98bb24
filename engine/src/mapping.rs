//! Mapping file offsets to the device: the filesystem's side of both write
//! paths, and the `Flat` mapper.

use crate::error::{Error, Result};
use crate::units::{BlockSize, DevAddr, FileBlock, FilePos};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Writeback allocation policy, selected per mount; the mapper implements
/// it (UPSTREAM-ALLOC.md §3.3, §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AllocPolicy {
    /// Writeback allocates unwritten extents and converts them when the
    /// I/O completed (`end_io`): a crash before then reads zeroes.
    #[default]
    Unwritten,
    /// Writeback allocates written extents whose metadata is made durable
    /// only after the data (`sync_metadata`), as data=ordered does.
    Ordered,
}

impl AllocPolicy {
    /// The policy's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            AllocPolicy::Unwritten => "unwritten",
            AllocPolicy::Ordered => "ordered",
        }
    }
}

impl fmt::Display for AllocPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AllocPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unwritten" => Ok(AllocPolicy::Unwritten),
            "ordered" => Ok(AllocPolicy::Ordered),
            _ => Err(Error::InvalidArgument(format!(
                "allocation policy {s:?} (expected unwritten or ordered)"
            ))),
        }
    }
}

/// What a `fallocate` does (the modes of fallocate(2) the engine runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallocMode {
    /// Mode 0: unwritten extents over the holes, i_size raised to the end.
    Allocate,
    /// FALLOC_FL_KEEP_SIZE: the same, i_size unchanged.
    KeepSize,
    /// FALLOC_FL_PUNCH_HOLE | KEEP_SIZE: frees the whole blocks inside the
    /// range, zeroes the partial edges; i_size unchanged.
    PunchHole,
}

/// What an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Blocks on the device holding the file's data.
    Mapped,
    /// No blocks: reads see zeroes.
    Hole,
    /// Blocks allocated but not yet written: reads see zeroes.
    Unwritten,
    /// Reserved for delayed allocation, no disk address yet.
    Delalloc,
}

/// Why a mapping is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapIntent {
    /// A buffered read (or read-in of a partial block).
    Read,
    /// A buffered write.
    Write,
    /// Writeback of dirty blocks.
    Writeback,
}

/// One contiguous mapping returned by [`Mapper::iomap_begin`] (the kernel's
/// `struct iomap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iomap {
    /// File position of the mapping's first byte.
    pub offset: FilePos,
    /// Bytes covered.
    pub length: u64,
    /// What the range holds.
    pub kind: ExtentKind,
    /// Device byte address of `offset` (meaningful for `Mapped` and `Unwritten`).
    pub addr: DevAddr,
    /// Freshly allocated or reserved by this call (IOMAP_F_NEW): the parts
    /// a write does not cover must be zeroed, and a short write releases
    /// the reservation it did not use.
    pub new: bool,
}

impl Iomap {
    /// File position one past the mapping's end.
    #[inline]
    pub fn end(&self) -> FilePos {
        self.offset.add(self.length)
    }

    /// Device address of file position `pos`, which must lie in the mapping.
    #[inline]
    pub fn addr_of(&self, pos: FilePos) -> DevAddr {
        self.addr.add(pos.since(self.offset))
    }
}

/// The mapping of one block, for the block-at-a-time (buffer-head) path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMapping {
    /// What the block holds.
    pub kind: ExtentKind,
    /// Device byte address of the block (meaningful for `Mapped` and
    /// `Unwritten`). An address rather than a [`crate::DiskBlock`] so that
    /// a mapper whose region is not block aligned is caught where the
    /// buffer head takes the block number, not rounded silently.
    pub addr: DevAddr,
    /// Freshly allocated by this call.
    pub new: bool,
}

/// The filesystem's side of the write paths: maps file ranges to the
/// device and owns i_size.
pub trait Mapper: Send + Sync {
    /// The filesystem block size (1, 2 or 4 KiB for the files the engine opens).
    fn block_size(&self) -> BlockSize;

    /// Maps `[pos, pos + len)`: returns the extent covering `pos`, clipped
    /// to the request (it may be shorter; the caller asks again for the rest).
    fn iomap_begin(&self, pos: FilePos, len: u64, intent: MapIntent) -> Result<Iomap>;

    /// Ends a mapping once `written` bytes of it were used.
    fn iomap_end(&self, _pos: FilePos, _len: u64, _written: u64, _intent: MapIntent) -> Result<()> {
        Ok(())
    }

    /// Maps the file block `block`; `create` asks for allocation when
    /// there is none.
    fn get_block(&self, block: FileBlock, create: bool) -> Result<BlockMapping>;

    /// The file size (i_size).
    fn size(&self) -> u64;

    /// Moves i_size (called under the file's write lock, before the folio
    /// holding the new EOF is unlocked).
    fn set_size(&self, size: u64);

    /// The largest size the file can reach (a Flat region's capacity).
    fn max_size(&self) -> u64;

    /// Checks, before a single byte is copied, that a write of `len` bytes at
    /// `pos` can be done; refusing here leaves file and cache untouched.
    ///
    /// A zero-length write is accepted at any offset, as [`crate::File`]
    /// does it (it returns 0 before asking the mapper) and as the ext4
    /// mapper answers: every mapper gives the same answer for it.
    fn prepare_write(&self, pos: FilePos, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let capacity = self.max_size();
        let pos = pos.get();
        match pos.checked_add(len) {
            Some(end) if end <= capacity => Ok(()),
            Some(_) => Err(Error::FileTooLarge {
                offset: pos,
                len,
                capacity,
            }),
            None => Err(Error::RangeOverflow { offset: pos, len }),
        }
    }

    /// Writeback: allocates disk blocks for the delalloc range starting at
    /// `pos` (block aligned), at most `len` bytes, and returns the result,
    /// `Mapped` or `Unwritten` with its address (it may be shorter).
    fn map_blocks(&self, pos: FilePos, len: u64) -> Result<Iomap> {
        Err(Error::Unsupported(format!(
            "this mapper has no delayed allocation (map_blocks of {len} bytes at {pos})"
        )))
    }

    /// Drops the reservations of the delalloc blocks in `[pos, pos + len)`
    /// (block aligned): a failed or short write does not keep space it did
    /// not use.
    fn release_delalloc(&self, _pos: FilePos, _len: u64) {}

    /// The writeback I/O of `[pos, pos + len)` completed (and the device
    /// was flushed): convert the unwritten extents there and move the
    /// on-disk size to `min(pos + len, i_size)`.
    fn end_io(&self, _pos: FilePos, _len: u64) -> Result<()> {
        Ok(())
    }

    /// True when the mapper journals its metadata with commits that flush
    /// the device before their commit block (jbd2 in data=ordered): what
    /// [`Mapper::end_io`] records joins the running transaction and is
    /// durable only with a commit, which follows the data's flush, so a
    /// completion needs no flush of its own and is reported as soon as
    /// the write completed (as ext4's end_io runs at I/O completion); and
    /// [`Mapper::sync_metadata`] makes the data durable by itself (the
    /// commit, or one flush when there is nothing to commit), so fsync
    /// does not flush first (ext4's fsync leaves the barrier to jbd2).
    fn commit_orders_data(&self) -> bool {
        false
    }

    /// Called by fsync / fdatasync after the data was written back (and
    /// the device flushed, unless [`Mapper::commit_orders_data`]): make the
    /// file's metadata durable (extents of the ordered policy, the size).
    /// `datasync` is fdatasync's.
    fn sync_metadata(&self, _datasync: bool) -> Result<()> {
        Ok(())
    }

    /// Sets i_size to `size`; when shrinking, releases the delalloc
    /// reservations and frees the blocks from the first block wholly past
    /// `size` on. The engine has already dropped and zeroed the cache
    /// (`File::set_len`).
    fn truncate(&self, size: u64) -> Result<()> {
        let capacity = self.max_size();
        if size > capacity {
            return Err(Error::FileTooLarge {
                offset: size,
                len: 0,
                capacity,
            });
        }
        self.set_size(size);
        Ok(())
    }

    /// fallocate: `Allocate` / `KeepSize` make unwritten extents over the
    /// holes of the blocks covering `[pos, pos + len)` (`Allocate` also
    /// raises i_size to `pos + len`); `PunchHole` frees the whole blocks
    /// inside the range and releases their reservations (size unchanged).
    fn fallocate(&self, pos: FilePos, len: u64, mode: FallocMode) -> Result<()> {
        Err(Error::Unsupported(format!(
            "fallocate {mode:?} of {len} bytes at {pos}"
        )))
    }
}

/// A file that is one contiguous region of a device: `[base, base +
/// capacity)`. Every block has its place on the device; the file starts at
/// `size` and can grow up to `capacity`.
///
/// Flat keeps the block ranges that read as zeroes whatever the device
/// holds there: initially everything from the block after the initial EOF
/// on; a punched hole adds its whole blocks, a truncate everything past the
/// new EOF block, and a completed writeback (`end_io`) removes what it
/// wrote. They map as `Unwritten` (with their address, so writeback writes
/// in place), so a write into them zeroes what it does not cover and a read
/// sees zeroes. Flat never reserves (no `Delalloc`, no `NoSpace`): its
/// capacity is `FileTooLarge`, as before.
#[derive(Debug)]
pub struct Flat {
    base: DevAddr,
    capacity: u64,
    block_size: BlockSize,
    size: AtomicU64,
    /// File offset of the first unwritten byte (the capacity when there is
    /// none): below it every block is written, so the write hot path
    /// answers from this one load and never takes `unwritten`'s lock.
    clean_below: AtomicU64,
    /// The unwritten ranges, start -> end: block aligned, disjoint, not
    /// touching (merged), inside the capacity.
    unwritten: Mutex<BTreeMap<u64, u64>>,
}

impl Flat {
    /// A Flat file at device offset `base` with room for `capacity` bytes and
    /// current size `size`. `block_size` must be 1024, 2048 or 4096, and
    /// `base` and `capacity` multiples of it.
    pub fn new(base: u64, capacity: u64, block_size: u32, size: u64) -> Result<Self> {
        if !matches!(block_size, 1024 | 2048 | 4096) {
            return Err(Error::InvalidArgument(format!(
                "block size {block_size} (must be 1024, 2048 or 4096)"
            )));
        }
        let checked = BlockSize::new(block_size)?;
        let bs = checked.get();
        if !base.is_multiple_of(bs) || !capacity.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "Flat region base {base} and capacity {capacity} must be multiples of the block size {bs}"
            )));
        }
        if base.checked_add(capacity).is_none() || size > capacity {
            return Err(Error::InvalidArgument(format!(
                "Flat region at {base} of {capacity} bytes cannot hold size {size}"
            )));
        }
        let flat = Flat {
            base: DevAddr::new(base),
            capacity,
            block_size: checked,
            size: AtomicU64::new(size),
            clean_below: AtomicU64::new(capacity),
            unwritten: Mutex::new(BTreeMap::new()),
        };
        // The device past the initial EOF block holds whatever it held:
        // nothing of this file.
        let mut map = flat.lock_unwritten();
        flat.add_unwritten(&mut map, checked.round_up(size), capacity);
        drop(map);
        Ok(flat)
    }

    /// Device address of the file's first byte.
    pub fn base(&self) -> DevAddr {
        self.base
    }

    /// The file ranges that read as zeroes whatever the device holds
    /// (unwritten), in order: what a check of the device bytes must
    /// take as zeroes.
    pub fn unwritten_ranges(&self) -> Vec<Range<u64>> {
        self.lock_unwritten().iter().map(|(&s, &e)| s..e).collect()
    }

    fn lock_unwritten(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.unwritten.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes the fast check from the map (under its lock).
    fn publish(&self, map: &BTreeMap<u64, u64>) {
        let first = map.keys().next().copied().unwrap_or(self.capacity);
        self.clean_below.store(first, Ordering::Release);
    }

    /// Adds `[start, end)` (block aligned, clipped to the capacity).
    fn add_unwritten(&self, map: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
        let (mut start, mut end) = (start, end.min(self.capacity));
        if start >= end {
            return;
        }
        // Absorb every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = map
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            map.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        map.insert(start, end);
        self.publish(map);
    }

    /// Removes `[start, end)` (block aligned).
    fn remove_unwritten(&self, map: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = map
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            map.remove(&s);
            if s < start {
                map.insert(s, start);
            }
            if e > end {
                map.insert(end, e);
            }
        }
        self.publish(map);
    }

    /// What `pos` (below the capacity) is, and up to where: (unwritten,
    /// end of that state), under the lock. The slow path of the mapping.
    fn state_at(&self, pos: u64) -> (bool, u64) {
        let map = self.lock_unwritten();
        if let Some((_, &e)) = map.range(..=pos).next_back() {
            if e > pos {
                return (true, e);
            }
        }
        let next = map.range(pos..).next().map_or(self.capacity, |(&s, _)| s);
        (false, next)
    }

    /// `iomap_begin` at or past the first unwritten byte: out of line, so
    /// the hot path (written blocks) pays nothing for it.
    #[cold]
    #[inline(never)]
    fn map_slow(&self, pos: FilePos, len: u64) -> Iomap {
        let p = pos.get();
        let (unwritten, until) = self.state_at(p);
        Iomap {
            offset: pos,
            length: len.min(until - p),
            kind: if unwritten {
                ExtentKind::Unwritten
            } else {
                ExtentKind::Mapped
            },
            addr: self.base.add(p),
            new: false,
        }
    }

    fn too_large(&self, offset: u64, len: u64) -> Error {
        Error::FileTooLarge {
            offset,
            len,
            capacity: self.capacity,
        }
    }
}

impl Mapper for Flat {
    #[inline]
    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    #[inline]
    fn iomap_begin(&self, pos: FilePos, len: u64, _intent: MapIntent) -> Result<Iomap> {
        let p = pos.get();
        if p >= self.capacity {
            return Err(self.too_large(p, len));
        }
        let clean = self.clean_below.load(Ordering::Acquire);
        if p < clean {
            // The hot path: written blocks, no lock.
            return Ok(Iomap {
                offset: pos,
                length: len.min(clean - p),
                kind: ExtentKind::Mapped,
                addr: self.base.add(p),
                new: false,
            });
        }
        Ok(self.map_slow(pos, len))
    }

    fn get_block(&self, block: FileBlock, create: bool) -> Result<BlockMapping> {
        let bs = self.block_size;
        let pos = block.pos(bs).filter(|p| p.get() < self.capacity);
        let Some(pos) = pos else {
            return Err(self.too_large(block.get().saturating_mul(bs.get()), bs.get()));
        };
        let p = pos.get();
        let unwritten = p >= self.clean_below.load(Ordering::Acquire) && self.state_at(p).0;
        Ok(BlockMapping {
            kind: if unwritten {
                ExtentKind::Unwritten
            } else {
                ExtentKind::Mapped
            },
            addr: self.base.add(p),
            new: unwritten && create,
        })
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    fn max_size(&self) -> u64 {
        self.capacity
    }

    fn end_io(&self, pos: FilePos, len: u64) -> Result<()> {
        let start = pos.get();
        let end = start.saturating_add(len);
        if end <= self.clean_below.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut map = self.lock_unwritten();
        // Under the lock that truncate takes too: what lies past the EOF
        // block now stays unwritten even if it was written before a
        // truncate moved EOF below it.
        let eof = self.block_size.round_up(self.size());
        let start = self.block_size.round_down(start);
        self.remove_unwritten(&mut map, start, self.block_size.round_up(end).min(eof));
        Ok(())
    }

    fn truncate(&self, size: u64) -> Result<()> {
        if size > self.capacity {
            return Err(self.too_large(size, 0));
        }
        let mut map = self.lock_unwritten();
        let old = self.size();
        self.set_size(size);
        if size < old {
            self.add_unwritten(&mut map, self.block_size.round_up(size), self.capacity);
        }
        Ok(())
    }

    fn fallocate(&self, pos: FilePos, len: u64, mode: FallocMode) -> Result<()> {
        let start = pos.get();
        let Some(end) = start.checked_add(len) else {
            return Err(Error::RangeOverflow { offset: start, len });
        };
        match mode {
            FallocMode::Allocate | FallocMode::KeepSize => {
                if end > self.capacity {
                    return Err(self.too_large(start, len));
                }
                // Every block already has its place: only the size moves.
                let _map = self.lock_unwritten();
                if mode == FallocMode::Allocate && end > self.size() {
                    self.set_size(end);
                }
            }
            FallocMode::PunchHole => {
                let bs = self.block_size;
                let mut map = self.lock_unwritten();
                self.add_unwritten(&mut map, bs.round_up(start), bs.round_down(end));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_maps_and_bounds() {
        // Full: every block written (an empty Flat is all unwritten, below).
        let f = Flat::new(8192, 1 << 20, 4096, 1 << 20).unwrap();
        let p = FilePos::new;
        let b = FileBlock::new;
        let m = f.iomap_begin(p(100), 1 << 30, MapIntent::Write).unwrap();
        assert_eq!(
            (m.addr.get(), m.length, m.kind),
            (8292, (1 << 20) - 100, ExtentKind::Mapped)
        );
        assert!(f.iomap_begin(p(1 << 20), 1, MapIntent::Write).is_err());
        assert_eq!(f.get_block(b(2), false).unwrap().addr.get(), 8192 + 8192);
        assert!(f.get_block(b(256), false).is_err());
        assert!(f.get_block(b(u64::MAX), false).is_err());
        assert!(f.prepare_write(p((1 << 20) - 1), 1).is_ok());
        assert!(matches!(
            f.prepare_write(p(1 << 20), 1),
            Err(Error::FileTooLarge { .. })
        ));
        assert!(matches!(
            f.prepare_write(p(u64::MAX), 2),
            Err(Error::RangeOverflow { .. })
        ));
        // Zero bytes past the capacity: accepted, as File::pwrite and the
        // ext4 mapper do.
        assert!(f.prepare_write(p(u64::MAX), 0).is_ok());
        assert!(f.prepare_write(p(1 << 21), 0).is_ok());
        assert!(Flat::new(0, 4096, 512, 0).is_err());
        assert!(Flat::new(0, 1000, 1024, 0).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one unwritten range is the point
    fn flat_unwritten_ranges_follow_writeback_truncate_and_punch() {
        let p = FilePos::new;
        let f = Flat::new(0, 64 << 10, 4096, 5000).unwrap();
        // The initial EOF block is written, everything after it unwritten.
        assert_eq!(f.unwritten_ranges(), vec![8192..65536]);
        let m = f.iomap_begin(p(0), 1 << 20, MapIntent::Write).unwrap();
        assert_eq!((m.kind, m.length), (ExtentKind::Mapped, 8192));
        let m = f.iomap_begin(p(9000), 100, MapIntent::Read).unwrap();
        assert_eq!((m.kind, m.addr.get()), (ExtentKind::Unwritten, 9000));
        let b = f.get_block(FileBlock::new(3), true).unwrap();
        assert_eq!((b.kind, b.new), (ExtentKind::Unwritten, true));
        assert!(!f.get_block(FileBlock::new(3), false).unwrap().new);
        // Writeback completes [8192, 16384): converted, but only below the
        // EOF block.
        f.set_size(12000);
        f.end_io(p(8192), 16384).unwrap();
        assert_eq!(f.unwritten_ranges(), vec![12288..65536]);
        let m = f.iomap_begin(p(0), 1 << 20, MapIntent::Write).unwrap();
        assert_eq!((m.kind, m.length), (ExtentKind::Mapped, 12288));
        // A punch adds its whole blocks only.
        f.fallocate(p(1000), 7400, FallocMode::PunchHole).unwrap();
        assert_eq!(f.unwritten_ranges(), vec![4096..8192, 12288..65536]);
        let m = f.iomap_begin(p(0), 1 << 20, MapIntent::Write).unwrap();
        assert_eq!((m.kind, m.length), (ExtentKind::Mapped, 4096));
        let m = f.iomap_begin(p(8192), 1 << 20, MapIntent::Write).unwrap();
        assert_eq!((m.kind, m.length), (ExtentKind::Mapped, 4096));
        // A truncate down unwrites past its EOF block; up, only the size.
        f.truncate(3000).unwrap();
        assert_eq!(f.unwritten_ranges(), vec![4096..65536]);
        f.truncate(40000).unwrap();
        assert_eq!((f.size(), f.unwritten_ranges()), (40000, vec![4096..65536]));
        assert!(matches!(
            f.truncate(1 << 20),
            Err(Error::FileTooLarge { .. })
        ));
        // fallocate moves only the size, within the capacity.
        f.fallocate(p(60000), 5000, FallocMode::KeepSize).unwrap();
        assert_eq!(f.size(), 40000);
        f.fallocate(p(60000), 5000, FallocMode::Allocate).unwrap();
        assert_eq!(f.size(), 65000);
        assert!(f.fallocate(p(60000), 6000, FallocMode::Allocate).is_err());
        assert!(f.map_blocks(p(0), 4096).is_err());
        assert_eq!(
            "ordered".parse::<AllocPolicy>().unwrap(),
            AllocPolicy::Ordered
        );
        assert_eq!(AllocPolicy::default().to_string(), "unwritten");
        assert!("x".parse::<AllocPolicy>().is_err());
    }
}
