//! The buffer-head paths under a small cache budget with the flusher on:
//! reclaim evicts folios with heads all the time and the flusher writes
//! heads back beside the ops, and every path still matches the model
//! (reads, and the device after every fsync). Also a head under
//! writeback re-dirtied by a writer, and a failed background pass.

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::faulty::Faulty;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    CacheLimits, CacheMemory, Error, File, FileOptions, Flat, MemStats, OrderPolicy,
};
use bufwrite_testkit::budget::{run_small, small_case, SmallCase, Totals, SMALL_WEIGHTS};
use bufwrite_testkit::{ops_strategy, Op, OpWeights};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// The small-budget mix without pwrites near `u64::MAX`.
const WEIGHTS: OpWeights = OpWeights {
    pwrite_near_max: 0,
    ..SMALL_WEIGHTS
};

/// Runs `ops` on a Flat file through `mode` in its own memory under the
/// case's limits; returns the memory's counters.
fn run(mode: Mode, c: &SmallCase, ops: &[Op]) -> Result<MemStats, String> {
    let memory = CacheMemory::new(c.limits()).map_err(|e| e.to_string())?;
    let make = Box::new(move || -> Box<dyn bufwrite_engine::WritePath> {
        Box::new(BufferHeadPath::new(mode))
    });
    run_small(&memory, c, make, ops).map_err(|e| format!("{mode:?}: {e}"))?;
    Ok(memory.stats())
}

/// Random ops on bh-legacy, bh-tailskip and bh-seek under a 64-256 KiB
/// budget with the flusher waking every few milliseconds; reclaim and the
/// flusher really ran.
#[test]
fn bh_paths_small_budget_with_flusher_match_the_model() {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let totals = std::cell::Cell::new(Totals::default());
    let strategy = small_case().prop_flat_map(|c| {
        let ops = ops_strategy(c.capacity, WEIGHTS, 1..24);
        (Just(c), ops)
    });
    runner
        .run(&strategy, |(c, ops)| {
            for mode in Mode::ALL {
                let s = run(mode, &c, &ops).map_err(TestCaseError::fail)?;
                let mut t = totals.get();
                t.add(&s);
                totals.set(t);
            }
            Ok(())
        })
        .unwrap();
    totals.get().check();
}

fn file_on(mode: Mode, faulty: &Arc<Faulty>, memory: &Arc<CacheMemory>) -> File {
    let flat = Arc::new(Flat::new(0, MIB, 1024, 0).unwrap());
    let opts = FileOptions {
        order: OrderPolicy::Fixed(2),
    };
    let path = Box::new(BufferHeadPath::new(mode));
    File::open_in(memory, faulty.clone(), flat, path, opts).unwrap()
}

/// A head written while its folio is under writeback is dirty again
/// afterwards (the write did not wait for the I/O), and the next fsync
/// writes the newer bytes.
#[test]
fn bh_redirty_under_writeback() {
    for mode in Mode::ALL {
        let mem = Arc::new(Mem::new(MIB));
        let faulty = Arc::new(Faulty::new(mem.clone()));
        faulty.set_write_delay(Duration::from_millis(50));
        let memory = CacheMemory::new(CacheLimits::with_budget(4 * MIB)).unwrap();
        let file = file_on(mode, &faulty, &memory);
        file.pwrite(0, &[1u8; 16384]).unwrap();
        std::thread::scope(|s| {
            let bg = s.spawn(|| file.writeback(0, 0));
            while file.mapping().cache.nr_writeback() == 0 && !bg.is_finished() {
                std::thread::yield_now();
            }
            file.pwrite(5000, &[2u8; 1000]).unwrap();
            assert!(
                file.mapping().cache.find(5000).unwrap().lock().dirty(),
                "{mode:?}"
            );
            bg.join().unwrap().unwrap();
        });
        file.fsync().unwrap();
        let mut want = vec![1u8; 16384];
        want[5000..6000].fill(2);
        assert!(mem.snapshot(0, 16384) == want, "{mode:?}");
    }
}

/// A failed background pass leaves the heads dirty and is reported once
/// by the next fsync; the fsync after it is clean and the data is there.
#[test]
fn bh_failed_background_pass_stays_dirty_and_is_reported_once() {
    for mode in Mode::ALL {
        let mem = Arc::new(Mem::new(MIB));
        let faulty = Arc::new(Faulty::new(mem.clone()));
        let lim = CacheLimits {
            flusher: false,
            ..CacheLimits::with_budget(4 * MIB)
        };
        let memory = CacheMemory::new(lim).unwrap();
        let file = file_on(mode, &faulty, &memory);
        file.pwrite(0, &[3u8; 6000]).unwrap();
        faulty.fail_next_writes(1);
        assert!(file.writeback(0, 0).is_err(), "{mode:?}");
        assert!(file.mapping().cache.nr_dirty() > 0, "{mode:?}");
        let r = file.fsync();
        assert!(
            matches!(r, Err(Error::WritebackEarlier { .. })),
            "{mode:?}: {r:?}"
        );
        file.fsync().unwrap();
        assert_eq!(mem.snapshot(0, 6000), vec![3u8; 6000], "{mode:?}");
    }
}
