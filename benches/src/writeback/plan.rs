//! What `bufwrite writeback` will do, decided from the flags before
//! anything is created or written: the totals and I/O sizes, the write
//! paths, the backend set-ups in the groups measured alternately, where the
//! dirty runs lie (the layouts) and, for `--device-only`, how they are cut
//! into writeback's request windows.

use super::Args;
use crate::units::{human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::device::uring::MAX_QUEUE_DEPTH;
use bufwrite_engine::device::Backend;
use std::path::PathBuf;

/// Requests per submitted batch: writeback's window of 64 folios.
pub const WINDOW: usize = 64;

/// Default size of the temporary image.
const DEFAULT_IMAGE_SIZE: u64 = 512 << 20;
/// Default directory of the temporary image.
const DEFAULT_DIR: &str = "/var/tmp";
/// Largest I/O size: a window of 64 of them is allocated up front.
const MAX_IO_SIZE: u64 = 64 << 20;

/// The flags, parsed and checked before anything is written.
pub struct Plan {
    /// `--total`: bytes written back per run.
    pub total: u64,
    /// `--io-size`: the request sizes, in the order given.
    pub sizes: Vec<u64>,
    /// The set-ups to measure, in groups measured alternately.
    pub groups: Vec<Vec<Config>>,
    /// `--image-size` and `--dir` of a temporary image; `None` with `--device`.
    pub temp: Option<(u64, PathBuf)>,
    /// The write paths (`--paths`, checked); empty with `--device-only`.
    pub paths: Vec<String>,
    /// The file's block size (`--block-size`); `None` with `--device-only`.
    pub block_size: Option<u32>,
}

/// A backend set-up to measure.
pub struct Config {
    /// The I/O backend.
    pub backend: Backend,
    /// The io_uring queue depth (1 for sync, which has none).
    pub qd: u32,
    /// The file is registered with the ring.
    pub registered_file: bool,
    /// The window memory is registered with the ring (WriteFixed).
    pub registered_buffers: bool,
}

/// Parses and checks every flag, and the free space a temporary image
/// needs, before anything is created or written.
pub fn check_args(args: &Args) -> Result<Plan> {
    let total = parse_size(&args.total, "--total")?;
    if total == 0 {
        bail!("--total 0: the total must be positive");
    }
    let sizes = args
        .io_size
        .iter()
        .map(|s| {
            let n = parse_size(s, "--io-size")?;
            if n == 0 || !n.is_multiple_of(512) || n > MAX_IO_SIZE {
                bail!(
                    "--io-size {s}: an I/O size must be a multiple of 512 from 512 to {}",
                    human(MAX_IO_SIZE, Units::Flag)
                );
            }
            if n > total {
                bail!("--io-size {s} is larger than --total {}", args.total);
            }
            Ok(n)
        })
        .collect::<Result<Vec<_>>>()?;
    for l in &args.layout {
        if l != "seq" && l != "random" {
            bail!("--layout {l:?}: expected seq or random");
        }
    }
    for &qd in &args.qd {
        if qd == 0 || qd > MAX_QUEUE_DEPTH {
            bail!("--qd {qd}: a queue depth must be 1 ..= {MAX_QUEUE_DEPTH}");
        }
    }
    if args.runs == 0 {
        bail!("--runs 0: give at least one run");
    }
    let paths = if args.device_only {
        for (given, flag) in [
            (!args.paths.is_empty(), "--paths"),
            (args.block_size != 4096, "--block-size"),
            (args.order != bufwrite_engine::folio::MAX_ORDER, "--order"),
        ] {
            if given {
                bail!("{flag} is for the engine's writeback: not with --device-only");
            }
        }
        Vec::new()
    } else {
        if !matches!(args.block_size, 1024 | 2048 | 4096) {
            bail!(
                "--block-size {}: expected 1024, 2048 or 4096",
                args.block_size
            );
        }
        if args.compare_registered_buffers {
            bail!(
                "--compare-registered-buffers is only for --device-only: the engine writes \
                 from folio memory, which is not registered with the ring"
            );
        }
        crate::paths::select_paths(&args.paths).context("--paths")?
    };
    let groups = configs(args)?;
    let temp = match &args.device {
        Some(_) => {
            for (given, flag) in [
                (args.image_size.is_some(), "--image-size"),
                (args.dir.is_some(), "--dir"),
            ] {
                if given {
                    crate::setup::warn(&format!(
                        "{flag} is ignored with --device: no temporary image is made"
                    ));
                }
            }
            None
        }
        None => {
            let size = match &args.image_size {
                Some(s) => parse_size(s, "--image-size")?,
                None => DEFAULT_IMAGE_SIZE,
            };
            let largest = sizes.iter().copied().max().unwrap_or(0);
            if size < largest {
                bail!(
                    "--image-size {} is smaller than one I/O of {} (--io-size)",
                    human(size, Units::Flag),
                    human(largest, Units::Flag)
                );
            }
            let dir = args.dir.clone().unwrap_or_else(|| DEFAULT_DIR.into());
            super::target::check_free_space(&dir, size)?;
            Some((size, dir))
        }
    };
    Ok(Plan {
        total,
        sizes,
        groups,
        temp,
        block_size: (!args.device_only).then_some(args.block_size),
        paths,
    })
}

/// The set-ups to measure, in groups measured alternately (the variants
/// of one io_uring queue depth).
fn configs(args: &Args) -> Result<Vec<Vec<Config>>> {
    let mut out = Vec::new();
    for b in &args.backend {
        // Not `setup::parse_backend`: this command's message names the flag
        // and has always read this way.
        let backend: Backend = b
            .parse()
            .map_err(|_| anyhow::anyhow!("--backend {b:?}: expected uring or sync"))?;
        let plain = |qd| Config {
            backend,
            qd,
            registered_file: false,
            registered_buffers: false,
        };
        match backend {
            Backend::Sync => out.push(vec![plain(1)]),
            Backend::Uring => {
                for &qd in &args.qd {
                    let mut group = vec![plain(qd)];
                    if args.compare_registered_file {
                        group.push(Config {
                            registered_file: true,
                            ..plain(qd)
                        });
                    }
                    if args.compare_registered_buffers {
                        group.push(Config {
                            registered_buffers: true,
                            ..plain(qd)
                        });
                    }
                    out.push(group);
                }
            }
        }
    }
    Ok(out)
}

/// Device offsets of the dirty runs, in writeback order per window (what
/// `--device-only` hands the device).
pub fn layout_offsets(layout: &str, count: u64, slots: u64, io_size: u64, seed: u64) -> Vec<u64> {
    let mut picked = pick_slots(layout, count, slots, seed);
    for w in picked.chunks_mut(WINDOW) {
        w.sort_unstable();
    }
    picked.into_iter().map(|s| s * io_size).collect()
}

/// File offsets of the writes, in the order they are made: `seq` in
/// ascending order, `random` in random order (the engine's writeback sorts
/// them by folio index itself).
pub fn write_offsets(layout: &str, count: u64, slots: u64, io_size: u64, seed: u64) -> Vec<u64> {
    pick_slots(layout, count, slots, seed)
        .into_iter()
        .map(|s| s * io_size)
        .collect()
}

/// `count` distinct slots of `slots`: the first ones for `seq`, random ones
/// in random order for `random`.
fn pick_slots(layout: &str, count: u64, slots: u64, seed: u64) -> Vec<u64> {
    if layout == "seq" {
        (0..count).collect()
    } else {
        // Partial Fisher-Yates: `count` distinct slots of the region.
        let mut all: Vec<u64> = (0..slots).collect();
        let mut rng = seed | 1;
        for i in 0..count as usize {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let j = i + (rng % (slots - i as u64)) as usize;
            all.swap(i, j);
        }
        all.truncate(count as usize);
        all
    }
}

/// The size `s` of flag `flag`, or an error naming both.
fn parse_size(s: &str, flag: &str) -> Result<u64> {
    crate::units::parse_size(s)
        .map_err(anyhow::Error::msg)
        .context(flag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096", "--total").unwrap(), 4096);
        assert_eq!(parse_size("4K", "--total").unwrap(), 4096);
        assert_eq!(parse_size("1m", "--total").unwrap(), 1 << 20);
        let e = parse_size("x", "--io-size").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("--io-size: \"x\" is not a size"),
            "{e:#}"
        );
        assert_eq!(human(65536, Units::Flag), "64K");
    }

    #[test]
    fn layouts_are_distinct_aligned_and_sorted_per_window() {
        for layout in ["seq", "random"] {
            let offs = layout_offsets(layout, 200, 1000, 4096, 7);
            assert_eq!(offs.len(), 200);
            let mut u = offs.clone();
            u.sort_unstable();
            u.dedup();
            assert_eq!(u.len(), 200);
            assert!(offs.iter().all(|o| o % 4096 == 0 && *o < 1000 * 4096));
            for w in offs.chunks(WINDOW) {
                assert!(w.windows(2).all(|p| p[0] < p[1]));
            }
        }
    }

    #[test]
    fn write_offsets_are_the_same_places_in_the_order_written() {
        let seq = write_offsets("seq", 100, 1000, 512, 3);
        assert_eq!(seq, (0..100).map(|i| i * 512).collect::<Vec<_>>());
        let random = write_offsets("random", 200, 1000, 4096, 7);
        let mut sorted = random.clone();
        sorted.sort_unstable();
        let mut windows = layout_offsets("random", 200, 1000, 4096, 7);
        windows.sort_unstable();
        // The same slots as the device-only layout, not sorted per window.
        assert_eq!(sorted, windows);
        assert_ne!(random, sorted);
    }
}
