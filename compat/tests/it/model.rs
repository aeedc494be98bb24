//! The random-sequence property test on all four paths: iomap, Legacy,
//! TailSkip and SeekToFrom each get their own file on their own device;
//! every op runs on all four and on a model. Every read must return the
//! model's bytes on every path (so all four agree), and after every fsync
//! every device must hold the model's bytes.

use crate::common::{run_on_every_path, run_on_every_path_with};
use bufwrite_engine::AllocPolicy;
use bufwrite_testkit::{
    edge_sequence, every_block_size_and_policy, ops_strategy, setup_strategy, Op, OpWeights, Setup,
};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The same over delalloc files: reservations at write time (get_block
    /// per head, iomap_begin per extent), allocation at writeback.
    #[test]
    fn four_paths_match_the_model_with_delalloc(
        (s, ops) in case(),
        policy in prop_oneof![Just(AllocPolicy::Unwritten), Just(AllocPolicy::Ordered)],
    ) {
        run_on_every_path_with(&s, &ops, Some(policy)).map_err(TestCaseError::fail)?;
    }
}

/// Every block size and order policy once, with a fixed sequence that
/// writes past EOF, across folios, up to and past the capacity.
#[test]
fn fixed_sequence_every_setup() {
    let capacity = 4 * MIB;
    let ops = edge_sequence(capacity);
    for (bs, order) in every_block_size_and_policy() {
        for size in [0, 5000] {
            let s = Setup {
                bs,
                order,
                capacity,
                base: 0,
                size,
            };
            if let Err(e) = run_on_every_path(&s, &ops) {
                panic!("{s:?}: {e}");
            }
        }
    }
}
