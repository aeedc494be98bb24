//! The writeback and memory machinery: a small cache budget with the
//! flusher on against the model, concurrent writers, readers and syncs,
//! re-dirtying a folio under writeback, writeback errors seen once per
//! open file (errseq), a crash in the middle of writeback, dirty
//! throttling, a stream bounded by its budget, and `File::writeback`.

use bufwrite_engine::device::faulty::{CrashMode, Faulty};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    BlockDevice, CacheLimits, CacheMemory, Error, File, FileOptions, Flat, IomapPath, Mount,
    OpenFlags, OrderPolicy, Result,
};
use bufwrite_testkit::budget::{
    run_small, small_case, small_limits as limits, Totals, SMALL_WEIGHTS,
};
use bufwrite_testkit::ops_strategy;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Barrier, Mutex};
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

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

/// Random ops on iomap with a 64-256 KiB budget and the flusher waking
/// every few milliseconds: reclaim runs all the time, the flusher writes
/// back beside the ops, and the file still matches the model (reads, and
/// the device after each fsync). Reclaim and the flusher really ran.
#[test]
fn small_budget_with_flusher_matches_the_model() {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(96));
    let totals = std::cell::Cell::new(Totals::default());
    let strategy = small_case().prop_flat_map(|c| {
        let ops = ops_strategy(c.capacity, SMALL_WEIGHTS, 1..24);
        (Just(c), ops)
    });
    runner
        .run(&strategy, |(c, ops)| {
            let mem = CacheMemory::new(c.limits()).unwrap();
            run_small(&mem, &c, Box::new(|| Box::new(IomapPath::new())), &ops)
                .map_err(TestCaseError::fail)?;
            let mut t = totals.get();
            t.add(&mem.stats());
            totals.set(t);
            Ok(())
        })
        .unwrap();
    totals.get().check();
}

/// A Faulty over a zeroed Mem of `size` bytes.
fn slow_dev(size: u64) -> (Arc<Mem>, Arc<Faulty>) {
    let mem = Arc::new(Mem::new(size));
    let faulty = Arc::new(Faulty::new(mem.clone()));
    (mem, faulty)
}

/// Waits (bounded) until `cond` holds or `done` says the other side
/// finished; true when `cond` was seen.
fn wait_for(cond: impl Fn() -> bool, done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        if done() {
            return cond();
        }
        std::thread::yield_now();
    }
    false
}

/// An fsync racing a background pass that takes the same dirty folio
/// between the fsync's look at the tags and its lock of the folio must
/// wait for that pass's I/O: when it returns, nothing is under
/// writeback and the data is flushed (was: the fsync saw a clean folio
/// under the lock, skipped it, and returned with the I/O in flight).
#[test]
fn fsync_waits_for_writeback_another_pass_took() {
    let (mem, faulty) = slow_dev(MIB);
    faulty.set_write_delay(Duration::from_micros(300));
    let memory = CacheMemory::new(limits(MIB, false)).unwrap();
    let flat = Arc::new(Flat::new(0, MIB, 4096, 0).unwrap());
    let file = iomap_in(&memory, faulty.clone(), flat.clone(), OrderPolicy::Fixed(0));
    for i in 0..150u64 {
        let byte = (i % 250) as u8 + 1;
        let off = (i % 16) * 4096;
        file.pwrite(off, &[byte; 4096]).unwrap();
        let go = Barrier::new(2);
        std::thread::scope(|s| {
            let bg = s.spawn(|| {
                go.wait();
                file.writeback(0, 0)
            });
            go.wait();
            file.fsync().unwrap();
            assert_eq!(file.mapping().cache.nr_writeback(), 0, "round {i}");
            assert!(
                faulty.unflushed().is_empty(),
                "round {i}: fsync left writes unflushed"
            );
            assert_eq!(mem.snapshot(off, 4096), vec![byte; 4096], "round {i}");
            bg.join().unwrap().unwrap();
        });
    }
}

