//! A fixed number of 1 KiB cached overwrites at offset 0 of a folio of
//! the given order (default 9; 4K blocks, Mem device): a steady workload for instruction counts
//! under `valgrind --tool=callgrind`, which stay repeatable on a noisy
//! machine where wall-clock timings do not.
//!
//! `cargo build --release --example overwrite_loop -p bufwrite-engine &&
//!  valgrind --tool=callgrind target/release/examples/overwrite_loop 100000 9`

use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, IomapPath, OrderPolicy};
use std::sync::Arc;

fn main() -> Result<(), bufwrite_engine::Error> {
    let calls: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let order: u8 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let size = 4096u64 << order.min(9);
    let dev = Arc::new(Mem::new(size));
    let flat = Arc::new(Flat::new(0, size, 4096, 0)?);
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    let file = File::open(dev, flat, Box::new(IomapPath::new()), opts)?;
    file.pwrite(0, &vec![0x5a; size as usize])?;
    file.fsync()?;
    let buf = [0xa5u8; 1024];
    for _ in 0..calls {
        file.pwrite(0, std::hint::black_box(&buf))?;
    }
    Ok(())
}
