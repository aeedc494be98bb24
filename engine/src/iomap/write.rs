//! iomap write, named as fs/iomap/buffered-io.c names it:
//! `iomap_file_buffered_write` (per extent), `iomap_write_iter` (per
//! folio), `iomap_write_begin` / `__iomap_write_begin` (the edge blocks),
//! `iomap_write_end`.

use super::{i_blocks_per_folio, ifs_alloc};
use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::{FolioData, FolioFlags, FolioPrivate};
use crate::iov::IovIter;
use crate::mapping::{ExtentKind, Iomap, MapIntent};
use crate::page_cache::FolioHint;
use crate::units::{DevAddr, FilePos};

/// The write loop, per extent: `iomap_file_buffered_write` with its
/// `iomap_iter` (fs/iomap/buffered-io.c, fs/iomap/iter.c): ask the mapper
/// for the extent at `pos` (`iomap_begin`), write into it
/// ([`iomap_write_iter`]), end it (`iomap_end`), until `src` is used up.
///
/// Where ours differs: the kernel's iterator advances by what the
/// previous round processed and handles a short iteration by calling
/// `iomap_end` then `iomap_begin` again; here the loop does that itself,
/// and an error after some progress returns the bytes written (as
/// `iomap_file_buffered_write` returns `iter.pos - iocb->ki_pos`).
pub(super) fn iomap_file_buffered_write(
    mapping: &AddressSpace,
    hint: &mut FolioHint,
    pos: FilePos,
    src: &mut IovIter<'_>,
) -> Result<u64> {
    let mut pos = pos.get();
    let mut written = 0u64;
    // Only writers move i_size, and the caller holds the write lock: read
    // it once and keep it current here instead of asking the mapper per folio.
    let mut isize = mapping.size();
    while src.remaining() > 0 {
        let want = src.remaining();
        // Used in place, by reference: moving the mapping out of the
        // returned Result cost a store-forwarding stall (about 6 ns a write
        // on the criterion bench, 23% of this function's samples in perf).
        let mapped = mapping
            .mapper
            .iomap_begin(FilePos::new(pos), want, MapIntent::Write);
        let iomap = match &mapped {
            Ok(m) => m,
            Err(_) if written == 0 => return mapped.map(|_| 0),
            Err(_) => return Ok(written),
        };
        let ext_end = iomap.end().get().min(pos + want);
        let start = pos;
        let (n, res) = iomap_write_iter(mapping, hint, iomap, pos, ext_end, src, &mut isize);
        pos += n;
        written += n;
        if let Err(e) = res {
            if iomap.kind == ExtentKind::Delalloc && iomap.new {
                iomap_file_buffered_write_punch_delalloc(mapping, iomap, start, pos);
            }
            // Finishing the mapping is best effort: the write error is what
            // the caller needs to see.
            let _ = mapping.mapper.iomap_end(
                FilePos::new(start),
                ext_end - start,
                pos - start,
                MapIntent::Write,
            );
            return if written == 0 { Err(e) } else { Ok(written) };
        }
        // The bytes are in the cache and i_size covers them: report them
        // (the contract of perform_write) rather than the end error.
        let ended = mapping.mapper.iomap_end(
            FilePos::new(start),
            ext_end - start,
            pos - start,
            MapIntent::Write,
        );
        if let Err(e) = ended {
            return if written == 0 { Err(e) } else { Ok(written) };
        }
    }
    Ok(written)
}

