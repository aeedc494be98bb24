//! The engine's word bitmap against bitvec on the operation mixes of
//! ECOSYSTEM.md §3: a 512-bit map (a 2 MiB folio of 4 KiB blocks) as
//! `[u64; 8]`, 1024 random ranges of 1..=64 bits per iteration.
//!
//! Output: `bitmap/<mix>/word` and `bitmap/<mix>/bitvec`, per 1024 ops.

use bitvec::prelude::*;
use bufwrite_engine::bitmap::{all_set, clear_range, next_clear, set_range};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const BITS: usize = 512;
const OPS: usize = 1024;

type Bv = BitArr!(for 512, in u64, Lsb0);

/// The same fixed ranges every run (a splitmix64 stream), so both
/// implementations see identical work.
fn ranges() -> Vec<(usize, usize)> {
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..OPS)
        .map(|_| {
            let len = 1 + (next() % 64) as usize;
            let start = (next() % (BITS - len + 1) as u64) as usize;
            (start, start + len)
        })
        .collect()
}

/// The three mixes; each returns a value so the work cannot be dropped.
#[derive(Clone, Copy)]
enum Mix {
    /// Set a range, clear its first half.
    SetClearHalf,
    /// "All set in [s, e)?", then set it (or clear it when it was, so the
    /// map does not fill up and make the check trivial).
    CheckThenSet,
    /// Set a range, find the first zero of the map, clear the range's first bit.
    SetFindClear1,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::SetClearHalf => "set_range+clear_half",
            Mix::CheckThenSet => "all_set_check+set",
            Mix::SetFindClear1 => "set+first_zero+clear_1",
        }
    }
}

fn word(mix: Mix, rs: &[(usize, usize)]) -> ([u64; 8], usize) {
    let mut w = [0u64; 8];
    let mut acc = 0;
    for &(s, e) in rs {
        match mix {
            Mix::SetClearHalf => {
                set_range(&mut w, s, e);
                clear_range(&mut w, s, s + (e - s) / 2);
            }
            Mix::CheckThenSet => {
                if all_set(&w, s, e) {
                    clear_range(&mut w, s, e);
                    acc += 1;
                } else {
                    set_range(&mut w, s, e);
                }
            }
            Mix::SetFindClear1 => {
                set_range(&mut w, s, e);
                acc += next_clear(&w, 0, BITS).unwrap_or(BITS);
                clear_range(&mut w, s, s + 1);
            }
        }
    }
    (w, acc)
}

fn bitvec(mix: Mix, rs: &[(usize, usize)]) -> ([u64; 8], usize) {
    let mut b: Bv = BitArray::ZERO;
    let mut acc = 0;
    for &(s, e) in rs {
        match mix {
            Mix::SetClearHalf => {
                b[s..e].fill(true);
                b[s..s + (e - s) / 2].fill(false);
            }
            Mix::CheckThenSet => {
                if b[s..e].all() {
                    b[s..e].fill(false);
                    acc += 1;
                } else {
                    b[s..e].fill(true);
                }
            }
            Mix::SetFindClear1 => {
                b[s..e].fill(true);
                acc += b.first_zero().unwrap_or(BITS);
                b.set(s, false);
            }
        }
    }
    (b.into_inner(), acc)
}

const MIXES: &[Mix] = &[Mix::SetClearHalf, Mix::CheckThenSet, Mix::SetFindClear1];

fn bitmaps(c: &mut Criterion) {
    let rs = ranges();
    let mut g = c.benchmark_group("bitmap");
    g.throughput(Throughput::Elements(OPS as u64));
    for &mix in MIXES {
        // Both sides must do the same work, or the comparison means nothing.
        assert_eq!(word(mix, &rs), bitvec(mix, &rs), "{} disagrees", mix.name());
        g.bench_function(BenchmarkId::new(mix.name(), "word"), |b| {
            b.iter(|| word(mix, black_box(&rs)))
        });
        g.bench_function(BenchmarkId::new(mix.name(), "bitvec"), |b| {
            b.iter(|| bitvec(mix, black_box(&rs)))
        });
    }
    g.finish();
}

criterion_group!(benches, bitmaps);
criterion_main!(benches);