/// Two writers on disjoint halves, a reader and a thread doing fsync,
/// `File::writeback` and drop_caches, all on one File under a 256 KiB
/// budget with the flusher on: every byte read is one a writer wrote
/// there (or zero, before it), and at the end the device holds each
/// writer's last round.
#[test]
fn concurrent_writers_reader_and_syncer() {
    const HALF: u64 = 512 * KIB;
    const ROUNDS: u8 = 4;
    for order in [
        OrderPolicy::Fixed(0),
        OrderPolicy::FromWrite { max_order: 2 },
    ] {
        let memory = CacheMemory::new(limits(256 * KIB, true)).unwrap();
        let dev = Arc::new(Mem::new(2 * HALF));
        let flat = Arc::new(Flat::new(0, 2 * HALF, 4096, 0).unwrap());
        let file = iomap_in(&memory, dev.clone(), flat, order);
        let value = |writer: u64, round: u8| (writer as u8) * 16 + round;
        let writers_done = AtomicU64::new(0);
        let bad = Mutex::new(None::<String>);
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let (file, writers_done) = (&file, &writers_done);
                s.spawn(move || {
                    for round in 1..=ROUNDS {
                        // Odd chunk sizes, so writes straddle blocks and folios.
                        let chunk = 7000 + 1000 * u64::from(round);
                        let mut off = 0;
                        while off < HALF {
                            let n = chunk.min(HALF - off);
                            let buf = vec![value(w, round); n as usize];
                            file.pwrite(w * HALF + off, &buf).unwrap();
                            off += n;
                        }
                    }
                    writers_done.fetch_add(1, Ordering::SeqCst);
                });
            }
            s.spawn(|| {
                let mut buf = vec![0u8; 20000];
                let mut x = 1u64;
                while writers_done.load(Ordering::SeqCst) < 2 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let off = (x >> 20) % (2 * HALF);
                    let n = file.pread(off, &mut buf).unwrap();
                    for (i, &b) in buf[..n].iter().enumerate() {
                        let at = off + i as u64;
                        let w = at / HALF;
                        let ok = b == 0 || (1..=ROUNDS).any(|r| b == value(w, r));
                        if !ok {
                            *bad.lock().unwrap() = Some(format!("byte {b:#x} at {at}"));
                            return;
                        }
                    }
                }
            });
            s.spawn(|| {
                let mut k = 0u64;
                while writers_done.load(Ordering::SeqCst) < 2 {
                    k += 1;
                    match k % 3 {
                        0 => file.fsync().unwrap(),
                        1 => file.writeback((k % 8) * 128 * KIB, 128 * KIB).unwrap(),
                        _ => {
                            file.drop_caches();
                        }
                    }
                }
            });
        });
        if let Some(e) = bad.lock().unwrap().take() {
            panic!("{order:?}: the reader saw {e}");
        }
        file.fsync().unwrap();
        assert_eq!(file.size(), 2 * HALF);
        for w in 0..2 {
            let got = dev.snapshot(w * HALF, HALF);
            let want = value(w, ROUNDS);
            if let Some(i) = got.iter().position(|&b| b != want) {
                panic!(
                    "{order:?}: device byte {} is {:#x}, want {want:#x}",
                    w * HALF + i as u64,
                    got[i]
                );
            }
        }
        // (Reclaim may or may not run: the syncer's drop_caches races it.)
        let st = memory.stats();
        assert_eq!((st.dirty, st.writeback), (0, 0), "{order:?}: {st:?}");
    }
}

