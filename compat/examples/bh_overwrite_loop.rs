//! A fixed number of 1 KiB cached overwrites at offset 0 of a folio of the
//! given order through a buffer-head mode (4K blocks, Mem device): a steady
//! workload for instruction counts under `valgrind --tool=callgrind`, the
//! buffer-head twin of the engine's `overwrite_loop`.
//!
//! `cargo build --release --example bh_overwrite_loop -p bufwrite-compat &&
//!  valgrind --tool=callgrind target/release/examples/bh_overwrite_loop 10000 9 bh-legacy`
//!
//! An optional fourth argument moves the write: `tail` writes the last KiB
//! of the folio instead (both walks then visit every head in every mode).

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, OrderPolicy};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let order: u8 = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let mode = args.next().unwrap_or_else(|| "bh-legacy".into());
    let mode = Mode::from_name(&mode).ok_or_else(|| format!("unknown mode {mode:?}"))?;
    let size = 4096u64 << order.min(9);
    let off = match args.next().as_deref() {
        None | Some("head") => 0,
        Some("tail") => size - 1024,
        Some(other) => return Err(format!("unknown offset {other:?} (head or tail)").into()),
    };
    let dev = Arc::new(Mem::new(size));
    let flat = Arc::new(Flat::new(0, size, 4096, 0)?);
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    let file = File::open(dev, flat, Box::new(BufferHeadPath::new(mode)), opts)?;
    file.pwrite(0, &vec![0x5a; size as usize])?;
    file.fsync()?;
    let buf = [0xa5u8; 1024];
    for _ in 0..calls {
        file.pwrite(off, std::hint::black_box(&buf))?;
    }
    Ok(())
}
