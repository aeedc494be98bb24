//! Random sequences of file operations against the model harness, over
//! block sizes, folio order policies and devices.

mod common;

use bufwrite_engine::testing::{apply, check_device, Model, Op};
use bufwrite_engine::OrderPolicy;
use common::{Dev, Rig};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

/// One test setup.
#[derive(Debug, Clone)]
struct Setup {
    bs: u32,
    order: OrderPolicy,
    capacity: u64,
    base: u64,
    /// Initial file size: bytes the device already holds for the file.
    size: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    let bs = prop_oneof![Just(1024u32), Just(2048), Just(4096)];
    let order = prop_oneof![
        Just(OrderPolicy::Fixed(0)),
        Just(OrderPolicy::Fixed(2)),
        Just(OrderPolicy::Fixed(9)),
        Just(OrderPolicy::FromWrite { max_order: 9 }),
    ];
    // 4 MiB holds two order-9 folios exactly; 3 MiB + 12 KiB ends inside
    // one, so folios reach past the capacity.
    let capacity = prop_oneof![Just(4 * MIB), Just(3 * MIB + (12 << 10))];
    let base = prop_oneof![Just(0u64), Just(64 << 10)];
    let size = prop_oneof![3 => Just(0u64), 1 => Just(5000), 1 => Just(MIB + 777)];
    (bs, order, capacity, base, size).prop_map(|(bs, order, capacity, base, size)| Setup {
        bs,
        order,
        capacity,
        base,
        size,
    })
}

/// A file offset: small, near 16 KiB / 2 MiB boundaries, anywhere below
/// the capacity, or near the capacity's end.
fn offset(capacity: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..64 << 10,
        3 => (0u64..=2, -3000i64..3000).prop_map(|(k, d)| (k * 2 * MIB).saturating_add_signed(d)),
        2 => (0u64..256, -700i64..700).prop_map(|(k, d)| (k * 16384).saturating_add_signed(d)),
        2 => 0..capacity,
        1 => (0u64..20000).prop_map(move |d| capacity.saturating_sub(d)),
    ]
}

/// A write or read length: mostly small, sometimes folio-sized.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..5000,
        3 => 1u64..40000,
        1 => (2 * MIB - 8192)..(2 * MIB + 70000),
        1 => Just(0u64),
    ]
}

fn op(capacity: u64) -> impl Strategy<Value = Op> {
    let seed = any::<u64>();
    prop_oneof![
        4 => (length(), seed).prop_map(|(len, seed)| Op::Write { len, seed }),
        8 => (offset(capacity), length(), seed)
            .prop_map(|(off, len, seed)| Op::Pwrite { off, len, seed }),
        1 => (u64::MAX - 5000..=u64::MAX, 1u64..10000, seed)
            .prop_map(|(off, len, seed)| Op::Pwrite { off, len, seed }),
        3 => (prop::collection::vec(prop_oneof![4 => 0u64..3000, 1 => 0u64..20000], 0..6), seed)
            .prop_map(|(lens, seed)| Op::Writev { lens, seed }),
        3 => offset(capacity).prop_map(|off| Op::Seek { off }),
        5 => (offset(capacity), length()).prop_map(|(off, len)| Op::Read { off, len }),
        2 => Just(Op::Fsync),
        2 => Just(Op::DropCaches),
    ]
}

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup().prop_flat_map(|s| {
        let ops = prop::collection::vec(op(s.capacity), 1..24);
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
