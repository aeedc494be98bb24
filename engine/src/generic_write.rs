//! The shared per-folio write loop for paths that map block by block (the
//! kernel's `generic_perform_write`): the buffer-head path plugs its
//! write_begin / write_end in through [`FolioWriteOps`], and the page-cache
//! lookup, the copy and i_size stay here, once.

use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::FolioData;
use crate::iov::IovIter;
use crate::page_cache::FolioHint;
use crate::units::FilePos;

/// The filesystem half of a per-folio write: what happens around the copy.
pub trait FolioWriteOps {
    /// Prepares folio bytes `[off, off + len)` of the locked folio for the
    /// copy (map the blocks, read or zero the partial ones; blocks at or past
    /// `isize`, the current i_size, are new). On error nothing is copied and
    /// the loop stops.
    fn write_begin(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        off: usize,
        len: usize,
        isize: u64,
    ) -> Result<()>;

    /// Commits `copied` of the `len` bytes copied at `off`: per-block and
    /// folio uptodate/dirty state. Returns the bytes accepted, which may be
    /// fewer than `copied` (a short copy into a folio that is not uptodate
    /// is rejected whole).
    fn write_end(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        off: usize,
        len: usize,
        copied: usize,
    ) -> usize;
}

/// Copies `src` into the page cache at `pos`, one folio at a time: find or
/// create the folio, lock it, write_begin, copy, write_end, move i_size,
/// unlock. Returns the bytes written; an error after some progress ends the
/// loop and returns the progress, an error before any is returned.
pub fn generic_perform_write(
    mapping: &AddressSpace,
    hint: &mut FolioHint,
    ops: &dyn FolioWriteOps,
    pos: FilePos,
    src: &mut IovIter<'_>,
) -> Result<u64> {
    let mut pos = pos.get();
    let chunk = mapping.cache.max_folio_size();
    let mut written = 0u64;
    // Only writers move i_size and the caller holds the write lock: read it
    // once, as the iomap loop does, and keep it current here.
    let mut isize = mapping.size();
    while src.remaining() > 0 {
        let bytes = (chunk - pos % chunk).min(src.remaining());
        match write_one_folio(mapping, hint, ops, pos, bytes, src, &mut isize) {
            Ok(0) => break,
            Ok(n) => {
                pos += n;
                written += n;
            }
            Err(e) if written == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(written)
}

/// One folio of the loop; returns the bytes committed.
#[inline]
fn write_one_folio(
    mapping: &AddressSpace,
    hint: &mut FolioHint,
    ops: &dyn FolioWriteOps,
    pos: u64,
    bytes: u64,
    src: &mut IovIter<'_>,
    isize: &mut u64,
) -> Result<u64> {
    mapping.cache.with_locked(hint, pos, bytes, |g| {
        // The folio may be smaller or larger than the chunk: offsets come from it.
        let off = (pos - g.pos()) as usize;
        let len = (g.size() - off).min(bytes as usize);
        ops.write_begin(mapping, g, off, len, *isize)?;
        // `len <= src.remaining()`, and an IovIter never faults, so the copy is
        // whole; a rejected commit (0) ends the loop instead of retrying, since a
        // retry could not copy more.
        let copied = src.copy_to(&mut g.data[off..off + len]);
        let status = ops.write_end(mapping, g, off, len, copied).min(copied);
        // i_size moves while the folio is still locked, so writeback never sees
        // the new data beyond a stale EOF.
        mapping.extend_size(isize, pos + status as u64);
        Ok(status as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::Mem;
    use crate::mapping::Flat;
    use crate::page_cache::{OrderPolicy, PageCache};
    use crate::FolioFlags;
    use std::cell::Cell;
    use std::sync::Arc;

    /// Records the calls and accepts everything but `reject_at`.
    struct Recorder {
        calls: Cell<Vec<(u64, usize, usize)>>,
        reject_at: Option<u64>,
    }

    impl FolioWriteOps for Recorder {
        fn write_begin(
            &self,
            _inode: &AddressSpace,
            folio: &mut FolioData,
            off: usize,
            len: usize,
            _isize: u64,
        ) -> Result<()> {
            let mut v = self.calls.take();
            v.push((folio.pos(), off, len));
            self.calls.set(v);
            Ok(())
        }

        fn write_end(
            &self,
            mapping: &AddressSpace,
            folio: &mut FolioData,
            off: usize,
            _len: usize,
            copied: usize,
        ) -> usize {
            if self.reject_at == Some(folio.pos() + off as u64) {
                return 0;
            }
            folio.flags.set(FolioFlags::UPTODATE, true);
            mapping.mark_folio_dirty(folio);
            copied
        }
    }

    fn mapping(order: OrderPolicy) -> Arc<AddressSpace> {
        AddressSpace::new(
            PageCache::new(order),
            Arc::new(Flat::new(0, 1 << 22, 4096, 0).unwrap()),
            Arc::new(Mem::new(1 << 22)),
            Box::new(crate::IomapPath::new()),
        )
    }

    #[test]
    fn chunks_per_folio_and_moves_isize() {
        let ino = mapping(OrderPolicy::Fixed(1));
        let ops = Recorder {
            calls: Cell::new(Vec::new()),
            reject_at: None,
        };
        let data = vec![7u8; 10000];
        let n = generic_perform_write(
            &ino,
            &mut ino.cache.hint(),
            &ops,
            FilePos::new(5000),
            &mut IovIter::from_slice(&data),
        )
        .unwrap();
        assert_eq!(n, 10000);
        assert_eq!(ino.size(), 15000);
        let calls = ops.calls.take();
        assert_eq!(calls, vec![(0, 5000, 3192), (8192, 0, 6808)]);
        let f = ino.cache.find(9000).unwrap();
        assert_eq!(f.lock().data[0], 7);
    }

    #[test]
    fn rejected_commit_stops_the_loop() {
        let ino = mapping(OrderPolicy::Fixed(0));
        let ops = Recorder {
            calls: Cell::new(Vec::new()),
            reject_at: Some(4096),
        };
        let data = vec![1u8; 8192];
        let n = generic_perform_write(
            &ino,
            &mut ino.cache.hint(),
            &ops,
            FilePos::new(0),
            &mut IovIter::from_slice(&data),
        )
        .unwrap();
        assert_eq!(n, 4096);
        assert_eq!(ino.size(), 4096);
    }
}