/// `iomap_file_buffered_write_punch_delalloc`: a write that stopped short
/// inside a delalloc mapping it reserved (`new`) gives back the blocks it
/// did not use: from the first block after the written bytes (the whole
/// mapping when nothing was written, from `start`'s block) to the mapping's
/// end, except blocks dirty in the cache below EOF (someone's data is
/// there, and their reservation with it). Past EOF everything goes.
pub(crate) fn iomap_file_buffered_write_punch_delalloc(
    mapping: &AddressSpace,
    iomap: &Iomap,
    start: u64,
    written_end: u64,
) {
    let bs = mapping.bs();
    let from = if written_end <= start {
        bs.round_down(start)
    } else {
        bs.round_up(written_end)
    };
    let to = bs.round_up(iomap.end().get());
    let isize = mapping.size();
    let mut run: Option<u64> = None;
    let mut b = from;
    while b < to {
        let keep = b < isize && block_dirty_in_cache(mapping, b);
        match (keep, run) {
            (false, None) => run = Some(b),
            (true, Some(r)) => {
                mapping.mapper.release_delalloc(FilePos::new(r), b - r);
                run = None;
            }
            _ => {}
        }
        b += bs.get();
    }
    if let Some(r) = run {
        mapping.mapper.release_delalloc(FilePos::new(r), to - r);
    }
}

/// True when the block at file offset `pos` is dirty in the cache
/// (`iomap_write_delalloc_scan`'s test of the ifs dirty bits).
fn block_dirty_in_cache(mapping: &AddressSpace, pos: u64) -> bool {
    let Some(folio) = mapping.cache.find(pos) else {
        return false;
    };
    let g = folio.lock();
    if !g.dirty() {
        return false;
    }
    match &g.private {
        FolioPrivate::Iomap(s) => s.is_dirty(((pos - g.pos()) >> mapping.bs().shift()) as usize),
        // Dirty with no per-block state: every block is.
        _ => true,
    }
}

/// `iomap_write_iter`: the folios of one extent, file bytes `[pos, ext_end)`,
/// each one locked, prepared ([`iomap_write_begin`]), copied into and
/// committed ([`iomap_write_end`]) with i_size moved before the unlock.
/// Returns the bytes written and, if a folio failed, its error.
///
/// Where ours differs: the kernel faults the user pages in first
/// (`fault_in_iov_iter_readable`) and retries a short copy with a smaller
/// chunk; the copy source here is always resident, so a short copy means
/// the source ended.
#[inline]
fn iomap_write_iter(
    mapping: &AddressSpace,
    hint: &mut FolioHint,
    iomap: &Iomap,
    mut pos: u64,
    ext_end: u64,
    src: &mut IovIter<'_>,
    isize: &mut u64,
) -> (u64, Result<()>) {
    let chunk = mapping.cache.max_folio_size();
    let start = pos;
    while pos < ext_end {
        let bytes = (chunk - pos % chunk).min(ext_end - pos);
        match write_one_folio(mapping, hint, iomap, pos, bytes, src, isize) {
            Ok(n) => pos += n,
            Err(e) => return (pos - start, Err(e)),
        }
    }
    (pos - start, Ok(()))
}

/// One round of [`iomap_write_iter`]'s loop: find or create the folio and
/// lock it (`iomap_get_folio`), [`iomap_write_begin`], copy
/// (`copy_folio_from_iter_atomic`), [`iomap_write_end`], i_size, unlock.
/// Returns the bytes written (the folio may be smaller than asked).
#[inline]
fn write_one_folio(
    mapping: &AddressSpace,
    hint: &mut FolioHint,
    iomap: &Iomap,
    pos: u64,
    bytes: u64,
    src: &mut IovIter<'_>,
    isize: &mut u64,
) -> Result<u64> {
    mapping.cache.with_locked(hint, pos, bytes, |g| {
        // Offsets come from the folio we got, not from the request.
        let off = (pos - g.pos()) as usize;
        let len = (g.size() - off).min(bytes as usize);
        iomap_write_begin(mapping, iomap, g, off, len, *isize)?;
        let copied = src.copy_to(&mut g.data[off..off + len]);
        iomap_write_end(mapping, g, off, copied);
        // i_size moves before the folio is unlocked (DESIGN.md §4 R12).
        mapping.extend_size(isize, pos + copied as u64);
        Ok(copied as u64)
    })
}

