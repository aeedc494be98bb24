//! `BufferRing`: a folio's buffer heads, one heap node per block, linked
//! into a circular singly linked list from the head through each head's
//! `b_this_page` (the kernel's ring hanging off `folio->private`).
//!
//! The point of modelling it this way is the cost: reaching block k means
//! following k links, a dependent load per head, as in Linux, and each
//! node is a [`BufferHead`] of the kernel's size (104 bytes), so a walk
//! touches the memory the kernel's walk touches. The only random access is
//! the optional seek index built for the `SeekToFrom` experiment, which the
//! kernel's structure does not have.
//!
//! This is the crate's only `unsafe`. The invariants it rests on:
//! - the ring owns its `nr >= 1` nodes exclusively; each was made by
//!   `Box::into_raw` in [`BufferRing::new`] and is freed once, in `Drop`;
//! - following `b_this_page` from any node visits every node once before
//!   it returns to that node, and links never change after construction:
//!   the link is written here, before any reference to the node exists,
//!   and afterwards nodes are reachable only through shared references
//!   (walks and iterators yield `&BufferHead`), through which a plain
//!   field cannot be written;
//! - every field a walk changes is interior-mutable (atomics, a `Cell`),
//!   so handing out shared references to the nodes is sound; a [`Walk`]
//!   still borrows the ring mutably, as the kernel walks under the folio
//!   lock, and stops after `nr - start` steps.
//!
//! The unit tests below exercise construction, walks from every start,
//! early stops and drop. Miri is not installed here (no nightly toolchain),
//! so they have not been run under Miri.

use crate::buffer_head::{BhState, BufferHead};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The buffer heads of one folio.
pub struct BufferRing {
    head: NonNull<BufferHead>,
    nr: usize,
    block_size: u32,
    /// Node pointers by block index, only for the seek experiment.
    index: Option<Box<[NonNull<BufferHead>]>>,
}

// SAFETY: the ring owns its nodes exclusively (like a Box<[BufferHead]>);
// the nodes' `Cell` and raw link are only reached through &self / &mut self
// of the ring, so moving the ring to another thread moves that exclusive
// ownership with it. The ring is not Sync (nor are its heads), so no two
// threads reach the same node at once.
unsafe impl Send for BufferRing {}

impl std::fmt::Debug for BufferRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferRing")
            .field("nr", &self.nr)
            .field("block_size", &self.block_size)
            .field("seek_index", &self.index.is_some())
            .finish()
    }
}

impl BufferRing {
    /// A ring of `nr` heads (at least one) of `block_size` bytes, each with
    /// `state` (seeded from the folio's flags by the caller), for a folio
    /// whose index is 0. See [`for_folio`](Self::for_folio).
    pub fn new(nr: usize, block_size: u32, state: BhState, seek_index: bool) -> Self {
        Self::for_folio(0, nr, block_size, state, seek_index)
    }

    /// A ring of `nr` heads (at least one) of `block_size` bytes for the
    /// folio with index `folio` (recorded in each head's `b_folio`), each
    /// with `state` (`create_empty_buffers`). `seek_index` also builds the
    /// block -> node table [`walk_from`](Self::walk_from) uses to start
    /// mid-ring without walking the prefix.
    pub fn for_folio(
        folio: usize,
        nr: usize,
        block_size: u32,
        state: BhState,
        seek_index: bool,
    ) -> Self {
        let nr = nr.max(1);
        let bs = block_size as usize;
        let node = |i: usize| {
            let head = BufferHead::new(folio, i.saturating_mul(bs), bs, state);
            NonNull::from(Box::leak(Box::new(head)))
        };
        let head = node(0);
        let mut index = seek_index.then(|| Vec::with_capacity(nr));
        if let Some(v) = index.as_mut() {
            v.push(head);
        }
        let mut prev = head;
        for i in 1..nr {
            let cur = node(i);
            // SAFETY: `prev` is a live node of this ring (leaked above), and
            // no reference to it exists yet.
            unsafe { (*prev.as_ptr()).b_this_page = cur };
            if let Some(v) = index.as_mut() {
                v.push(cur);
            }
            prev = cur;
        }
        // SAFETY: as above; closing the ring makes the last node point at head.
        unsafe { (*prev.as_ptr()).b_this_page = head };
        BufferRing {
            head,
            nr,
            block_size,
            index: index.map(Vec::into_boxed_slice),
        }
    }

    /// Number of heads.
    pub fn len(&self) -> usize {
        self.nr
    }

    /// Always false: a ring has at least one head.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The block size of every head.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// True when the ring has the seek index.
    pub fn has_seek_index(&self) -> bool {
        self.index.is_some()
    }

    /// Bytes this ring really holds: every head (104 bytes each, the
    /// kernel's `struct buffer_head`), the ring header, and the seek index
    /// if any. The allocator's own per-node overhead is not counted, as
    /// the kernel's slab overhead is not counted in its 104.
    pub fn memory_bytes(&self) -> usize {
        let index = self
            .index
            .as_ref()
            .map_or(0, |i| i.len() * size_of::<NonNull<BufferHead>>());
        self.nr * size_of::<BufferHead>() + size_of::<BufferRing>() + index
    }

