//! The per-file page cache: folio index -> folio, the order policy, the
//! dirty set, and dropping clean folios.
//!
//! A `BTreeMap` keyed by each folio's first page index: the folio holding a
//! page is the entry at or before it, one ordered lookup under a read lock
//! (the xarray plays this role in Linux). The dirty set is touched only when
//! a folio goes from clean to dirty, so an overwrite of an already dirty
//! folio never takes its lock.

use crate::folio::{Folio, FolioData, MAX_ORDER, PAGE_SHIFT};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

/// How the page cache picks the order of a new folio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderPolicy {
    /// Every folio of the file has this order (experiments).
    Fixed(u8),
    /// The kernel's policy: the order follows the length of the write (or
    /// read) that creates the folio, capped by `max_order` and by the
    /// alignment of the index.
    FromWrite {
        /// Largest order a folio may have.
        max_order: u8,
    },
}

impl OrderPolicy {
    /// The largest order this policy can produce.
    pub fn max_order(self) -> u8 {
        match self {
            OrderPolicy::Fixed(o) => o,
            OrderPolicy::FromWrite { max_order } => max_order,
        }
    }

    /// The order hinted for a new folio at page `index` for an access of
    /// `len` bytes (before conflicts with neighbouring folios).
    pub fn order_for(self, index: u64, len: u64) -> u8 {
        let wanted = match self {
            OrderPolicy::Fixed(o) => return o,
            // fgf_set_order: floor(log2(len)) - PAGE_SHIFT, 0 for len <= one page.
            OrderPolicy::FromWrite { max_order } => {
                let log = 63 - len.max(1).leading_zeros();
                (log.saturating_sub(PAGE_SHIFT) as u8).min(max_order)
            }
        };
        // A folio is naturally aligned: cap by the index's lowest set bit.
        if index == 0 {
            wanted
        } else {
            wanted.min(index.trailing_zeros().min(u32::from(MAX_ORDER)) as u8)
        }
    }
}

/// A file's cached folios.
#[derive(Debug)]
pub struct PageCache {
    folios: RwLock<BTreeMap<u64, Arc<Folio>>>,
    dirty: Mutex<BTreeSet<u64>>,
    policy: OrderPolicy,
}

impl PageCache {
    /// An empty cache using `policy` (orders above [`MAX_ORDER`] are capped).
    pub fn new(policy: OrderPolicy) -> Self {
        let policy = match policy {
            OrderPolicy::Fixed(o) => OrderPolicy::Fixed(o.min(MAX_ORDER)),
            OrderPolicy::FromWrite { max_order } => OrderPolicy::FromWrite {
                max_order: max_order.min(MAX_ORDER),
            },
        };
        PageCache {
            folios: RwLock::new(BTreeMap::new()),
            dirty: Mutex::new(BTreeSet::new()),
            policy,
        }
    }

    /// Largest folio size in bytes this cache creates: the write loops'
    /// chunk size.
    pub fn max_folio_size(&self) -> u64 {
        4096u64 << self.policy.max_order()
    }

    /// The cached folio holding file offset `pos`, if any.
    #[inline]
    pub fn find(&self, pos: u64) -> Option<Arc<Folio>> {
        let page = pos >> PAGE_SHIFT;
        let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
        let (_, f) = map.range(..=page).next_back()?;
        (page < f.index() + f.nr_pages()).then(|| Arc::clone(f))
    }