/// `iomap_write_begin`: nothing to do on an uptodate folio or one the
/// write covers whole; otherwise [`__iomap_write_begin`].
///
/// Where ours differs: the kernel also gets and locks the folio here
/// (`__iomap_get_folio`) and handles inline data and `srcmap`; the folio
/// arrives locked from [`write_one_folio`], and there is no inline data.
#[inline]
fn iomap_write_begin(
    mapping: &AddressSpace,
    iomap: &Iomap,
    folio: &mut FolioData,
    off: usize,
    len: usize,
    isize: u64,
) -> Result<()> {
    if folio.uptodate() || (off == 0 && len == folio.size()) {
        return Ok(());
    }
    __iomap_write_begin(mapping, iomap, folio, off, len, isize)
}

/// `__iomap_write_begin`: prepares folio bytes `[off, off + len)` of a
/// folio that is not uptodate for the copy. The partial edge blocks that
/// are not uptodate are read (mapped data inside EOF) or zeroed (holes,
/// unwritten, new, past EOF); blocks the write covers entirely are never
/// touched.
///
/// Where ours differs: the kernel walks every block of the range with
/// `iomap_adjust_read_range` to skip the uptodate ones and the fully
/// covered ones; only the first and last block can be partial, so this
/// looks at those two directly ([`prepare_edge_block`]). It allocates the
/// per-folio state (`ifs_alloc`) only when a folio has more than one block,
/// as the kernel does.
fn __iomap_write_begin(
    mapping: &AddressSpace,
    iomap: &Iomap,
    folio: &mut FolioData,
    off: usize,
    len: usize,
    isize: u64,
) -> Result<()> {
    let bs = mapping.bs();
    let end = off + len;
    let first = off >> bs.shift();
    let last = (end - 1) >> bs.shift();
    let aligned = |x: usize| bs.is_aligned(x as u64);
    if !aligned(off) {
        prepare_edge_block(mapping, iomap, folio, first, (off, end), isize)?;
    }
    if !aligned(end) && (last != first || aligned(off)) {
        prepare_edge_block(mapping, iomap, folio, last, (off, end), isize)?;
    }
    Ok(())
}

/// True when block `b` of the folio is uptodate.
fn block_uptodate(folio: &FolioData, b: usize) -> bool {
    match &folio.private {
        FolioPrivate::Iomap(s) => s.is_uptodate(b, b + 1),
        _ => folio.uptodate(),
    }
}

/// One round of `__iomap_write_begin`'s block loop for a partially written
/// block `b`: zero what the copy will not fill (`folio_zero_segments`) or
/// read the block synchronously (`iomap_read_folio_range`).
fn prepare_edge_block(
    mapping: &AddressSpace,
    iomap: &Iomap,
    folio: &mut FolioData,
    b: usize,
    (from, to): (usize, usize),
    isize: u64,
) -> Result<()> {
    let bsize = mapping.bs();
    if i_blocks_per_folio(folio, bsize) > 1 {
        ifs_alloc(folio, bsize);
    }
    if block_uptodate(folio, b) {
        return Ok(());
    }
    let bs = bsize.as_usize();
    let bstart = b << bsize.shift();
    let block_pos = FilePos::new(folio.pos() + bstart as u64);
    let mut needs_zero = block_pos.get() >= isize || iomap.kind != ExtentKind::Mapped || iomap.new;
    let mut addr = None;
    if needs_zero && block_pos.get() < isize && !iomap.new {
        // The extent was mapped before this folio was found: writeback may
        // have converted the block since (end_io) and reclaim evicted the
        // folio that held its data, so this new folio would zero data that
        // is on the disk. Asked again under the folio lock, the mapper's
        // answer is current (a conversion precedes the eviction that made
        // this folio new). The kernel's iomap checks a validity cookie
        // (`iomap_valid`) for the same race; here only the slow path of a
        // partial block that is not uptodate pays for it. The buffer-head
        // path has no such window: it maps each head with get_block under
        // the folio lock.
        let m = mapping
            .mapper
            .iomap_begin(block_pos, bsize.get(), MapIntent::Read)?;
        if m.kind == ExtentKind::Mapped {
            needs_zero = false;
            addr = Some(m.addr_of(block_pos));
        }
    }
    if needs_zero {
        // Zero only what the copy will not fill; the block becomes uptodate
        // in iomap_write_end, after the copy (never half-initialised).
        let block = &mut folio.data[bstart..bstart + bs];
        let (lo, hi) = (from.max(bstart) - bstart, to.min(bstart + bs) - bstart);
        block[..lo].fill(0);
        block[hi..].fill(0);
        return Ok(());
    }
    let addr = addr.unwrap_or_else(|| block_addr(iomap, block_pos));
    // One synchronous read per edge block, as `__iomap_write_begin` does
    // (the buffer-head __block_write_begin_int queues both edges and then waits: a real
    // difference between the kernel's paths, kept).
    mapping.read_blocks(addr, &mut folio.data[bstart..bstart + bs])?;
    if let FolioPrivate::Iomap(s) = &mut folio.private {
        if s.set_uptodate(b, b + 1) {
            folio.flags.set(FolioFlags::UPTODATE, true);
        }
    }
    Ok(())
}

