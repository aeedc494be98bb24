//! Random sequences of file operations against the model harness, over
//! block sizes, folio order policies and devices.

use crate::common::{Dev, Rig};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{AllocPolicy, FileOptions, IomapPath};
use bufwrite_testkit::Reserving;
use bufwrite_testkit::{
    apply_to, edge_sequence, every_block_size_and_policy, ops_strategy, setup_strategy, Model, Op,
    OpWeights, Setup, Subject, TraceOp,
};
use proptest::prelude::*;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup_strategy(3).prop_flat_map(|s| {
        let ops = ops_strategy(s.capacity, OpWeights::default(), 1..24);
        (Just(s), ops)
    })
}

/// Runs `ops` on a fresh file and on the model; checks every read, and the
/// device after every fsync, fdatasync and reopen (unwritten ranges read as
/// zeroes), then once more at the end (after dropping the cache, every byte
/// is read back from the device).
fn run(dev: Dev, s: &Setup, ops: &[Op]) -> Result<(), String> {
    let rig = Rig::new(dev, s.bs, s.order, s.base, s.capacity, s.size);
    let start = s.base as usize;
    let initial = rig.initial[start..start + s.size as usize].to_vec();
    let mut model = Model::with_data(initial, s.capacity);
    // The rig's own file stays idle: the subject's file (and the files
    // each reopen makes) is the one under test.
    let mut subject = Subject::flat(
        rig.dev.clone(),
        rig.flat.clone(),
        Box::new(|| Box::new(IomapPath::new())),
        rig.opts,
    )
    .map_err(|e| e.to_string())?;
    for (i, op) in ops.iter().enumerate() {
        apply_to(&mut subject, &mut model, op).map_err(|e| format!("op {i}: {e}"))?;
        crate::common::check_invariants(subject.file())
            .map_err(|e| format!("after op {i} ({op}): {e}"))?;
        if matches!(
            op,
            Op::Trace(TraceOp::Fsync | TraceOp::Fdatasync) | Op::Reopen
        ) {
            rig.check_outside()
                .map_err(|e| format!("after op {i} ({op}): {e}"))?;
        }
    }
    for op in [Op::Trace(TraceOp::Fsync), Op::DropCaches] {
        apply_to(&mut subject, &mut model, &op)?;
    }
    subject
        .check_device(&model)
        .map_err(|e| format!("final fsync: {e}"))?;
    rig.check_outside()?;
    if subject.file().mapping().cache.nr_dirty() != 0 {
        return Err("dirty folios left after fsync".into());
    }
    let all = Op::Trace(TraceOp::Read {
        off: 0,
        len: model.size() + 100,
    });
    apply_to(&mut subject, &mut model, &all).map_err(|e| format!("final read: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn mem_matches_model((s, ops) in case()) {
        run(Dev::Mem, &s, &ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sync_matches_model((s, ops) in case()) {
        run(Dev::Sync, &s, &ops).map_err(TestCaseError::fail)?;
    }
}

/// Every block size and order policy at least once, with a fixed sequence
/// that writes past EOF, across folios, up to the capacity and past it.
#[test]
fn fixed_sequence_every_setup() {
    let capacity = 4 * MIB;
    let ops = edge_sequence(capacity);
    for (bs, order) in every_block_size_and_policy() {
        let s = Setup {
            bs,
            order,
            capacity,
            base: 0,
            size: 0,
        };
        run(Dev::Mem, &s, &ops).unwrap_or_else(|e| panic!("{bs} {order:?}: {e}"));
    }
}

/// Runs `ops` on a delalloc file ([`Reserving`], room for every block) on
/// the iomap path: writes reserve, writeback allocates (`policy`), every
/// fsync checks the written blocks on the device (a range written but not
/// converted would read as zeroes there) and that no reservation is left.
fn run_delalloc(s: &Setup, policy: AllocPolicy, ops: &[Op]) -> Result<(), String> {
    let mem = Arc::new(Mem::new(s.base + s.capacity));
    let limit = s.capacity / u64::from(s.bs);
    let mapper = Arc::new(Reserving::new(s.base, s.capacity, s.bs, limit, policy));
    let mut subject = Subject::reserving(
        mem,
        mapper.clone(),
        Box::new(|| Box::new(IomapPath::new())),
        FileOptions { order: s.order },
    )
    .map_err(|e| e.to_string())?;
    let mut model = Model::new(s.capacity);
    for (i, op) in ops
        .iter()
        .chain(&[Op::Trace(TraceOp::Fsync), Op::DropCaches])
        .enumerate()
    {
        apply_to(&mut subject, &mut model, op).map_err(|e| format!("op {i}: {e}"))?;
        crate::common::check_invariants(subject.file())
            .map_err(|e| format!("after op {i} ({op}): {e}"))?;
    }
    let all = Op::Trace(TraceOp::Read {
        off: 0,
        len: model.size() + 100,
    });
    apply_to(&mut subject, &mut model, &all).map_err(|e| format!("final read: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn delalloc_matches_model(
        (s, ops) in case(),
        policy in prop_oneof![Just(AllocPolicy::Unwritten), Just(AllocPolicy::Ordered)],
    ) {
        run_delalloc(&Setup { size: 0, ..s }, policy, &ops).map_err(TestCaseError::fail)?;
    }
}
