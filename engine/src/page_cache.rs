//! The per-file page cache: folio index -> folio, the order policy, the
//! dirty and writeback tags, and removing folios (truncate, drop_caches,
//! reclaim). Its memory is charged to the mount's [`MemShared`].
//!
//! A `BTreeMap` keyed by each folio's first page index: the folio holding a
//! page is the entry at or before it, one ordered lookup under a read lock
//! (the xarray plays this role in Linux). The dirty set is touched only when
//! a folio goes from clean to dirty, so an overwrite of an already dirty
//! folio never takes its lock.
//!
//! The write loops look up first in the writer's [`FolioHint`]: the folio
//! the last writes used, held by the file's write lock state (the hint is
//! `&mut`, so only the one writer touches it). A hit takes no index lock:
//! the hint's reference keeps the folio's memory alive, and the folio's
//! `in_cache` flag, checked under the folio lock, says the cache still
//! holds it (the kernel gets the same from RCU and a recheck of the xarray
//! slot after `folio_try_get`). Per cached 1 KiB overwrite that is the
//! index's two atomic read-lock operations and the ordered lookup fewer.

use crate::address_space::AddressSpace;
use crate::align::AlignedBuf;
use crate::folio::{buffer_pool, folio_size, Folio, FolioData, MAX_ORDER, PAGE_SHIFT};
use crate::memory::{CacheLimits, MemShared, LRU_BATCH, LRU_BATCH_BYTES};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

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
    tags: Mutex<Tags>,
    policy: OrderPolicy,
    /// Unique per cache (never reused), so a hint is only used with the
    /// cache that made it.
    id: u64,
    /// The mount's memory: budget, LRU, dirty accounting.
    mem: Arc<MemShared>,
    /// The address space holding this cache, for the LRU's entries.
    owner: OnceLock<Weak<AddressSpace>>,
    /// New folios not yet on the LRU (added a batch at a time).
    lru_new: Mutex<Vec<Weak<Folio>>>,
}

/// The xarray's marks: which folios are dirty and which are under
/// writeback, by first page index. A writeback mark names its folio (by
/// address) so that a late completion of a folio truncate removed never
/// unmarks the new folio at its index.
#[derive(Debug, Default)]
struct Tags {
    dirty: BTreeSet<u64>,
    writeback: BTreeMap<u64, usize>,
}

fn folio_key(f: &Folio) -> usize {
    f as *const Folio as usize
}

/// Source of [`PageCache`] ids.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A writer's lookup hint: the folio its last writes used, checked before
/// the cache's index. Made by [`PageCache::hint`]; the file keeps one in
/// its write-lock state, so a cached overwrite finds its folio with no
/// index lock (module docs).
///
/// A hint keeps its folio alive (not cached: a folio the cache dropped is
/// seen as such under its lock and the lookup goes to the index). It is
/// taken only when two lookups in a row land in the same folio, so a
/// sequential writer, which moves to a new folio each time, pays no
/// reference counting for it.
#[derive(Debug)]
pub struct FolioHint {
    cache_id: u64,
    folio: Option<Arc<Folio>>,
    /// First page of the folio the last index lookup found.
    last_miss: u64,
}

impl FolioHint {
    /// Replaces the hinted folio with `new` (a reference taken under the
    /// index's read lock, so drop_caches never sees it half counted).
    fn set(&mut self, new: &Arc<Folio>) {
        let new = Arc::clone(new);
        new.hint_acquire();
        if let Some(old) = self.folio.replace(new) {
            old.hint_release();
        }
    }
}

impl Drop for FolioHint {
    fn drop(&mut self) {
        if let Some(old) = self.folio.take() {
            old.hint_release();
        }
    }
}