/// A writer that writes a block under writeback is not held up by the
/// I/O (the folio is unlocked during it) and re-dirties it; the older
/// bytes land first, then the next fsync writes the newer ones.
#[test]
fn redirty_under_writeback() {
    let mut seen_under_wb = 0;
    for i in 0..20u64 {
        let bs = [1024u32, 2048, 4096][(i % 3) as usize];
        let order = OrderPolicy::Fixed((i % 3) as u8);
        let (mem, faulty) = slow_dev(MIB);
        faulty.set_write_delay(Duration::from_millis(50));
        let memory = CacheMemory::new(limits(MIB, false)).unwrap();
        let flat = Arc::new(Flat::new(0, MIB, bs, 0).unwrap());
        let file = iomap_in(&memory, faulty.clone(), flat, order);
        let bsz = u64::from(bs);
        let block = (i * 7) % 32;
        let pos = block * bsz;
        // Neighbouring blocks too, so the folio has more than one run.
        file.pwrite(0, &vec![0x11; (40 * bsz) as usize]).unwrap();
        file.fsync().unwrap();
        let old = vec![0x20 + i as u8; bs as usize];
        file.pwrite(pos, &old).unwrap();
        // The second write: the same block whole, its first half, or a
        // range over its end into the next block.
        let (at, len) = match i % 3 {
            0 => (pos, bsz),
            1 => (pos, bsz / 2),
            _ => (pos + bsz / 2, bsz),
        };
        let new = vec![0x80 + i as u8; len as usize];
        std::thread::scope(|s| {
            let bg = s.spawn(|| file.writeback(0, 0));
            let under = wait_for(
                || file.mapping().cache.nr_writeback() > 0,
                || bg.is_finished(),
            );
            file.pwrite(at, &new).unwrap();
            let folio = file.mapping().cache.find(at).unwrap();
            assert!(
                folio.lock().dirty(),
                "round {i}: the write re-dirtied the folio"
            );
            if under && folio.under_writeback() {
                seen_under_wb += 1;
            }
            bg.join().unwrap().unwrap();
        });
        file.fsync().unwrap();
        let mut want = vec![0x11; (40 * bsz) as usize];
        want[pos as usize..(pos + bsz) as usize].copy_from_slice(&old);
        want[at as usize..(at + len) as usize].copy_from_slice(&new);
        assert_eq!(mem.snapshot(0, 40 * bsz), want, "round {i}");
        assert_eq!(file.mapping().cache.nr_dirty(), 0);
    }
    // With a 50 ms device the write nearly always lands mid-I/O; at least
    // once proves the case was exercised.
    assert!(seen_under_wb > 0, "never wrote a folio under writeback");
}

fn tiny_mount(dev: Arc<dyn BlockDevice>, limits: CacheLimits) -> Mount {
    let fs = Arc::new(crate::alloc::TinyFs::new(MIB));
    Mount::with_limits(dev, fs, limits).unwrap()
}

fn open_ab(mount: &Mount) -> (File, File) {
    let create = OpenFlags {
        create: true,
        ..OpenFlags::default()
    };
    let opts = FileOptions {
        order: OrderPolicy::Fixed(0),
    };
    let a = mount
        .open("/f", create, Box::new(IomapPath::new()), opts)
        .unwrap();
    let b = mount
        .open("/f", create, Box::new(IomapPath::new()), opts)
        .unwrap();
    (a, b)
}

fn is_wb_error(r: &Result<()>) -> bool {
    matches!(
        r,
        Err(Error::WritebackEarlier { .. } | Error::Writeback { .. })
    )
}

/// A background pass (`File::writeback`) fails: the data stays dirty, the
/// caller sees the error, and each open file of the inode sees it once
/// at its next fsync (A, which called writeback, too: that call reported
/// it but did not consume A's errseq), then fsyncs are clean again and
/// the data is on the device.
#[test]
fn background_write_error_is_seen_once_per_file() {
    let (mem, faulty) = slow_dev(4 * MIB);
    let mount = tiny_mount(faulty.clone(), limits(MIB, false));
    let (a, b) = open_ab(&mount);
    a.pwrite(0, &[5u8; 8192]).unwrap();
    faulty.fail_next_writes(1);
    assert!(matches!(
        a.writeback(0, 0),
        Err(Error::Writeback { file_offset: 0, .. })
    ));
    assert_eq!(faulty.injected().writes, 1);
    assert!(
        a.mapping().cache.nr_dirty() > 0,
        "the failed data stays dirty"
    );
    assert_eq!(mem.snapshot(0, 8192), vec![0u8; 8192]);
    let ra = a.fsync();
    assert!(
        matches!(ra, Err(Error::WritebackEarlier { file_offset: 0, .. })),
        "{ra:?}"
    );
    // The retry of the fsync wrote it.
    assert_eq!(mem.snapshot(0, 8192), vec![5u8; 8192]);
    a.fsync().unwrap();
    let rb = b.fsync();
    assert!(matches!(rb, Err(Error::WritebackEarlier { .. })), "{rb:?}");
    b.fsync().unwrap();
    // A file opened after the error never sees it.
    let create = OpenFlags::default();
    let c = mount
        .open(
            "/f",
            create,
            Box::new(IomapPath::new()),
            FileOptions::default(),
        )
        .unwrap();
    c.fsync().unwrap();
    assert_eq!(a.mapping().cache.nr_dirty(), 0);
}

