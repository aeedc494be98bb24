//! The random-sequence property test on all four paths: iomap, Legacy,
//! TailSkip and SeekToFrom each get their own file on their own device;
//! every op runs on all four and on a model. Every read must return the
//! model's bytes on every path (so all four agree), and after every fsync
//! every device must hold the model's bytes.

use crate::common::run_on_every_path;
use bufwrite_engine::testing::{ops_strategy, setup_strategy, Op, OpWeights, Setup};
use bufwrite_engine::OrderPolicy;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

/// The engine model test's mix without the pwrites near `u64::MAX`, with
/// more fsyncs (every fsync checks all four devices).
const WEIGHTS: OpWeights = OpWeights {
    pwrite_near_max: 0,
    fsync: 3,
    ..OpWeights::MODEL
};

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup_strategy(2).prop_flat_map(|s| {
        let ops = ops_strategy(s.capacity, WEIGHTS, 1..20);
        (Just(s), ops)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn four_paths_match_the_model((s, ops) in case()) {
        run_on_every_path(&s, &ops).map_err(TestCaseError::fail)?;
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
                if let Err(e) = run_on_every_path(&s, &ops) {
                    panic!("{s:?}: {e}");
                }
            }
        }
    }
}