impl Drop for PageCache {
    /// The file is gone: its folios' bytes go back to the memory, which
    /// outlives it (a mount's), and so do the dirty bytes of a file
    /// dropped without writeback. Without this every closed file would
    /// count against the budget and the dirty limits for ever.
    fn drop(&mut self) {
        let map = self.folios.get_mut().unwrap_or_else(|e| e.into_inner());
        let tags = self.tags.get_mut().unwrap_or_else(|e| e.into_inner());
        let size_of = |i: &u64| map.get(i).map_or(0, |f| f.size() as u64);
        let dirty: u64 = tags.dirty.iter().map(size_of).sum();
        let writeback: u64 = tags.writeback.keys().map(size_of).sum();
        let cached: u64 = map.values().map(|f| f.size() as u64).sum();
        if dirty > 0 {
            self.mem.account_cleaned(dirty);
        }
        if writeback > 0 {
            self.mem.account_writeback_end(writeback);
        }
        self.mem.uncharge(cached);
    }
}

impl PageCache {
    /// An empty cache using `policy` (orders above [`MAX_ORDER`] are
    /// capped), with memory of its own under the default limits (a cache
    /// outside any mount: the unit tests').
    pub fn new(policy: OrderPolicy) -> Self {
        Self::with_memory(policy, MemShared::new(CacheLimits::default()))
    }

    /// An empty cache charging its folios to `mem`.
    pub fn with_memory(policy: OrderPolicy, mem: Arc<MemShared>) -> Self {
        let policy = match policy {
            OrderPolicy::Fixed(o) => OrderPolicy::Fixed(o.min(MAX_ORDER)),
            OrderPolicy::FromWrite { max_order } => OrderPolicy::FromWrite {
                max_order: max_order.min(MAX_ORDER),
            },
        };
        PageCache {
            folios: RwLock::new(BTreeMap::new()),
            tags: Mutex::new(Tags::default()),
            policy,
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            mem,
            owner: OnceLock::new(),
            lru_new: Mutex::new(Vec::new()),
        }
    }

    /// Ties the cache to its address space (once, at its creation).
    pub(crate) fn set_owner(&self, owner: Weak<AddressSpace>) {
        let _ = self.owner.set(owner);
    }

    /// The memory this cache charges.
    pub fn memory(&self) -> &Arc<MemShared> {
        &self.mem
    }