/// The flusher hits the error (a range of the device fails every write
/// until healed): the data never goes clean meanwhile; both files' first
/// fsync after the heal report an error, their second is clean, and the
/// data is on the device.
#[test]
fn flusher_write_error_is_seen_once_per_file() {
    let (mem, faulty) = slow_dev(4 * MIB);
    let lim = CacheLimits {
        dirty_expire: Duration::ZERO,
        writeback_interval: Duration::from_millis(1),
        ..limits(MIB, true)
    };
    let mount = tiny_mount(faulty.clone(), lim);
    let (a, b) = open_ab(&mount);
    faulty.fail_writes_in(0..4096);
    a.pwrite(0, &[6u8; 12288]).unwrap();
    assert!(
        wait_for(|| faulty.injected().writes > 0, || false),
        "the flusher never wrote"
    );
    assert!(
        wait_for(|| mount.memory_stats().flusher_passes > 1, || false),
        "the flusher stopped"
    );
    // Still armed: every pass fails, the data is dirty or being retried.
    let st = mount.memory_stats();
    assert!(st.dirty + st.writeback > 0, "{st:?}");
    assert_eq!(mem.snapshot(0, 4096), vec![0u8; 4096]);
    faulty.heal();
    assert!(is_wb_error(&a.fsync()), "A's first fsync");
    a.fsync().unwrap();
    assert!(is_wb_error(&b.fsync()), "B's first fsync");
    b.fsync().unwrap();
    assert_eq!(mem.snapshot(0, 12288), vec![6u8; 12288]);
}