    /// Walks every head once, from the head of the ring.
    pub fn walk(&mut self) -> Walk<'_> {
        Walk {
            cur: self.head,
            left: self.nr,
            _ring: PhantomData,
        }
    }

    /// Walks the heads from block `start` (clamped to the last) to the end
    /// of the folio. With the seek index this starts there directly;
    /// without it the prefix links are followed first (the only way the
    /// kernel's ring allows).
    pub fn walk_from(&mut self, start: usize) -> Walk<'_> {
        let start = start.min(self.nr - 1);
        let cur = match &self.index {
            Some(index) => index[start],
            None => {
                let mut cur = self.head;
                for _ in 0..start {
                    // SAFETY: `cur` is a live node of this ring (we hold
                    // &mut self), and its link is a live node too.
                    cur = unsafe { (*cur.as_ptr()).b_this_page };
                }
                cur
            }
        };
        Walk {
            cur,
            left: self.nr - start,
            _ring: PhantomData,
        }
    }

    /// Iterates the heads read-only, from the head.
    pub fn iter(&self) -> impl Iterator<Item = &BufferHead> + '_ {
        let mut cur = self.head;
        (0..self.nr).map(move |_| {
            // SAFETY: the ring is borrowed shared for the iterator's
            // lifetime, so every node is live; nodes are only ever shared.
            let node = unsafe { &*cur.as_ptr() };
            cur = node.b_this_page;
            node
        })
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        let mut cur = self.head;
        for _ in 0..self.nr {
            // SAFETY: each node was made by Box::leak in `for_folio`, is
            // owned by this ring only, and is reached exactly once in `nr`
            // steps; its link is read before the node is freed.
            let node = unsafe { Box::from_raw(cur.as_ptr()) };
            cur = node.b_this_page;
        }
    }
}

/// A walk along the ring: yields each head at most once, in ring order,
/// following `b_this_page` (one dependent load per head).
pub struct Walk<'a> {
    cur: NonNull<BufferHead>,
    left: usize,
    _ring: PhantomData<&'a mut BufferRing>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a BufferHead;

    #[inline]
    fn next(&mut self) -> Option<&'a BufferHead> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // SAFETY: the walk holds the ring's unique borrow for 'a, so every
        // node stays live for 'a; nodes are only ever shared, and what a
        // walk changes in them is interior-mutable.
        let node = unsafe { &*self.cur.as_ptr() };
        self.cur = node.b_this_page;
        Some(node)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(ring: &mut BufferRing, start: usize) -> Vec<u32> {
        ring.walk_from(start).map(|bh| bh.offset() as u32).collect()
    }

    #[test]
    fn ring_links_every_block_in_order() {
        for seek in [false, true] {
            let mut r = BufferRing::new(8, 1024, BhState::UPTODATE, seek);
            assert_eq!(r.len(), 8);
            assert_eq!(r.has_seek_index(), seek);
            let all: Vec<u32> = r.walk().map(|bh| bh.offset() as u32).collect();
            assert_eq!(all, (0..8).map(|i| i * 1024).collect::<Vec<_>>());
            for s in 0..8 {
                assert_eq!(offsets(&mut r, s), all[s..].to_vec());
            }
            assert_eq!(offsets(&mut r, 100), vec![7 * 1024]);
            assert!(r.iter().all(|bh| bh.uptodate() && bh.size() == 1024));
        }
    }

    #[test]
    fn mutation_through_walk_sticks() {
        let mut r = BufferRing::new(4, 4096, BhState::empty(), false);
        for bh in r.walk_from(2) {
            bh.set(BhState::DIRTY);
        }
        let dirty: Vec<bool> = r.iter().map(BufferHead::dirty).collect();
        assert_eq!(dirty, vec![false, false, true, true]);
        // An early stop leaves the rest untouched.
        if let Some(bh) = r.walk().next() {
            bh.set(BhState::NEW);
        }
        assert_eq!(r.iter().filter(|bh| bh.test(BhState::NEW)).count(), 1);
    }

    #[test]
    fn single_head_ring_and_memory() {
        let mut r = BufferRing::new(0, 4096, BhState::empty(), true);
        assert_eq!(r.len(), 1);
        assert_eq!(r.walk().count(), 1);
        assert_eq!(r.walk_from(5).count(), 1);
        let plain = BufferRing::new(512, 4096, BhState::empty(), false);
        let seek = BufferRing::new(512, 4096, BhState::empty(), true);
        assert_eq!(
            plain.memory_bytes(),
            512 * size_of::<BufferHead>() + size_of::<BufferRing>()
        );
        assert_eq!(seek.memory_bytes(), plain.memory_bytes() + 512 * 8);
    }

    #[test]
    fn rings_drop_on_other_threads() {
        let r = BufferRing::new(64, 2048, BhState::DIRTY, true);
        std::thread::spawn(move || assert_eq!(r.iter().count(), 64))
            .join()
            .unwrap();
    }
}