    fn tags(&self) -> MutexGuard<'_, Tags> {
        self.tags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty lookup hint for this cache's writer.
    pub fn hint(&self) -> FolioHint {
        FolioHint {
            cache_id: self.id,
            folio: None,
            last_miss: u64::MAX,
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
        (page < f.index() + f.nr_pages()).then(|| {
            f.mark_accessed();
            Arc::clone(f)
        })
    }

    /// Runs `f` on the locked folio holding `pos`, creating it as
    /// [`find_or_create`](Self::find_or_create) would. The write loops use
    /// this. The folio in `hint` is tried first, with no index lock (its
    /// reference keeps it alive; `in_cache`, under the folio lock, says it
    /// is still the cache's). Otherwise a folio found in the index is used
    /// under the index's read lock, which keeps it from being dropped, and
    /// becomes the hint when the previous lookup found it too. `f` must
    /// not call back into this cache's index.
    #[inline]
    pub fn with_locked<R>(
        &self,
        hint: &mut FolioHint,
        pos: u64,
        len: u64,
        f: impl FnOnce(&mut FolioData) -> R,
    ) -> R {
        let page = pos >> PAGE_SHIFT;
        if hint.cache_id == self.id {
            if let Some(folio) = &hint.folio {
                // index and order never change: the range test needs no lock.
                if page.wrapping_sub(folio.index()) < folio.nr_pages() {
                    let mut g = folio.lock();
                    if g.in_cache {
                        folio.mark_accessed();
                        return f(&mut g);
                    }
                }
            }
        }
        self.with_locked_index(hint, pos, len, f)
    }

    /// [`with_locked`](Self::with_locked) through the index.
    fn with_locked_index<R>(
        &self,
        hint: &mut FolioHint,
        pos: u64,
        len: u64,
        f: impl FnOnce(&mut FolioData) -> R,
    ) -> R {
        let page = pos >> PAGE_SHIFT;
        let ours = hint.cache_id == self.id;
        {
            let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, folio)) = map.range(..=page).next_back() {
                if page < folio.index() + folio.nr_pages() {
                    if ours {
                        if hint.last_miss == folio.index() {
                            hint.set(folio);
                        }
                        hint.last_miss = folio.index();
                    }
                    folio.mark_accessed();
                    return f(&mut folio.lock());
                }
            }
        }
        let folio = self.find_or_create(pos, len);
        if ours {
            hint.last_miss = folio.index();
        }
        let mut g = folio.lock();
        f(&mut g)
    }

    /// The folio holding `pos`, created (zeroed, not uptodate) if absent
    /// with the order the policy gives for an access of `len` bytes.
    /// Creating one charges the mount's memory, which may reclaim other
    /// folios first: call it with no folio locked.
    ///
    /// The folio returned may be larger or smaller than the access: callers
    /// take offsets from the folio, never from the request.
    pub fn find_or_create(&self, pos: u64, len: u64) -> Arc<Folio> {
        if let Some(f) = self.find(pos) {
            return f;
        }
        let page = pos >> PAGE_SHIFT;
        let mut order = self.policy.order_for(page, len);
        // Charged before the index lock (reclaim takes other caches'
        // index locks, and maybe this one's); corrected below.
        let charged = folio_size(order) as u64;
        self.mem.charge(charged);
        let mut map = self.folios.write().unwrap_or_else(|e| e.into_inner());
        // Someone may have inserted it between the two locks.
        if let Some((_, f)) = map.range(..=page).next_back() {
            if page < f.index() + f.nr_pages() {
                self.mem.uncharge(charged);
                return Arc::clone(f);
            }
        }
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
                self.mem.uncharge(charged - folio.size() as u64);
                map.insert(start, Arc::clone(&folio));
                drop(map);
                self.lru_add(&folio);
                return folio;
            }
            order -= 1;
        }
    }

    /// Queues a new folio for the LRU; a batch goes to it once it holds
    /// [`LRU_BATCH`] folios or [`LRU_BATCH_BYTES`] (reclaim cannot reach a
    /// batch, so large folios go almost at once).
    fn lru_add(&self, folio: &Arc<Folio>) {
        let mut v = self.lru_new.lock().unwrap_or_else(|e| e.into_inner());
        v.push(Arc::downgrade(folio));
        let bytes: usize = v.iter().map(|w| w.upgrade().map_or(0, |f| f.size())).sum();
        if v.len() >= LRU_BATCH || bytes >= LRU_BATCH_BYTES {
            let owner = self.owner.get().cloned().unwrap_or_default();
            self.mem.lru_add(&owner, &mut v);
        }
    }

    /// Moves the folios waiting for a full batch to the LRU
    /// (`lru_add_drain`): reclaim calls it when the LRU gave it too
    /// little, since a batch may hold a small budget's every folio.
    pub(crate) fn lru_drain(&self) {
        let mut v = self.lru_new.lock().unwrap_or_else(|e| e.into_inner());
        if !v.is_empty() {
            let owner = self.owner.get().cloned().unwrap_or_default();
            self.mem.lru_add(&owner, &mut v);
        }
    }

    /// Marks the folio dirty in the cache's dirty tag (its DIRTY flag is
    /// the caller's), accounting its bytes on the clean-to-dirty edge.
    /// Returns true when the cache had no dirty folio before (the inode
    /// just became dirty).
    pub fn mark_dirty(&self, folio: &FolioData) -> bool {
        let mut t = self.tags();
        let was_clean = t.dirty.is_empty();
        if t.dirty.insert(folio.index) {
            self.mem.account_dirtied(folio.size() as u64);
        }
        was_clean
    }

    /// Clears the folio's dirty tag (it is clean again, or its dirty data
    /// was dropped).
    pub fn clear_dirty(&self, folio: &FolioData) {
        if self.tags().dirty.remove(&folio.index) {
            self.mem.account_cleaned(folio.size() as u64);
        }
    }

    /// Writeback queued the locked folio's runs: its dirty tag goes when
    /// `cleaned` (no dirty block left) and its writeback tag comes when
    /// `started` (its first writeback I/O), together under the tags' lock.
    pub(crate) fn retag_for_writeback(
        &self,
        folio: &Folio,
        data: &FolioData,
        cleaned: bool,
        started: bool,
    ) {
        let mut t = self.tags();
        if cleaned && t.dirty.remove(&data.index) {
            self.mem.account_cleaned(data.size() as u64);
        }
        if started {
            t.writeback.insert(folio.index(), folio_key(folio));
            self.mem.account_writeback_start(folio.size() as u64);
        }
    }

    /// The folio's writeback ended (its last I/O completed).
    pub(crate) fn untag_writeback(&self, folio: &Folio) {
        {
            let mut t = self.tags();
            if t.writeback.get(&folio.index()) == Some(&folio_key(folio)) {
                t.writeback.remove(&folio.index());
            }
        }
        self.mem.account_writeback_end(folio.size() as u64);
    }

    /// The folios with file bytes in `[from, to)` that are dirty, or (with
    /// `writeback`) under writeback, in index order.
    pub fn tagged(&self, from: u64, to: u64, writeback: bool) -> Vec<Arc<Folio>> {
        if from >= to {
            return Vec::new();
        }
        let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
        let first = map
            .range(..=from >> PAGE_SHIFT)
            .next_back()
            .map_or(0, |(&i, _)| i);
        let last = (to - 1) >> PAGE_SHIFT;
        let mut idx: Vec<u64> = {
            let t = self.tags();
            let mut v: Vec<u64> = t.dirty.range(first..=last).copied().collect();
            if writeback {
                v.extend(t.writeback.range(first..=last).map(|(&i, _)| i));
                v.sort_unstable();
                v.dedup();
            }
            v
        };
        idx.retain(|i| map.contains_key(i));
        idx.iter().filter_map(|i| map.get(i).cloned()).collect()
    }

    /// The dirty folios, in index order.
    pub fn dirty_folios(&self) -> Vec<Arc<Folio>> {
        self.tagged(0, u64::MAX, false)
    }

    /// Number of dirty folios.
    pub fn nr_dirty(&self) -> usize {
        self.tags().dirty.len()
    }

    /// Number of folios under writeback.
    pub fn nr_writeback(&self) -> usize {
        self.tags().writeback.len()
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

    /// Bytes of folio data cached.
    pub fn cached_bytes(&self) -> u64 {
        let map = self.folios.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(|f| f.size() as u64).sum()
    }

    /// Truncates the cache over file bytes `[from, to)` (truncate_inode_pages_range):
    /// every folio lying wholly inside is locked, made clean (its dirty data
    /// is discarded) and removed. Returns the folios that straddle an end,
    /// for the caller to zero and invalidate the part inside, and those
    /// removed, for the caller to wait on the writeback of (their blocks
    /// must not be freed under an I/O in flight).
    pub fn truncate_range(&self, from: u64, to: u64) -> (Vec<Arc<Folio>>, Vec<Arc<Folio>>) {
        if from >= to {
            return (Vec::new(), Vec::new());
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
                    // A writer's hint sees this under the lock and goes to the index.
                    g.in_cache = false;
                    self.clear_dirty(&g);
                    drop(g);
                    if let Some(f) = map.remove(&index) {
                        self.mem.uncharge(f.size() as u64);
                        removed.push(f);
                    }
                } else {
                    partial.push(Arc::clone(f));
                }
            }
        }
        (partial, removed)
    }

    /// Drops every clean, unlocked folio (drop_caches for this file), so the
    /// next access reads from the device. Dirty, locked and under-writeback
    /// folios stay, and so do folios someone holds a reference to: a writer
    /// that found a folio and has not locked it yet would otherwise write
    /// into a folio the cache no longer holds, and its data would never be
    /// written back. Returns how many folios were dropped.
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
        map.retain(|_, f| !self.try_evict(f, 1, &keep));
        before - map.len()
    }

    /// Removes `folio` if it is clean and idle (reclaim's eviction of one
    /// folio; the caller holds one reference of its own besides the
    /// index's). True when it went; the caller uncharges it.
    pub(crate) fn evict(&self, folio: &Arc<Folio>, keep: impl Fn(u64, u64) -> bool) -> bool {
        let mut map = self.folios.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&folio.index()) {
            Some(f) if Arc::ptr_eq(f, folio) => {}
            _ => return false,
        }
        if !self.try_evict(folio, 2, &keep) {
            return false;
        }
        map.remove(&folio.index());
        true
    }

    /// The test of [`evict`](Self::evict) and drop_clean, with the index's
    /// write lock held: nobody may use the folio (beyond `allowed` strong
    /// references and the hints), it is unlocked, clean, not under
    /// writeback, and `keep` does not hold it. On success it is marked out
    /// of the cache and its memory goes back to the pool (drop_clean
    /// uncharges here; evict's caller does).
    fn try_evict(&self, f: &Arc<Folio>, allowed: usize, keep: &impl Fn(u64, u64) -> bool) -> bool {
        // With the map's write lock held nobody can take a new reference
        // (hints take theirs under the read lock), so a count of one (the
        // map's) besides the hints' means nobody is about to use it without
        // checking `in_cache` under the folio lock first.
        let strong = Arc::strong_count(f);
        // A hint drops its count before its reference (whose decrement
        // releases): a strong count without that reference, read before
        // this fence, comes with the hint count without it too.
        fence(Ordering::Acquire);
        let users = strong.saturating_sub(f.hint_refs());
        if users > allowed || f.under_writeback() || keep(f.pos(), f.pos() + f.size() as u64) {
            return false;
        }
        let Some(mut g) = f.try_lock() else {
            return false;
        };
        if g.dirty() {
            return false;
        }
        g.in_cache = false;
        g.private = crate::FolioPrivate::None;
        // A hint may keep the folio itself a while: its memory goes
        // back to the pool now, as drop_caches promises.
        let data = std::mem::replace(&mut g.data, AlignedBuf::zeroed(0));
        buffer_pool::give(f.order(), data);
        if allowed == 1 {
            self.mem.uncharge(f.size() as u64);
        }
        true
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
        {
            let mut g = b.lock();
            g.flags.set(crate::FolioFlags::DIRTY, true);
            c.mark_dirty(&g);
        }
        assert_eq!(c.dirty_folios().len(), 1);
        // A folio still referenced outside the cache stays.
        assert_eq!(c.drop_clean(), 0);
        drop(a);
        assert_eq!(c.drop_clean(), 1);
        assert_eq!(c.len(), 1);
        c.clear_dirty(&b.lock());
        assert_eq!(c.nr_dirty(), 0);
    }

    /// Writes `v` into the first 8 bytes of the folio at `pos` through the
    /// write loops' lookup, uptodate and dirty as a write leaves it.
    fn write_u64(c: &PageCache, hint: &mut FolioHint, pos: u64, v: u64) -> u64 {
        c.with_locked(hint, pos, 8, |g| {
            let off = (pos - g.pos()) as usize;
            g.data[off..off + 8].copy_from_slice(&v.to_le_bytes());
            g.flags.set(crate::FolioFlags::UPTODATE, true);
            g.flags.set(crate::FolioFlags::DIRTY, true);
            c.mark_dirty(g);
            g.index
        })
    }

    fn read_u64(c: &PageCache, pos: u64) -> Option<u64> {
        let f = c.find(pos)?;
        let g = f.lock();
        let off = (pos - g.pos()) as usize;
        Some(u64::from_le_bytes(g.data[off..off + 8].try_into().unwrap()))
    }

    /// What writeback leaves: the folio clean.
    fn clean(c: &PageCache, pos: u64) {
        let f = c.find(pos).unwrap();
        let mut g = f.lock();
        g.flags.set(crate::FolioFlags::DIRTY, false);
        c.clear_dirty(&g);
    }

    #[test]
    fn hint_is_taken_on_the_second_lookup_and_dropped_folios_are_not_used() {
        let c = PageCache::new(OrderPolicy::Fixed(1));
        let mut h = c.hint();
        write_u64(&c, &mut h, 100, 1);
        assert!(h.folio.is_none(), "a first lookup takes no reference");
        write_u64(&c, &mut h, 200, 2);
        let hinted = Arc::clone(h.folio.as_ref().unwrap());
        assert!(Arc::ptr_eq(&hinted, &c.find(0).unwrap()));
        assert_eq!(hinted.hint_refs(), 1);
        drop(hinted);
        // drop_caches does not count the hint as a user: the clean folio goes,
        // and its memory with it, although the hint still holds the folio.
        clean(&c, 0);
        assert_eq!(c.drop_clean(), 1);
        assert!(c.is_empty());
        assert_eq!(h.folio.as_ref().unwrap().lock().data.len(), 0);
        // The next write sees the hint's folio is gone and makes a new one,
        // which the cache holds.
        write_u64(&c, &mut h, 300, 3);
        assert_eq!(read_u64(&c, 300), Some(3));
        assert_eq!(c.nr_dirty(), 1);
        // Truncate over the folio: the hint is not used afterwards either.
        write_u64(&c, &mut h, 300, 4);
        assert!(c.truncate_range(0, 8192).0.is_empty());
        assert!(c.find(300).is_none());
        write_u64(&c, &mut h, 300, 5);
        assert_eq!(read_u64(&c, 300), Some(5));
        // A hint of another cache is never used here.
        let other = PageCache::new(OrderPolicy::Fixed(1));
        let mut oh = other.hint();
        write_u64(&other, &mut oh, 0, 9);
        write_u64(&other, &mut oh, 0, 9);
        write_u64(&c, &mut oh, 300, 6);
        assert_eq!(read_u64(&c, 300), Some(6));
        assert_eq!(read_u64(&other, 0), Some(9));
    }

    #[test]
    fn drop_clean_keeps_a_hinted_folio_someone_else_holds() {
        let c = PageCache::new(OrderPolicy::Fixed(0));
        let mut h = c.hint();
        write_u64(&c, &mut h, 0, 1);
        write_u64(&c, &mut h, 0, 2);
        clean(&c, 0);
        let user = c.find(0).unwrap();
        assert_eq!(c.drop_clean(), 0);
        drop(user);
        drop(h);
        assert_eq!(c.drop_clean(), 1);
    }

    /// Lookups through a hint against drop_caches, truncate and inserts from
    /// another thread: every write lands in the folio the cache holds (read
    /// back through the index), never in one it dropped.
    #[test]
    fn hinted_writes_race_drop_caches_and_truncate() {
        use std::sync::atomic::AtomicBool;
        let c = PageCache::new(OrderPolicy::Fixed(1));
        let stop = AtomicBool::new(false);
        /// Stops the other thread also when an assertion fails, so a failure
        /// is reported instead of hanging the scope.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    c.drop_clean();
                    // Other folios come and go beside the writer's.
                    let pos = (1 + n % 8) << 16;
                    c.find_or_create(pos, 1);
                    if n.is_multiple_of(3) {
                        c.truncate_range(1 << 16, 1 << 20);
                    }
                    std::thread::yield_now();
                }
            });
            let _stop = StopOnDrop(&stop);
            let mut h = c.hint();
            for v in 0..20_000u64 {
                let pos = (v % 2) * 1024;
                write_u64(&c, &mut h, pos, v);
                assert_eq!(read_u64(&c, pos), Some(v), "write {v} lost");
                match v % 5 {
                    // Clean, as writeback leaves it: drop_caches may take it.
                    0 | 1 => clean(&c, pos),
                    // The writer's own truncate (set_len), under its write lock.
                    2 if v.is_multiple_of(7) => {
                        c.truncate_range(0, 8192);
                        assert!(c.find(pos).is_none());
                    }
                    _ => {}
                }
            }
        });
        assert!(c.len() <= 9);
    }
}