/// A crash in the middle of writeback: version 1 fsynced, version 2
/// written back in part (some of it flushed by a device flush, some in
/// flight when a torn write fails, some never), then the device loses
/// what was not flushed. Every block holds version 1 or 2 whole, every
/// flushed version-2 block holds version 2, and nothing else changed.
#[test]
fn crash_during_writeback_loses_only_unsynced_data() {
    use bufwrite_engine::device::faulty::WriteFault;
    const BLOCKS: u64 = 64;
    for seed in 0..12u64 {
        let bs = 4096u64;
        let (mem, faulty) = slow_dev(BLOCKS * bs);
        faulty.set_crash_mode(CrashMode::Lose);
        // Dirty limits above the file: only the test writes back.
        let memory = CacheMemory::new(limits(4 * MIB, false)).unwrap();
        let flat = Arc::new(Flat::new(0, BLOCKS * bs, 4096, 0).unwrap());
        let order = OrderPolicy::Fixed((seed % 3) as u8);
        let file = iomap_in(&memory, faulty.clone(), flat, order);
        let v1 = |b: u64| (b % 100) as u8 + 1;
        let v2 = |b: u64| (b % 100) as u8 + 128;
        for b in 0..BLOCKS {
            file.pwrite(b * bs, &vec![v1(b); bs as usize]).unwrap();
        }
        file.fsync().unwrap();
        for b in 0..BLOCKS {
            file.pwrite(b * bs, &vec![v2(b); bs as usize]).unwrap();
        }
        // Part of version 2 written and flushed, part written, the rest
        // torn or never written.
        // Folio aligned at every order used (4 blocks of 4 KiB at order 2):
        // writeback takes whole folios.
        let cut = 8 + 4 * (seed % 6);
        file.writeback(0, cut * bs).unwrap();
        faulty.flush().unwrap();
        faulty.fail_next_writes_with(1, WriteFault::Torn { blocks: seed % 5 });
        let torn = file.writeback(cut * bs, 16 * bs);
        assert!(torn.is_err(), "seed {seed}: the torn write");
        file.writeback((cut + 20) * bs, 4 * bs).unwrap();
        let st = faulty.injected();
        assert_eq!((st.writes, st.torn_writes), (1, 1));
        assert!(!faulty.unflushed().is_empty() || seed % 5 == 0);
        faulty.crash().unwrap();
        file.set_writeback_on_drop(false);
        let dev = mem.snapshot(0, BLOCKS * bs);
        for b in 0..BLOCKS {
            let got = &dev[(b * bs) as usize..((b + 1) * bs) as usize];
            let whole = |v: u8| got.iter().all(|&x| x == v);
            if b < cut {
                assert!(
                    whole(v2(b)),
                    "seed {seed}: flushed block {b} lost version 2"
                );
            } else {
                assert!(
                    whole(v1(b)) || whole(v2(b)),
                    "seed {seed}: block {b} is neither version whole"
                );
            }
            // Unflushed writes were undone: past the cut, version 1.
            if b >= cut {
                assert!(
                    whole(v1(b)),
                    "seed {seed}: unflushed block {b} survived the crash"
                );
            }
        }
    }
}

/// Dirty throttling: with a 512 KiB dirty limit and a slow device, a
/// writer of 4 KiB writes is held so that dirty + writeback never passes
/// the limit by more than the folio just written; and it was throttled.
#[test]
fn throttling_holds_dirty_under_the_limit() {
    let (mem, faulty) = slow_dev(8 * MIB);
    faulty.set_write_delay(Duration::from_millis(2));
    let lim = CacheLimits {
        budget: 4 * MIB,
        dirty_background: 256 * KIB,
        dirty_limit: 512 * KIB,
        dirty_expire: Duration::from_millis(30),
        writeback_interval: Duration::from_millis(10),
        flusher: true,
    };
    let memory = CacheMemory::new(lim).unwrap();
    let flat = Arc::new(Flat::new(0, 8 * MIB, 4096, 0).unwrap());
    let file = iomap_in(&memory, faulty.clone(), flat, OrderPolicy::Fixed(0));
    let mut max = 0;
    let buf = [0x5au8; 4096];
    for i in 0..(8 * MIB / 4096) {
        file.pwrite(i * 4096, &buf).unwrap();
        // What the limits count (MemShared::nr_dirty), sampled once.
        max = max.max(memory.shared().nr_dirty());
    }
    eprintln!("throttling: max dirty + writeback {max}");
    assert!(max <= 512 * KIB + 4096, "dirty + writeback reached {max}");
    let st = memory.stats();
    assert!(st.throttled > 0, "{st:?}");
    assert!(st.flusher_passes > 0, "{st:?}");
    file.fsync().unwrap();
    assert!(mem.snapshot(0, 8 * MIB).iter().all(|&b| b == 0x5a));
}

