//! Per-head cost of the buffer-head walk, the kernel's beside bufwrite's,
//! on this machine in one run (opt-in: needs root; timing only here, never
//! in a test).
//!
//! `cargo run --release --example kernel_bh_cost -p bufwrite-compat [CALLS] [BATCHES]`
//!
//! Kernel side: a loop-mounted ext4 (4 KiB blocks, image under /var/tmp),
//! one 2 MiB file cached as one 2 MiB folio (written in one write, checked
//! through FileHugePages) and one cached as 512 4 KiB folios (written in
//! 4 KiB writes). For each, `CALLS` 1 KiB `pwrite`s at offset 0 and at the
//! last KiB of the file, timed per batch; the median of `BATCHES` batches.
//! bufwrite side: `bh-legacy` and `bh-tailskip` on a Mem device, order 9
//! and order 0, the same writes. All cases are interleaved batch by batch.
//!
//! Heads walked per 1 KiB write with 4 KiB blocks: a 4 KiB folio has one
//! head, so write_begin and commit walk 1 + 1 = 2. A 2 MiB folio has 512:
//! a write at the last KiB walks 512 + 512 = 1024 with or without the
//! upstream tail-walk fix (both walks start at the head of the ring); a
//! write at offset 0 walks 1024 without the fix and 1 + 1 with it. So the
//! tail write gives the per-head cost either way:
//! (t(2 MiB) - t(4 KiB)) / (1024 - 2), and the offset-0 write tells whether
//! the kernel has the fix.

#[path = "setup.rs"]
mod setup;

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, OrderPolicy};
use setup::{Fill, KernelExt4, FILE_SIZE};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

/// Heads walked per write in a 2 MiB folio minus in a 4 KiB folio.
const HEAD_DIFF: f64 = 1022.0;
const TAIL: u64 = FILE_SIZE as u64 - 1024;

type Case<'a> = (String, Box<dyn FnMut(u64) -> std::io::Result<()> + 'a>);

fn bufwrite_file(mode: Mode, order: u8) -> Result<File, bufwrite_engine::Error> {
    let size = FILE_SIZE as u64;
    let dev = Arc::new(Mem::new(size));
    let flat = Arc::new(Flat::new(0, size, 4096, 0)?);
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    let file = File::open(dev, flat, Box::new(BufferHeadPath::new(mode)), opts)?;
    file.pwrite(0, &vec![0x5a; FILE_SIZE])?;
    file.fsync()?;
    Ok(file)
}

/// The timed call on the kernel's file: one 1 KiB `pwrite`.
fn kernel(f: &std::fs::File) -> impl FnMut(u64) -> std::io::Result<()> + '_ {
    let buf = [0xa5u8; 1024];
    move |off| {
        let n = f.write_at(std::hint::black_box(&buf), off)?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("short pwrite: {n} bytes")))
        }
    }
}

