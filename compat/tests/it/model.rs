//! The random-sequence property test on all four paths: iomap, Legacy,
//! TailSkip and SeekToFrom each get their own file on their own device;
//! every op runs on all four and on a model. Every read must return the
//! model's bytes on every path (so all four agree), and after every fsync
//! every device must hold the model's bytes.

use crate::common::{Rig, PATHS};
use bufwrite_engine::testing::{apply, check_device, Model, Op};
use bufwrite_engine::OrderPolicy;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Setup {
    bs: u32,
    order: OrderPolicy,
    capacity: u64,
    base: u64,
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
    // The odd capacity ends inside an order-9 folio.
    let capacity = prop_oneof![Just(4 * MIB), Just(3 * MIB + (12 << 10))];
    let base = prop_oneof![Just(0u64), Just(64 << 10)];
    let size = prop_oneof![2 => Just(0u64), 1 => Just(5000), 1 => Just(MIB + 777)];
    (bs, order, capacity, base, size).prop_map(|(bs, order, capacity, base, size)| Setup {
        bs,
        order,
        capacity,
        base,
        size,
    })
}

/// Offsets near the start, near block and folio boundaries, anywhere, and
/// near the capacity.
fn offset(capacity: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..64 << 10,
        3 => (0u64..=2, -3000i64..3000).prop_map(|(k, d)| (k * 2 * MIB).saturating_add_signed(d)),
        2 => (0u64..256, -700i64..700).prop_map(|(k, d)| (k * 16384).saturating_add_signed(d)),
        2 => 0..capacity,
        1 => (0u64..20000).prop_map(move |d| capacity.saturating_sub(d)),
    ]
}

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
        3 => (prop::collection::vec(prop_oneof![4 => 0u64..3000, 1 => 0u64..20000], 0..6), seed)
            .prop_map(|(lens, seed)| Op::Writev { lens, seed }),
        3 => offset(capacity).prop_map(|off| Op::Seek { off }),
        5 => (offset(capacity), length()).prop_map(|(off, len)| Op::Read { off, len }),
        3 => Just(Op::Fsync),
        2 => Just(Op::DropCaches),
    ]
}

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup().prop_flat_map(|s| {
        let ops = prop::collection::vec(op(s.capacity), 1..20);
        (Just(s), ops)
    })
}

/// Runs `ops` on the four paths and the model (one model per file, all
/// fed the same ops, so they stay equal).
fn run(s: &Setup, ops: &[Op]) -> Result<(), String> {
    let rigs: Vec<Rig> = PATHS
        .iter()
        .map(|p| Rig::new(p, s.bs, s.order, s.base, s.capacity, s.size))
        .collect();
    let initial = rigs[0].region()[..s.size as usize].to_vec();
    let mut models: Vec<Model> = rigs
        .iter()
        .map(|_| Model::with_data(initial.clone(), s.capacity))
        .collect();
    let check = |rig: &Rig, model: &Model| check_device(&rig.region(), model);
    let all = [Op::Fsync, Op::DropCaches];
    for (i, op) in ops.iter().chain(all.iter()).enumerate() {
        for (rig, model) in rigs.iter().zip(models.iter_mut()) {
            let name = rig.file.path_name();
            apply(&rig.file, model, op).map_err(|e| format!("{name}: op {i}: {e}"))?;
            if *op == Op::Fsync {
                check(rig, model).map_err(|e| format!("{name}: after op {i} ({op}): {e}"))?;
            }
        }
    }
    // After dropping the cache every byte comes back from the device.
    for (rig, model) in rigs.iter().zip(models.iter_mut()) {
        let name = rig.file.path_name();
        if rig.file.inode().cache.nr_dirty() != 0 {
            return Err(format!("{name}: dirty folios left after fsync"));
        }
        let read_all = Op::Read {
            off: 0,
            len: model.size() + 100,
        };
        apply(&rig.file, model, &read_all).map_err(|e| format!("{name}: final read: {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn four_paths_match_the_model((s, ops) in case()) {
        run(&s, &ops).map_err(TestCaseError::fail)?;
    }
}

/// Every block size and order policy once, with a fixed sequence that
/// writes past EOF, across folios, up to and past the capacity.
#[test]
fn fixed_sequence_every_setup() {
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
        Op::Seek {
            off: 4 * MIB - 5000,
        },
        Op::Write { len: 5000, seed: 4 },
        Op::Write { len: 1, seed: 5 },
        Op::Pwrite {
            off: 4 * MIB - 1,
            len: 2,
            seed: 6,
        },
        Op::Fsync,
        Op::DropCaches,
        Op::Seek { off: 7000 },
        Op::Writev {
            lens: vec![1, 0, 4095, 3000],
            seed: 7,
        },
        Op::Pwrite {
            off: 0,
            len: 2 * MIB + 4096,
            seed: 8,
        },
        Op::Pwrite {
            off: 4096,
            len: 1024,
            seed: 9,
        },
        Op::Read {
            off: 1000,
            len: 9000,
        },
        Op::Fsync,
    ];
    for bs in [1024u32, 2048, 4096] {
        for order in [
            OrderPolicy::Fixed(0),
            OrderPolicy::Fixed(2),
            OrderPolicy::Fixed(9),
            OrderPolicy::FromWrite { max_order: 9 },
        ] {
            for size in [0, 5000] {
                let s = Setup {
                    bs,
                    order,
                    capacity: 4 * MIB,
                    base: 0,
                    size,
                };
                if let Err(e) = run(&s, &ops) {
                    panic!("{s:?}: {e}");
                }
            }
        }
    }
}