/// A 16 MiB sequential stream through a 1 MiB budget: no error, the
/// cache never holds more than the budget plus one folio, nothing was
/// created over budget, and the device holds the stream.
#[test]
fn memory_bounded_stream() {
    let budget = MIB;
    let memory = CacheMemory::new(CacheLimits::with_budget(budget)).unwrap();
    let dev = Arc::new(Mem::new(16 * MIB));
    let flat = Arc::new(Flat::new(0, 16 * MIB, 4096, 0).unwrap());
    let order = OrderPolicy::FromWrite { max_order: 4 };
    let file = iomap_in(&memory, dev.clone(), flat, order);
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..(16 * MIB / (64 << 10)) {
        let off = i * (64 << 10);
        bufwrite_testkit::fill(9, off, &mut buf);
        file.pwrite(off, &buf).unwrap();
    }
    file.fsync().unwrap();
    let st = memory.stats();
    let largest = 4096u64 << 4;
    assert!(st.peak_cached <= budget + largest, "{st:?}");
    assert_eq!(st.overcommits, 0, "{st:?}");
    assert!(st.reclaimed > 0, "{st:?}");
    let mut want = vec![0u8; 16 * MIB as usize];
    bufwrite_testkit::fill(9, 0, &mut want);
    assert!(
        dev.snapshot(0, 16 * MIB) == want,
        "device differs from the stream"
    );
}

/// `File::writeback(off, len)` writes the dirty folios over the range
/// only, and flushes nothing (sync_file_range is not fsync).
#[test]
fn writeback_of_a_range_writes_only_it_and_does_not_flush() {
    for order in [OrderPolicy::Fixed(0), OrderPolicy::Fixed(2)] {
        let memory = CacheMemory::new(limits(4 * MIB, false)).unwrap();
        let dev = Arc::new(Mem::new(MIB));
        let flat = Arc::new(Flat::new(0, MIB, 4096, 0).unwrap());
        let file = iomap_in(&memory, dev.clone(), flat, order);
        file.pwrite(0, &vec![1u8; 256 << 10]).unwrap();
        let before = file.device_stats();
        // Folios with bytes in [64 KiB, 96 KiB + 1): 64 KiB..112 KiB at
        // order 2 (16 KiB folios), 64 KiB..100 KiB at order 0.
        file.writeback(64 << 10, (32 << 10) + 1).unwrap();
        let after = file.device_stats();
        assert_eq!(
            after.flushes, before.flushes,
            "{order:?}: writeback flushed"
        );
        let fsize = if order == OrderPolicy::Fixed(2) {
            16 << 10
        } else {
            4096
        };
        let end = ((96u64 << 10) + 1).div_ceil(fsize) * fsize;
        assert_eq!(
            after.bytes_written - before.bytes_written,
            end - (64 << 10),
            "{order:?}"
        );
        let dev_bytes = dev.snapshot(0, 256 << 10);
        for (i, &b) in dev_bytes.iter().enumerate() {
            let inside = (64 << 10..end as usize).contains(&i);
            assert_eq!(b, u8::from(inside), "{order:?}: device byte {i}");
        }
        // The rest is still dirty: an fsync writes it, and flushes.
        assert!(file.mapping().cache.nr_dirty() > 0);
        file.fsync().unwrap();
        assert!(file.device_stats().flushes > after.flushes);
        assert_eq!(dev.snapshot(0, 256 << 10), vec![1u8; 256 << 10]);
    }
}

/// A punch's partial edge in a block the mapper still calls unwritten
/// while its data is on the way to the device: written back and waiting
/// for end_io (no flush yet), or in flight. The edge's zeroes must reach
/// the device (was: only the cached copy was zeroed, and the completed
/// write's end_io then exposed the old bytes).
#[test]
fn punch_edge_over_data_the_mapper_has_not_heard_of() {
    for in_flight in [true, false] {
        let (mem, faulty) = slow_dev(MIB);
        let memory = CacheMemory::new(limits(4 * MIB, false)).unwrap();
        let flat = Arc::new(Flat::new(0, MIB, 4096, 0).unwrap());
        let file = iomap_in(&memory, faulty.clone(), flat.clone(), OrderPolicy::Fixed(1));
        file.pwrite(0, &[7u8; 8192]).unwrap();
        std::thread::scope(|s| {
            if in_flight {
                faulty.set_write_delay(Duration::from_millis(100));
                let bg = s.spawn(|| file.writeback(0, 0));
                assert!(wait_for(
                    || file.mapping().cache.nr_writeback() > 0,
                    || bg.is_finished()
                ));
                file.fallocate(100, 3996, bufwrite_engine::FallocMode::PunchHole)
                    .unwrap();
                bg.join().unwrap().unwrap();
            } else {
                file.writeback(0, 0).unwrap();
                assert!(file.mapping().has_pending_io(), "end_io waits for a flush");
                assert!(!flat.unwritten_ranges().is_empty());
                file.fallocate(100, 3996, bufwrite_engine::FallocMode::PunchHole)
                    .unwrap();
            }
        });
        file.fsync().unwrap();
        let mut want = vec![7u8; 8192];
        want[100..4096].fill(0);
        let got = bufwrite_testkit::flat_bytes(faulty.as_ref(), &flat, 8192).unwrap();
        assert!(
            got == want,
            "in flight {in_flight}: the punched edge's zeroes were lost"
        );
        file.drop_caches();
        let mut buf = vec![0u8; 8192];
        file.pread(0, &mut buf).unwrap();
        assert!(buf == want);
        let _ = mem;
    }
}

