//! A 1 KiB cached overwrite at offset 0 per write path and folio order,
//! next to a bare 1 KiB memcpy into a cached 2 MiB buffer (the floor any
//! path's copy sits on).
//!
//! Output: `overwrite_1k/<path>/order<N>` and `overwrite_1k/memcpy/2MiB`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;

// The binary's path list, so paths added there join this bench too. Its
// helpers for the CLI and its unit tests (dropped without the test
// harness) are unused here.
#[allow(dead_code, unused_imports)]
#[path = "../src/paths.rs"]
mod paths;

use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, OrderPolicy};

const ORDERS: &[u8] = &[0, 2, 4, 6, 9];
const WRITE: usize = 1024;
const BLOCK: u32 = 4096;

/// A file of `path` whose folios have `order`, written in full and
/// fsynced: every folio uptodate and clean before the first timed call.
fn cached_file(path: &str, order: u8) -> File {
    let folio = 4096u64 << order;
    let size = (WRITE as u64 * 10).max(folio).div_ceil(folio) * folio;
    let dev = Arc::new(Mem::new(size));
    let flat = Arc::new(Flat::new(0, size, BLOCK, 0).expect("flat layout"));
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    let file = File::open(dev, flat, paths::make_path(path).expect("path"), opts).expect("open");
    file.pwrite(0, &vec![0x5a; size as usize]).expect("prefill");
    file.fsync().expect("fsync");
    file
}

fn overwrite_1k(c: &mut Criterion) {
    let mut g = c.benchmark_group("overwrite_1k");
    g.throughput(Throughput::Bytes(WRITE as u64));
    let buf = vec![0xa5u8; WRITE];
    for path in paths::names() {
        for &order in ORDERS {
            let file = cached_file(path, order);
            g.bench_with_input(
                BenchmarkId::new(path, format!("order{order}")),
                &file,
                |b, f| b.iter(|| f.pwrite(0, black_box(&buf)).expect("overwrite")),
            );
        }
    }
    let mut cached = vec![0u8; 2 << 20];
    g.bench_function(BenchmarkId::new("memcpy", "2MiB"), |b| {
        b.iter(|| {
            cached[..WRITE].copy_from_slice(black_box(&buf));
            black_box(&mut cached);
        })
    });
    g.finish();
}

criterion_group!(benches, overwrite_1k);
criterion_main!(benches);
