//! Model cases under a small cache budget with the flusher on, shared by
//! the engine's and compat's tests: reclaim runs all the time and the
//! flusher writes back beside the operations.

use crate::{apply_to, Model, Op, OpWeights, Subject, TraceOp};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{CacheLimits, CacheMemory, FileOptions, Flat, OrderPolicy, WritePath};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// One model case under a small budget: block size, folio orders, the
/// file's capacity, the budget and the flusher's timing.
#[derive(Debug, Clone)]
pub struct SmallCase {
    /// Block size.
    pub bs: u32,
    /// Folio orders.
    pub order: OrderPolicy,
    /// The Flat file's capacity.
    pub capacity: u64,
    /// Cache budget in bytes.
    pub budget: u64,
    /// The flusher's interval, ms.
    pub interval_ms: u64,
    /// The dirty expiry, ms.
    pub expire_ms: u64,
}

/// Cases of 1-4 KiB blocks, orders 0-2, 1-2 MiB files, 64-256 KiB budgets
/// and a flusher waking every 1-10 ms for data 0-4 ms old.
pub fn small_case() -> impl Strategy<Value = SmallCase> {
    (
        prop_oneof![Just(1024u32), Just(2048), Just(4096)],
        prop_oneof![
            (0u8..=2).prop_map(OrderPolicy::Fixed),
            Just(OrderPolicy::FromWrite { max_order: 2 }),
        ],
        prop_oneof![Just(MIB), Just(2 * MIB)],
        prop_oneof![Just(64 * KIB), Just(128 * KIB), Just(256 * KIB)],
        1u64..=10,
        0u64..5,
    )
        .prop_map(
            |(bs, order, capacity, budget, interval_ms, expire_ms)| SmallCase {
                bs,
                order,
                capacity,
                budget,
                interval_ms,
                expire_ms,
            },
        )
}

/// Limits for a budget of `budget` bytes with the dirty limits at an
/// eighth and a quarter of it, a 2 ms expiry, a 5 ms flusher interval and
/// the flusher on (or off).
pub fn small_limits(budget: u64, flusher: bool) -> CacheLimits {
    CacheLimits {
        budget,
        dirty_background: budget / 8,
        dirty_limit: budget / 4,
        dirty_expire: Duration::from_millis(2),
        writeback_interval: Duration::from_millis(5),
        flusher,
    }
}

impl SmallCase {
    /// The case's limits, flusher on.
    pub fn limits(&self) -> CacheLimits {
        CacheLimits {
            dirty_expire: Duration::from_millis(self.expire_ms),
            writeback_interval: Duration::from_millis(self.interval_ms),
            ..small_limits(self.budget, true)
        }
    }
}

/// The model mix with more reads and syncs (each fsync checks the device)
/// and a reopen now and then (the new file charges the same memory).
pub const SMALL_WEIGHTS: OpWeights = OpWeights {
    read: 6,
    fsync: 3,
    ..OpWeights::MODEL
};

/// Runs `ops` on a Flat file in memory `mem` through `make_path`: every
/// read matches the model, the device matches it after every fsync (and
/// at the end, after which nothing is dirty and everything reads back).
pub fn run_small(
    mem: &Arc<CacheMemory>,
    c: &SmallCase,
    make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
    ops: &[Op],
) -> Result<(), String> {
    let dev = Arc::new(Mem::new(c.capacity));
    let flat = Arc::new(Flat::new(0, c.capacity, c.bs, 0).map_err(|e| e.to_string())?);
    let opts = FileOptions { order: c.order };
    let mut subject =
        Subject::flat_in(mem, dev, flat, make_path, opts).map_err(|e| e.to_string())?;
    let mut model = Model::new(c.capacity);
    let end = [Op::Trace(TraceOp::Fsync), Op::DropCaches];
    for (i, op) in ops.iter().chain(&end).enumerate() {
        apply_to(&mut subject, &mut model, op).map_err(|e| format!("op {i}: {e}"))?;
    }
    if subject.file().mapping().cache.nr_dirty() != 0 {
        return Err("dirty folios left after fsync".into());
    }
    let all = Op::Trace(TraceOp::Read {
        off: 0,
        len: model.size() + 100,
    });
    apply_to(&mut subject, &mut model, &all).map_err(|e| format!("final read: {e}"))
}

/// Sums the counters a small-budget model run checks over its cases.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Folios reclaimed.
    pub reclaimed: u64,
    /// Flusher passes.
    pub flusher_passes: u64,
    /// Folios created over budget.
    pub overcommits: u64,
}

impl Totals {
    /// Adds one case's memory counters.
    pub fn add(&mut self, s: &bufwrite_engine::MemStats) {
        self.reclaimed += s.reclaimed;
        self.flusher_passes += s.flusher_passes;
        self.overcommits += s.overcommits;
    }

    /// Over the whole run: reclaim and the flusher really ran, and reclaim
    /// always found room.
    pub fn check(&self) {
        assert!(self.reclaimed > 0, "reclaim never ran: {self:?}");
        assert!(self.flusher_passes > 0, "the flusher never wrote: {self:?}");
        assert_eq!(self.overcommits, 0, "reclaim found no room: {self:?}");
    }
}