/// A budget smaller than one LRU batch of new folios (16 folios of 16 KiB
/// against 64 KiB): reclaim must see the folios still waiting for their
/// batch, or it finds nothing and every new folio goes over budget (was:
/// a read of 1 MiB overcommitted 48 times and held 256 KiB).
#[test]
fn a_budget_smaller_than_an_lru_batch_is_kept() {
    let budget = 64 * KIB;
    let memory = CacheMemory::new(limits(budget, true)).unwrap();
    let dev = Arc::new(Mem::from_bytes(vec![0x42; MIB as usize], 512));
    let flat = Arc::new(Flat::new(0, MIB, 4096, MIB).unwrap());
    let file = iomap_in(&memory, dev, flat, OrderPolicy::Fixed(2));
    let mut buf = vec![0u8; 4096];
    for off in (0..MIB).step_by(4096) {
        assert_eq!(file.pread(off, &mut buf).unwrap(), 4096);
        assert!(buf.iter().all(|&b| b == 0x42));
    }
    let st = memory.stats();
    assert_eq!(st.overcommits, 0, "{st:?}");
    assert!(st.peak_cached <= budget + (16 << 10), "{st:?}");
    assert!(st.reclaimed >= 60, "{st:?}");
}

/// A write maps its extent once, before it looks its folios up. Here the
/// first write leaves block 7 written back and waiting for its conversion;
/// the second write's folio creation reclaims (no flusher: the writer
/// makes the pending completions durable, converts them, and evicts the
/// clean folio of block 7), so its partial write into block 7 lands in a
/// new folio with a mapping that still says unwritten. The block must be
/// read, not zeroed (found by the model proptest above).
#[test]
fn a_stale_unwritten_extent_never_zeroes_data_reclaim_made_durable() {
    use bufwrite_engine::pattern;
    let l = limits(65536, false);
    let mem = CacheMemory::new(l).unwrap();
    let dev = Arc::new(Mem::new(2 << 20));
    let flat = Arc::new(Flat::new(0, 2 << 20, 4096, 0).unwrap());
    let opts = FileOptions {
        order: OrderPolicy::FromWrite { max_order: 2 },
    };
    let f = File::open_in(&mem, dev.clone(), flat, Box::new(IomapPath::new()), opts).unwrap();
    let mut b1 = vec![0u8; 33732];
    pattern::fill(0, 31805, &mut b1);
    f.pwrite(31805, &b1).unwrap();
    let mut b2 = vec![0u8; 28673];
    pattern::fill(0, 0, &mut b2);
    f.pwrite(0, &b2).unwrap();
    assert!(mem.stats().reclaimed > 0, "{:?}", mem.stats());
    let mut one = [0u8; 1];
    f.pread(31805, &mut one).unwrap();
    assert_eq!(one[0], b1[0], "the cache lost the first write's byte");
    f.fsync().unwrap();
    let mut sector = [0u8; 512];
    dev.read_at(31744, &mut sector).unwrap();
    assert_eq!(sector[31805 - 31744], b1[0], "the device lost it");
}
