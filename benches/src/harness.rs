//! The measurement harness every timed command shares: what the files sit
//! on ([`Target`]) and one path's file with its timed calls ([`Runner`]).
//!
//! A [`Runner`] holds the file of one write path, built as timed runs build
//! it (`paths::make_path`: no walk counters compiled in), the buffers its
//! calls write, the calls per sample (given, or calibrated to about
//! [`timing::SAMPLE_TARGET`]), the samples, and the device requests its
//! timed calls made. The heads a call walks come from the untimed counting
//! pass ([`paths::count_walks`]) on a second file prepared the same way, so
//! the timed loop does nothing but the calls.

use crate::image::Ext4Image;
use crate::paths;
use crate::setup::{self, CommonArgs};
use crate::timing;
use anyhow::Context;
use bufwrite_engine::device::Backend;
use bufwrite_engine::{BlockDevice, File, IoStats, WritePath};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run's files sit on.
pub enum Target {
    /// A Flat file per path, side by side on a RAM device or an image file
    /// or block device, `region` bytes each.
    Flat {
        /// The device (and the temporary image behind it, if any).
        opened: setup::Opened,
        /// Bytes per path.
        region: u64,
    },
    /// One file in an ext4 image, opened by every path.
    ///
    /// The paths share the device and the opened filesystem (one fd and
    /// one ring, and one superblock read), but each path's `File` gets its
    /// own mapper and page cache, so no state is shared between them. Each
    /// path's prefill writes the same pattern bytes to the same blocks, so
    /// the order of their writebacks does not matter.
    Ext4 {
        // Boxed: the image (filesystem state, temp files) dwarfs the Flat variant.
        /// The image.
        image: Box<Ext4Image>,
        /// The file's path in the image.
        file: String,
        /// Bytes of the file a run uses (it has at least that many).
        region: u64,
    },
}

impl Target {
    /// Flat files of `region` bytes for `paths` paths on the device of
    /// `target`, opened with `backend`.
    pub fn flat(
        target: &setup::Target,
        region: u64,
        paths: usize,
        backend: Backend,
    ) -> anyhow::Result<Target> {
        let opened = setup::open_target(target, region * paths as u64, backend)?;
        Ok(Target::Flat { opened, region })
    }

    /// The device the files are on.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        match self {
            Target::Flat { opened, .. } => &opened.device,
            Target::Ext4 { image, .. } => &image.device,
        }
    }

    /// The block size the files use: the image's on ext4.
    pub fn block_size(&self, common: &CommonArgs) -> u32 {
        match self {
            Target::Flat { .. } => common.block_size,
            Target::Ext4 { image, .. } => image.fs.block_size(),
        }
    }

    /// The ext4 file's path in its image.
    pub fn file(&self) -> Option<&str> {
        match self {
            Target::Flat { .. } => None,
            Target::Ext4 { file, .. } => Some(file),
        }
    }

    /// A fresh file for the `index`th path, written through `path` (a
    /// timed path, or a counting one for the counting pass).
    pub fn open_file(
        &self,
        index: usize,
        path: Box<dyn WritePath>,
        common: &CommonArgs,
    ) -> anyhow::Result<File> {
        match self {
            Target::Flat { opened, region } => setup::flat_file(
                &opened.device,
                index as u64 * region,
                *region,
                0,
                common,
                path,
            ),
            Target::Ext4 {
                image,
                file,
                region,
            } => {
                let mapper = image.open_file(file, *region)?;
                File::open(
                    Arc::clone(&image.device),
                    mapper,
                    path,
                    common.file_options(),
                )
                .with_context(|| format!("cannot open {file} in {}", image.path.display()))
            }
        }
    }
}

/// The device requests of timed calls, and the buffer heads walked per
/// call (from the untimed counting pass, never the timed calls).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Device read requests.
    pub reads: u64,
    /// Device write requests.
    pub writes: u64,
    /// Bytes the device read.
    pub read_bytes: u64,
    /// Heads walked per call (write_begin plus commit).
    pub heads_per_call: u64,
}

impl Counts {
    /// Adds what the device did between `before` and `after`.
    pub fn add(&mut self, before: IoStats, after: IoStats) {
        self.reads += after.reads - before.reads;
        self.writes += after.writes - before.writes;
        self.read_bytes += after.bytes_read - before.bytes_read;
    }
}

/// One timed call of a case on a file: `buf` is the first of the runner's
/// buffers, `iov` all of them (built once, outside the timed loop).
pub trait Call {
    /// Makes the call; a short write is an error.
    fn call(&self, file: &File, buf: &[u8], iov: &[IoSlice<'_>]) -> anyhow::Result<()>;
}

/// One path's file for a case, and what its timed calls did.
pub struct Runner<C: Call> {
    /// The write path's name.
    pub path: String,
    /// The timed file.
    pub file: File,
    bufs: Vec<Vec<u8>>,
    call: C,
    /// Calls per sample.
    pub batch: u64,
    /// usecs per call, one per sample.
    pub samples: Vec<f64>,
    /// What the timed calls made the device do, and the heads per call.
    pub counts: Counts,
}

impl<C: Call> Runner<C> {
    /// The runner of `path`: `prepared` opens a file through the path it is
    /// given and prepares it (called twice: once for the counting pass on a
    /// counting path, once for the timed file on a timed one); `batch`
    /// calls per sample, or calibrated when `None`.
    pub fn new(
        path: &str,
        bufs: Vec<Vec<u8>>,
        call: C,
        prepared: impl Fn(Box<dyn WritePath>) -> anyhow::Result<File>,
        batch: Option<u64>,
    ) -> anyhow::Result<Self> {
        // Untimed, on its own file prepared the same way: the timed file's
        // path has no counters.
        let iov: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let first: &[u8] = bufs.first().map_or(&[], |b| b);
        let heads_per_call = paths::count_walks(path, &prepared, |f| call.call(f, first, &iov))?;
        drop(iov);
        let mut r = Runner {
            path: path.to_string(),
            file: prepared(paths::make_path(path)?)?,
            bufs,
            call,
            batch: 1,
            samples: Vec::new(),
            counts: Counts {
                heads_per_call,
                ..Counts::default()
            },
        };
        r.batch = match batch {
            Some(b) => b,
            None => timing::calibrate(|n| r.time_calls(n), timing::SAMPLE_TARGET)?,
        };
        Ok(r)
    }

    /// Times `n` calls.
    fn time_calls(&self, n: u64) -> anyhow::Result<Duration> {
        let iov: Vec<IoSlice<'_>> = self.bufs.iter().map(|b| IoSlice::new(b)).collect();
        let buf: &[u8] = self.bufs.first().map_or(&[], |b| b);
        let start = Instant::now();
        for _ in 0..n {
            self.call.call(&self.file, buf, &iov)?;
        }
        Ok(start.elapsed())
    }

    /// One timed sample of [`Runner::batch`] calls, with the device
    /// requests they made.
    pub fn sample(&mut self) -> anyhow::Result<()> {
        let before = self.file.device_stats();
        let t = self.time_calls(self.batch)?;
        self.counts.add(before, self.file.device_stats());
        self.samples.push(timing::usecs_per_call(t, self.batch));
        Ok(())
    }
}