/// Device address of the block at file position `block_pos`. Extents are
/// block-aligned, so the block holding a mapped byte lies in the same
/// extent even when it starts before `iomap.offset`.
fn block_addr(iomap: &Iomap, block_pos: FilePos) -> DevAddr {
    if block_pos >= iomap.offset {
        iomap.addr_of(block_pos)
    } else {
        iomap.addr.sub(iomap.offset.since(block_pos))
    }
}

/// `iomap_write_end` (with `__iomap_write_end`): commits `copied` bytes at
/// `off`. The written blocks become uptodate (`iomap_set_range_uptodate`)
/// and dirty (`iomap_set_range_dirty`), the folio uptodate once every block
/// is, and dirty (`filemap_dirty_folio`).
///
/// Where ours differs: the kernel rejects a short copy into a folio that is
/// not uptodate (returns 0 so the caller retries); the copy source here
/// cannot fault, so a short copy is the end of the source and what was
/// copied is committed. i_size is moved by the caller
/// ([`write_one_folio`]), as `iomap_write_iter` does after this returns.
#[inline]
fn iomap_write_end(mapping: &AddressSpace, folio: &mut FolioData, off: usize, copied: usize) {
    if copied == 0 {
        return;
    }
    let bs = mapping.bs();
    let bits = bs.shift();
    let n = i_blocks_per_folio(folio, bs);
    let (first, last) = (off >> bits, (off + copied + bs.as_usize() - 1) >> bits);
    let whole = off == 0 && copied == folio.size();
    let has_state = matches!(folio.private, FolioPrivate::Iomap(_));
    if n == 1 || (whole && !has_state) {
        folio.flags.set(FolioFlags::UPTODATE, true);
    } else if !has_state && folio.uptodate() && folio.dirty() {
        // Every block is already uptodate and dirty at folio level.
    } else {
        let was_uptodate = folio.uptodate();
        let s = ifs_alloc(folio, bs);
        let full = !was_uptodate && s.set_uptodate(first, last);
        s.set_dirty(first, last);
        if full {
            folio.flags.set(FolioFlags::UPTODATE, true);
        }
    }
    mapping.mark_folio_dirty(folio);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::Mem;
    use crate::{
        BlockMapping, BlockSize, File, FileBlock, FileOptions, IomapPath, Mapper, OrderPolicy,
    };
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// A delalloc mapper of 1 KiB blocks: a write over a hole reserves it
    /// (Delalloc + new), writeback maps a reserved block in place; it
    /// records what is released.
    #[derive(Default)]
    struct Reserving {
        reserved: Mutex<BTreeSet<u64>>,
        releases: Mutex<Vec<(u64, u64)>>,
        size: AtomicU64,
    }

    impl Reserving {
        fn reserved(&self) -> usize {
            self.reserved.lock().unwrap().len()
        }
        fn releases(&self) -> Vec<(u64, u64)> {
            self.releases.lock().unwrap().clone()
        }
    }

    impl Mapper for Reserving {
        fn block_size(&self) -> BlockSize {
            BlockSize::new(1024).unwrap()
        }
        fn iomap_begin(&self, pos: FilePos, len: u64, intent: MapIntent) -> Result<Iomap> {
            let mut r = self.reserved.lock().unwrap();
            let b = pos.get() >> 10;
            let last = (pos.get() + len.max(1) - 1) >> 10;
            let held = r.contains(&b);
            let mut n = 1;
            while b + n <= last && r.contains(&(b + n)) == held {
                n += 1;
            }
            let (kind, new) = match (held, intent) {
                (true, _) => (ExtentKind::Delalloc, false),
                (false, MapIntent::Write) => {
                    r.extend(b..b + n);
                    (ExtentKind::Delalloc, true)
                }
                (false, _) => (ExtentKind::Hole, false),
            };
            Ok(Iomap {
                offset: pos,
                length: (((b + n) << 10) - pos.get()).min(len),
                kind,
                addr: DevAddr::new(0),
                new,
            })
        }
        fn get_block(&self, _block: FileBlock, _create: bool) -> Result<BlockMapping> {
            unreachable!("the iomap path maps by range")
        }
        fn map_blocks(&self, pos: FilePos, len: u64) -> Result<Iomap> {
            let mut r = self.reserved.lock().unwrap();
            for b in pos.get() >> 10..(pos.get() + len).div_ceil(1024) {
                r.remove(&b);
            }
            Ok(Iomap {
                offset: pos,
                length: len,
                kind: ExtentKind::Mapped,
                addr: DevAddr::new(pos.get()),
                new: true,
            })
        }
        fn release_delalloc(&self, pos: FilePos, len: u64) {
            let mut r = self.reserved.lock().unwrap();
            for b in pos.get() >> 10..(pos.get() + len) >> 10 {
                r.remove(&b);
            }
            self.releases.lock().unwrap().push((pos.get(), len));
        }
        fn size(&self) -> u64 {
            self.size.load(Ordering::Acquire)
        }
        fn set_size(&self, size: u64) {
            self.size.store(size, Ordering::Release);
        }
        fn max_size(&self) -> u64 {
            1 << 20
        }
    }

    /// A short write inside a delalloc mapping it reserved gives back the
    /// blocks after the written bytes, but not those dirty in the cache
    /// below EOF; with nothing written, from the first block.
    #[test]
    fn short_write_punches_the_unused_reservation() {
        let mem = Arc::new(Mem::new(1 << 20));
        let mapper = Arc::new(Reserving::default());
        let opts = FileOptions {
            order: OrderPolicy::Fixed(2),
        };
        let file = File::open(mem, mapper.clone(), Box::new(IomapPath::new()), opts).unwrap();
        // Blocks 0..=4 reserved and dirty, EOF at 5000.
        file.pwrite(0, &[1u8; 5000]).unwrap();
        assert_eq!(mapper.reserved(), 5);
        // A write that reserved [5120, 16384) and then stopped at 3000 (as
        // a failed folio would stop it).
        let m = mapper
            .iomap_begin(FilePos::new(5120), 16384 - 5120, MapIntent::Write)
            .unwrap();
        assert!(m.new && m.kind == ExtentKind::Delalloc);
        assert_eq!(mapper.reserved(), 16);
        let iomap = Iomap {
            offset: FilePos::new(0),
            length: 16384,
            ..m
        };
        iomap_file_buffered_write_punch_delalloc(file.mapping(), &iomap, 0, 3000);
        // Blocks 3 and 4 hold dirty data: kept. 5..16 go.
        assert_eq!(mapper.releases(), vec![(5120, 11264)]);
        assert_eq!(mapper.reserved(), 5);
        // Nothing written by a mapping starting at 1500: from block 1 on,
        // and past EOF everything (the cache is clean past it).
        let _ = mapper
            .iomap_begin(FilePos::new(5120), 4096, MapIntent::Write)
            .unwrap();
        file.fsync().unwrap();
        let iomap = Iomap {
            offset: FilePos::new(1500),
            length: 9216 - 1500,
            ..m
        };
        iomap_file_buffered_write_punch_delalloc(file.mapping(), &iomap, 1500, 1500);
        assert_eq!(mapper.releases()[1], (1024, 9216 - 1024));
        assert_eq!(mapper.reserved(), 0);
    }
}
