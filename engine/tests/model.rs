//! Random sequences of file operations against the model harness, over
//! block sizes, folio order policies and devices.

mod common;

use bufwrite_engine::testing::{
    apply, check_device, ops_strategy, setup_strategy, Model, Op, OpWeights, Setup,
};
use bufwrite_engine::OrderPolicy;
use common::{Dev, Rig};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup_strategy(3).prop_flat_map(|s| {
        let ops = ops_strategy(s.capacity, OpWeights::default(), 1..24);
        (Just(s), ops)
    })
}

/// Runs `ops` on a fresh file and on the model; checks every read, and the
/// device after every fsync, then once more at the end (after dropping the
/// cache, every byte is read back from the device).
fn run(dev: Dev, s: &Setup, ops: &[Op]) -> Result<(), String> {
    let rig = Rig::new(dev, s.bs, s.order, s.base, s.capacity, s.size);
    let start = s.base as usize;
    let initial = rig.initial[start..start + s.size as usize].to_vec();
    let mut model = Model::with_data(initial, s.capacity);
    let check = |model: &Model| -> Result<(), String> {
        check_device(&rig.region_bytes(), model)?;
        rig.check_outside()
    };
    for (i, op) in ops.iter().enumerate() {
        apply(&rig.file, &mut model, op).map_err(|e| format!("op {i}: {e}"))?;
        common::check_invariants(&rig.file).map_err(|e| format!("after op {i} ({op}): {e}"))?;
        if *op == Op::Fsync {
            check(&model).map_err(|e| format!("after op {i} ({op}): {e}"))?;
        }
    }
    for op in [Op::Fsync, Op::DropCaches] {
        apply(&rig.file, &mut model, &op)?;
    }
    check(&model).map_err(|e| format!("final fsync: {e}"))?;
    if rig.file.inode().cache.nr_dirty() != 0 {
        return Err("dirty folios left after fsync".into());
    }
    let all = Op::Read {
        off: 0,
        len: model.size() + 100,
    };
    apply(&rig.file, &mut model, &all).map_err(|e| format!("final read: {e}"))
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
    for bs in [1024u32, 2048, 4096] {
        for order in [
            OrderPolicy::Fixed(0),
            OrderPolicy::Fixed(2),
            OrderPolicy::Fixed(9),
            OrderPolicy::FromWrite { max_order: 9 },
        ] {
            let cap = 4 * MIB;
            let s = Setup {
                bs,
                order,
                capacity: cap,
                base: 0,
                size: 0,
            };
            let ops = vec![
                Op::Pwrite {
                    off: 100,
                    len: 10,
                    seed: 1,
                },
                Op::Pwrite {
                    off: 2 * MIB - 1000,
                    len: 3000,
                    seed: 2,
                },
                Op::Fsync,
                Op::DropCaches,
                Op::Pwrite {
                    off: 2 * MIB - 10,
                    len: 20,
                    seed: 3,
                },
                Op::Read {
                    off: 0,
                    len: 3 * MIB,
                },
                Op::Seek { off: cap - 5000 },
                Op::Write { len: 5000, seed: 4 },
                Op::Write { len: 1, seed: 5 },
                Op::Pwrite {
                    off: cap - 1,
                    len: 2,
                    seed: 6,
                },
                Op::Fsync,
                Op::DropCaches,
                Op::Writev {
                    lens: vec![1, 0, 4095, 3000],
                    seed: 7,
                },
                Op::Pwrite {
                    off: 0,
                    len: 2 * MIB + 4096,
                    seed: 8,
                },
                Op::Read {
                    off: 1000,
                    len: 4 * MIB,
                },
                Op::Fsync,
            ];
            run(Dev::Mem, &s, &ops).unwrap_or_else(|e| panic!("{bs} {order:?}: {e}"));
        }
    }
}
