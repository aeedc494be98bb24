//! Review hunts: longer random sequences with many drop_caches and reads
//! past EOF on all four paths, and several threads on one file.

use crate::common::{run_on_every_path, PATHS};
use bufwrite_engine::OrderPolicy;
use bufwrite_testkit::{ops_strategy, Op, OpWeights, Setup};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

const WEIGHTS: OpWeights = OpWeights {
    write: 4,
    pwrite: 8,
    pwrite_near_max: 0,
    writev: 3,
    seek: 3,
    read: 8,
    fsync: 3,
    drop_caches: 5,
    ..OpWeights::MODEL
};

fn cases() -> u32 {
    std::env::var("REVIEW_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn setup() -> impl Strategy<Value = Setup> {
    let bs = prop_oneof![Just(1024u32), Just(2048), Just(4096)];
    let order = prop_oneof![
        Just(OrderPolicy::Fixed(0)),
        Just(OrderPolicy::Fixed(1)),
        Just(OrderPolicy::Fixed(4)),
        Just(OrderPolicy::Fixed(9)),
        Just(OrderPolicy::FromWrite { max_order: 2 }),
        Just(OrderPolicy::FromWrite { max_order: 4 }),
        Just(OrderPolicy::FromWrite { max_order: 9 }),
    ];
    let capacity = prop_oneof![Just(4 * MIB), Just(3 * MIB + (12 << 10)), Just(40 << 10)];
    let base = prop_oneof![Just(0u64), Just(64 << 10)];
    let size = prop_oneof![Just(0u64), Just(5000), Just(1000), Just(MIB + 777)];
    (bs, order, capacity, base, size).prop_map(|(bs, order, capacity, base, size)| Setup {
        bs,
        order,
        capacity,
        base,
        size: size.min(capacity),
    })
}

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup().prop_flat_map(|s| {
        let ops = ops_strategy(s.capacity, WEIGHTS, 1..60);
        (Just(s), ops)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn long_sequences_with_drops_match_the_model((s, ops) in case()) {
        run_on_every_path(&s, &ops).map_err(TestCaseError::fail)?;
    }
}

/// A tiny deterministic generator for the threaded test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = bufwrite_testkit::splitmix64(self.0);
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STALE: u8 = 0xee;
const POISON: u8 = 0xd5;
const INITIAL: u8 = 0x11;

/// One writer, two readers, an fsync loop and a drop_caches loop on one
/// file. Writes use byte values that are neither the device's stale bytes
/// nor the folio poison; no read may ever return either. At the end the
/// file, read back from the device, matches the writer's sequence.
fn threaded(name: &str, bs: u32, order: OrderPolicy, size: u64, seed: u64) -> Result<(), String> {
    use bufwrite_engine::device::mem::Mem;
    use bufwrite_engine::{File, FileOptions, Flat};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let capacity = 3 * MIB + (12 << 10);
    let mut bytes = vec![STALE; capacity as usize];
    bytes[..size as usize].fill(INITIAL);
    let mem = Arc::new(Mem::from_bytes(bytes, 512));
    let flat = Arc::new(Flat::new(0, capacity, bs, size).unwrap());
    let file = File::open(
        mem.clone(),
        flat.clone(),
        crate::common::path(name, &bufwrite_compat::WalkCounter::new()),
        FileOptions { order },
    )
    .unwrap();
    let mut model = vec![INITIAL; size as usize];
    let done = AtomicBool::new(false);
    let bad: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let report = |m: String| {
        bad.lock().unwrap().get_or_insert(m);
    };
    std::thread::scope(|sc| {
        for r in 0..2u64 {
            let (file, done, report) = (&file, &done, &report);
            sc.spawn(move || {
                let mut rng = Rng(seed ^ (r + 100));
                let mut buf = vec![0u8; 300_000];
                while !done.load(Ordering::Relaxed) {
                    let off = match rng.below(3) {
                        0 => rng.below(64 << 10),
                        1 => file.size().saturating_sub(rng.below(20000)),
                        _ => rng.below(capacity),
                    };
                    let big = rng.below(4) == 0;
                    let len = 1 + rng.below(if big { 300_000 } else { 9000 });
                    match file.pread(off, &mut buf[..len as usize]) {
                        Ok(n) => {
                            if let Some(i) =
                                buf[..n].iter().position(|&b| b == STALE || b == POISON)
                            {
                                report(format!(
                                    "{name}: pread({off}, {len}) byte at {} is {:#04x}",
                                    off + i as u64,
                                    buf[i]
                                ));
                                return;
                            }
                        }
                        Err(e) => report(format!("{name}: pread failed: {e}")),
                    }
                }
            });
        }
        {
            let (file, done, report) = (&file, &done, &report);
            sc.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Err(e) = file.fsync() {
                        report(format!("{name}: fsync failed: {e}"));
                    }
                    std::thread::yield_now();
                }
            });
            sc.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    file.drop_caches();
                    std::thread::yield_now();
                }
            });
        }
        let mut rng = Rng(seed);
        for _ in 0..400 {
            let cur = model.len() as u64;
            let off = match rng.below(4) {
                0 => rng.below(64 << 10),
                1 => (cur + rng.below(9000)).saturating_sub(3000),
                2 => rng.below(capacity - 1),
                _ => (rng.below(3) * 2 * MIB + rng.below(6000)).saturating_sub(3000),
            }
            .min(capacity - 1);
            let big = rng.below(8) == 0;
            let len = (1 + rng.below(if big { 2 * MIB } else { 12000 })).min(capacity - off);
            let v = (rng.below(0x60) + 0x20) as u8;
            let data = vec![v; len as usize];
            match file.pwrite(off, &data) {
                Ok(n) if n as u64 == len => {}
                other => {
                    report(format!("{name}: pwrite({off}, {len}) -> {other:?}"));
                    break;
                }
            }
            let end = (off + len) as usize;
            if end > model.len() {
                model.resize(end, 0);
            }
            model[off as usize..end].fill(v);
        }
        done.store(true, Ordering::Relaxed);
    });
    if let Some(m) = bad.into_inner().unwrap() {
        return Err(m);
    }
    file.fsync()
        .map_err(|e| format!("{name}: final fsync: {e}"))?;
    if file.size() != model.len() as u64 {
        return Err(format!(
            "{name}: size {} expected {}",
            file.size(),
            model.len()
        ));
    }
    // The file as the device and the mapper hold it (unwritten gaps read
    // as zeroes).
    let disk = bufwrite_testkit::flat_bytes(mem.as_ref(), &flat, model.len() as u64)?;
    if let Some(i) = disk.iter().zip(&model).position(|(a, b)| a != b) {
        return Err(format!(
            "{name}: device byte {i} is {:#04x}, expected {:#04x}",
            disk[i], model[i]
        ));
    }
    file.drop_caches();
    let mut back = vec![0u8; model.len() + 10];
    let n = file.pread(0, &mut back).map_err(|e| e.to_string())?;
    if back[..n] != model[..] {
        return Err(format!("{name}: read back differs"));
    }
    Ok(())
}