/// The timed call on a bufwrite file: one 1 KiB `File::pwrite`.
fn ours(f: &File) -> impl FnMut(u64) -> std::io::Result<()> + '_ {
    let buf = [0xa5u8; 1024];
    move |off| {
        f.pwrite(off, std::hint::black_box(&buf))
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: u32 = match args.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("CALLS must be a count, got {a:?}"))?,
        None => 20_000,
    };
    let batches: usize = match args.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("BATCHES must be a count, got {a:?}"))?,
        None => 7,
    };
    if calls == 0 || batches == 0 {
        return Err("CALLS and BATCHES must be at least 1".into());
    }
    if !setup::is_root() {
        return Err(
            "kernel_bh_cost needs root (it makes a loop-mounted ext4); run it as root".into(),
        );
    }
    println!(
        "kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let fs = KernelExt4::create(std::path::Path::new("/var/tmp"))?;
    let (big, big_huge) = fs.make_file("folio2m", Fill::OneWrite)?;
    let (small, small_huge) = fs.make_file("folio4k", Fill::PageWrites)?;
    println!(
        "FileHugePages rose {big_huge} kB writing the 2 MiB file in one write, \
         {small_huge} kB writing the other in 4 KiB writes"
    );
    if big_huge < 2048 || small_huge >= 2048 {
        return Err("the page cache does not hold the folio sizes this needs".into());
    }
    let b_legacy9 = bufwrite_file(Mode::Legacy, 9)?;
    let b_legacy0 = bufwrite_file(Mode::Legacy, 0)?;
    let b_tail9 = bufwrite_file(Mode::TailSkip, 9)?;
    let b_tail0 = bufwrite_file(Mode::TailSkip, 0)?;
    let mut cases: Vec<Case> = vec![
        ("kernel ext4, 2 MiB folio".into(), Box::new(kernel(&big))),
        ("kernel ext4, 4 KiB folios".into(), Box::new(kernel(&small))),
        ("bh-legacy, order 9".into(), Box::new(ours(&b_legacy9))),
        ("bh-legacy, order 0".into(), Box::new(ours(&b_legacy0))),
        ("bh-tailskip, order 9".into(), Box::new(ours(&b_tail9))),
        ("bh-tailskip, order 0".into(), Box::new(ours(&b_tail0))),
    ];
    let offsets = [0, TAIL];
    // times[case][offset] = usecs per call, one per batch.
    let mut times = vec![[Vec::new(), Vec::new()]; cases.len()];
    for case in cases.iter_mut() {
        for &off in &offsets {
            // Warm-up: the first writes dirty the folio; steady state
            // rewrites a dirty cached folio.
            for _ in 0..calls.min(1000) {
                (case.1)(off)?;
            }
        }
    }
    for _ in 0..batches {
        for (case, t) in cases.iter_mut().zip(&mut times) {
            for (o, &off) in offsets.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..calls {
                    (case.1)(off)?;
                }
                t[o].push(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
            }
        }
    }
    let med: Vec<[f64; 2]> = times
        .iter_mut()
        .map(|[a, b]| [median(a), median(b)])
        .collect();
    println!("\nusecs per 1 KiB pwrite, median of {batches} batches of {calls}:");
    println!("{:<28} {:>12} {:>12}", "", "offset 0", "last KiB");
    for ((name, _), m) in cases.iter().zip(&med) {
        println!("{name:<28} {:>12.3} {:>12.3}", m[0], m[1]);
    }
    let per_head =
        |big: usize, small: usize, o: usize| (med[big][o] - med[small][o]) * 1000.0 / HEAD_DIFF;
    let k_tail = per_head(0, 1, 1);
    let k_head = per_head(0, 1, 0);
    let fixed = k_head < 0.25 * k_tail;
    println!(
        "\nkernel: offset-0 write costs {:.3} usecs more in the 2 MiB folio, the last-KiB write {:.3}: \
         the tail-walk fix is {}",
        med[0][0] - med[1][0],
        med[0][1] - med[1][1],
        if fixed { "present (offset 0 walks 1 + 1 heads)" } else { "absent (offset 0 walks 512 + 512 heads)" }
    );
    let b_tail = per_head(2, 3, 1);
    let b_head = per_head(2, 3, 0);
    println!("\nns per head walked, (t(2 MiB) - t(4 KiB)) / 1022 heads:");
    println!("  kernel ext4, last-KiB write:   {k_tail:.2}");
    if !fixed {
        println!("  kernel ext4, offset-0 write:   {k_head:.2}");
    }
    println!("  bh-legacy, last-KiB write:     {b_tail:.2}");
    println!("  bh-legacy, offset-0 write:     {b_head:.2}");
    println!("  bh-tailskip, last-KiB write:   {:.2}", per_head(4, 5, 1));
    println!(
        "  bh-tailskip, offset-0 write:   {:.2} (walks 2 heads in both: expect about 0)",
        per_head(4, 5, 0)
    );
    println!(
        "\nratio bufwrite / kernel per head (last-KiB writes, bh-legacy): {:.2}",
        b_tail / k_tail
    );
    drop(cases);
    drop(big);
    drop(small);
    let gone = fs.remove_file("folio2m")?;
    println!("FileHugePages fell {gone} kB removing the 2 MiB-folio file");
    Ok(())
}
