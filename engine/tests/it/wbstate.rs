//! The writeback and memory machinery: a small cache budget with the
//! flusher on against the model, concurrent writers, readers and syncs,
//! re-dirtying a folio under writeback, writeback errors seen once per
//! open file (errseq), a crash in the middle of writeback, dirty
//! throttling, a stream bounded by its budget, and `File::writeback`.

use bufwrite_engine::device::faulty::{CrashMode, Faulty};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    BlockDevice, CacheLimits, CacheMemory, File, FileOptions, Flat, IomapPath, OrderPolicy,
};
use std::sync::Arc;
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Limits for a budget of `budget` bytes with the dirty limits at an
/// eighth and a quarter of it, the flusher on (or off).
fn limits(budget: u64, flusher: bool) -> CacheLimits {
    CacheLimits {
        budget,
        dirty_background: budget / 8,
        dirty_limit: budget / 4,
        dirty_expire: Duration::from_millis(2),
        writeback_interval: Duration::from_millis(5),
        flusher,
    }
}

fn iomap_in(
    mem: &Arc<CacheMemory>,
    dev: Arc<dyn BlockDevice>,
    flat: Arc<Flat>,
    order: OrderPolicy,
) -> File {
    File::open_in(
        mem,
        dev,
        flat,
        Box::new(IomapPath::new()),
        FileOptions { order },
    )
    .unwrap()
}

/// A closed file gives its cache's memory back: a mount's memory outlives
/// its files, and bytes charged by a file nobody can reach would count
/// against the budget for ever.
#[test]
fn closing_a_file_uncharges_its_cache() {
    let mem = CacheMemory::new(limits(256 * KIB, false)).unwrap();
    let dev = Arc::new(Mem::new(MIB));
    let flat = Arc::new(Flat::new(0, MIB, 4096, 0).unwrap());
    for round in 0..3 {
        let file = iomap_in(&mem, dev.clone(), flat.clone(), OrderPolicy::Fixed(0));
        file.pwrite(0, &[round as u8 + 1; 64 << 10]).unwrap();
        file.fsync().unwrap();
        assert!(mem.stats().cached > 0);
        file.close().unwrap();
        let s = mem.stats();
        assert_eq!(
            (s.cached, s.dirty, s.writeback),
            (0, 0, 0),
            "round {round}: {s:?}"
        );
    }
    assert_eq!(dev.snapshot(0, 64 << 10), vec![3u8; 64 << 10]);
}