#[test]
fn threads_never_expose_stale_or_poisoned_bytes() {
    let iters: u64 = std::env::var("REVIEW_THREAD_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for seed in 0..iters {
        for (i, name) in PATHS.iter().enumerate() {
            let bs = [1024u32, 2048, 4096][(seed as usize + i) % 3];
            let order = [
                OrderPolicy::FromWrite { max_order: 9 },
                OrderPolicy::Fixed(2),
                OrderPolicy::FromWrite { max_order: 3 },
                OrderPolicy::Fixed(0),
            ][(seed as usize + i) % 4];
            let size = [0u64, 5000, 1000][(seed as usize) % 3];
            threaded(name, bs, order, size, seed * 7 + i as u64)
                .unwrap_or_else(|e| panic!("seed {seed} bs {bs} {order:?} size {size}: {e}"));
        }
    }
}

/// A writeback error in the middle of runs merged across folios keeps
/// exactly the failed data dirty; a failed read-in exposes nothing; the
/// retries complete both.
#[test]
fn faults_keep_data_dirty_and_expose_nothing() {
    use bufwrite_engine::device::faulty::Faulty;
    use bufwrite_engine::device::mem::Mem;
    use bufwrite_engine::{File, FileOptions, Flat};
    use bufwrite_testkit::flat_bytes;
    use std::sync::Arc;

    for name in PATHS {
        for order in [OrderPolicy::Fixed(0), OrderPolicy::Fixed(2)] {
            let cap = 256 << 10;
            let mem = Arc::new(Mem::from_bytes(vec![STALE; cap as usize], 512));
            let faulty = Arc::new(Faulty::new(mem.clone()));
            let flat = Arc::new(Flat::new(0, cap, 1024, 10_000).unwrap());
            let file = File::open(
                faulty.clone(),
                flat.clone(),
                crate::common::path(name, &bufwrite_compat::WalkCounter::new()),
                FileOptions { order },
            )
            .unwrap();
            let mut model = mem.snapshot(0, 10_000);
            for (off, len, v) in [(500u64, 3000u64, 1u8), (5000, 9000, 2), (30_000, 100, 3)] {
                assert_eq!(
                    file.pwrite(off, &vec![v; len as usize]).unwrap(),
                    len as usize
                );
                let end = (off + len) as usize;
                if end > model.len() {
                    model.resize(end, 0);
                }
                model[off as usize..end].fill(v);
            }
            faulty.fail_writes_in(6144..7168);
            assert!(file.fsync().is_err(), "{name} {order:?}");
            assert!(file.mapping().cache.nr_dirty() > 0, "{name} {order:?}");
            file.drop_caches();
            faulty.heal();
            let mut buf = vec![0u8; model.len() + 5];
            assert_eq!(file.pread(0, &mut buf).unwrap(), model.len());
            assert!(buf[..model.len()] == model[..], "{name} {order:?}");
            file.fsync().unwrap();
            assert_eq!(file.mapping().cache.nr_dirty(), 0);
            // The file as the device and the mapper hold it: the gap the
            // write past EOF left is unwritten (zeroes), not written.
            assert!(
                flat_bytes(mem.as_ref(), &flat, model.len() as u64).unwrap() == model,
                "{name} {order:?}"
            );
            file.drop_caches();
            // Where the device holds the file's data: the gap past the old
            // EOF is unwritten now and reads as zeroes without a device read.
            faulty.fail_next_reads(1);
            assert!(file.pread(4000, &mut buf[..8000]).is_err());
            faulty.heal();
            assert_eq!(file.pread(4000, &mut buf[..8000]).unwrap(), 8000);
            assert!(buf[..8000] == model[4000..12_000], "{name} {order:?}");
        }
    }
}