    /// Runs `f` on the locked folio holding `pos`, creating it as
    /// [`find_or_create`](Self::find_or_create) would. The write loops use
    /// this: a folio found in the cache is used under the map's read lock,
    /// which keeps it from being dropped, so the hot path takes no
    /// reference (two atomic operations fewer per write than an `Arc`
    /// clone and drop). `f` must not call back into this cache.
    #[inline]
    pub fn with_locked<R>(&self, pos: u64, len: u64, f: impl FnOnce(&mut FolioData) -> R) -> R {
        let page = pos >> PAGE_SHIFT;
        {
            let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, folio)) = map.range(..=page).next_back() {
                if page < folio.index() + folio.nr_pages() {
                    return f(&mut folio.lock());
                }
            }
        }
        let folio = self.find_or_create(pos, len);
        let mut g = folio.lock();
        f(&mut g)
    }

    /// The folio holding `pos`, created (zeroed, not uptodate) if absent
    /// with the order the policy gives for an access of `len` bytes.
    ///
    /// The folio returned may be larger or smaller than the access: callers
    /// take offsets from the folio, never from the request.
    pub fn find_or_create(&self, pos: u64, len: u64) -> Arc<Folio> {
        if let Some(f) = self.find(pos) {
            return f;
        }
        let page = pos >> PAGE_SHIFT;
        let mut map = self.folios.write().unwrap_or_else(|e| e.into_inner());
        // Someone may have inserted it between the two locks.
        if let Some((_, f)) = map.range(..=page).next_back() {
            if page < f.index() + f.nr_pages() {
                return Arc::clone(f);
            }
        }
        let mut order = self.policy.order_for(page, len);
        // Shrink until the aligned range is free of other folios (the
        // kernel retries lower orders on -EEXIST the same way).
        loop {
            let start = page & !((1u64 << order) - 1);
            let end = start + (1u64 << order);
            let overlaps_after = map.range(start..end).next().is_some();
            let overlaps_before = map
                .range(..start)
                .next_back()
                .is_some_and(|(_, f)| f.index() + f.nr_pages() > start);
            if (!overlaps_after && !overlaps_before) || order == 0 {
                let folio = Arc::new(Folio::new(start, order));
                map.insert(start, Arc::clone(&folio));
                return folio;
            }
            order -= 1;
        }
    }

    /// Records that the folio at `index` became dirty.
    pub fn mark_dirty(&self, index: u64) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index);
    }

    /// Records that the folio at `index` is clean again.
    pub fn clear_dirty(&self, index: u64) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
    }

    /// The dirty folios, in index order.
    pub fn dirty_folios(&self) -> Vec<Arc<Folio>> {
        let idx: Vec<u64> = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
        idx.iter().filter_map(|i| map.get(i).cloned()).collect()
    }

    /// Number of dirty folios.
    pub fn nr_dirty(&self) -> usize {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Every cached folio, in index order.
    pub fn folios(&self) -> Vec<Arc<Folio>> {
        let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Number of cached folios.
    pub fn len(&self) -> usize {
        self.folios.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Truncates the cache over file bytes `[from, to)` (truncate_inode_pages_range):
    /// every folio lying wholly inside is locked (so writeback holding it is
    /// waited for), made clean (its dirty data is discarded) and removed; the
    /// folios that straddle an end are returned, for the caller to zero and
    /// invalidate the part inside.
    pub fn truncate_range(&self, from: u64, to: u64) -> Vec<Arc<Folio>> {
        if from >= to {
            return Vec::new();
        }
        let mut partial = Vec::new();
        let mut removed = Vec::new();
        {
            let mut map = self.folios.write().unwrap_or_else(|e| e.into_inner());
            let first = map
                .range(..=from >> PAGE_SHIFT)
                .next_back()
                .map_or(0, |(&i, _)| i);
            let last = (to - 1) >> PAGE_SHIFT;
            let hit: Vec<u64> = map.range(first..=last).map(|(&i, _)| i).collect();
            for index in hit {
                let Some(f) = map.get(&index) else { continue };
                let (start, end) = (f.pos(), f.pos() + f.size() as u64);
                if end <= from || start >= to {
                    continue;
                }
                if start >= from && end <= to {
                    // Clean under its lock: a writeback that already holds
                    // a reference sees a clean folio and writes nothing.
                    let mut g = f.lock();
                    g.flags.set(crate::FolioFlags::DIRTY, false);
                    g.flags.set(crate::FolioFlags::UPTODATE, false);
                    g.private = crate::FolioPrivate::None;
                    drop(g);
                    map.remove(&index);
                    removed.push(index);
                } else {
                    partial.push(Arc::clone(f));
                }
            }
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for index in removed {
            dirty.remove(&index);
        }
        partial
    }

    /// Drops every clean, unlocked folio (drop_caches for this file), so the
    /// next access reads from the device. Dirty and locked folios stay, and
    /// so do folios someone holds a reference to: a writer that found a
    /// folio and has not locked it yet would otherwise write into a folio
    /// the cache no longer holds, and its data would never be written back.
    /// Returns how many folios were dropped.
    pub fn drop_clean(&self) -> usize {
        self.drop_clean_keeping(|_, _| false)
    }

    /// [`drop_clean`](Self::drop_clean), also keeping the folios for which
    /// `keep(start, end)` (their file bytes) is true: those whose written
    /// data waits for its completion (`Mapper::end_io`), as the kernel's
    /// folio writeback does not end before the conversion and reclaim
    /// leaves a folio under writeback alone.
    pub fn drop_clean_keeping(&self, keep: impl Fn(u64, u64) -> bool) -> usize {
        let mut map = self.folios.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        // With the map's write lock held nobody can take a new reference,
        // so a count of one (the map's) means nobody is about to use it.
        map.retain(|_, f| {
            Arc::strong_count(f) > 1
                || keep(f.pos(), f.pos() + f.size() as u64)
                || match f.try_lock() {
                    Some(g) => g.dirty(),
                    None => true,
                }
        });
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_write_orders() {
        let p = OrderPolicy::FromWrite { max_order: 9 };
        assert_eq!(p.order_for(0, 1024), 0);
        assert_eq!(p.order_for(0, 4096), 0);
        assert_eq!(p.order_for(0, 10 * 1024), 1);
        assert_eq!(p.order_for(0, 4 << 20), 9);
        assert_eq!(p.order_for(4, 1 << 20), 2);
        assert_eq!(p.order_for(3, 1 << 20), 0);
        assert_eq!(OrderPolicy::Fixed(4).order_for(3, 1), 4);
    }

    #[test]
    fn lookup_and_conflicts() {
        let c = PageCache::new(OrderPolicy::FromWrite { max_order: 9 });
        let small = c.find_or_create(8192, 100);
        assert_eq!((small.index(), small.order()), (2, 0));
        // A 2 MiB access at 0 cannot take order 9 over the existing folio.
        let big = c.find_or_create(0, 2 << 20);
        assert_eq!((big.index(), big.order()), (0, 1));
        assert!(Arc::ptr_eq(&c.find(8192 + 4095).unwrap(), &small));
        assert!(c.find(3 * 4096).is_none());
        let f = c.find_or_create(4 << 20, 2 << 20);
        assert_eq!((f.index(), f.order()), (1024, 9));
        assert!(Arc::ptr_eq(&c.find((6 << 20) - 1).unwrap(), &f));
    }

    #[test]
    fn fixed_order_and_drop_clean() {
        let c = PageCache::new(OrderPolicy::Fixed(2));
        let a = c.find_or_create(20000, 1);
        assert_eq!((a.index(), a.order()), (4, 2));
        let b = c.find_or_create(0, 1);
        b.lock().flags.set(crate::FolioFlags::DIRTY, true);
        c.mark_dirty(b.index());
        assert_eq!(c.dirty_folios().len(), 1);
        // A folio still referenced outside the cache stays.
        assert_eq!(c.drop_clean(), 0);
        drop(a);
        assert_eq!(c.drop_clean(), 1);
        assert_eq!(c.len(), 1);
        c.clear_dirty(0);
        assert_eq!(c.nr_dirty(), 0);
    }
}
