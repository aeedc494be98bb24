//! bufwrite-testkit: the test tooling the crates' tests share (not
//! published): a model harness for testing a [`File`] (any write path, any
//! device) against a plain in-memory file, and [`loopdev`], a loop-device
//! guard for the opt-in root tests.
//!
//! The pieces:
//!
//! - [`Op`]: one file operation: a [`TraceOp`] of the trace grammar
//!   ([`bufwrite_engine::trace`]: write, pwrite, writev, seek, read, fsync,
//!   fdatasync, truncate, fallocate, punch), or a drop-caches or a reopen,
//!   which no trace holds. Test crates
//!   generate sequences of these with [`op_strategy`] / [`ops_strategy`] (weights in [`OpWeights`]), over a
//!   file set up as [`setup_strategy`] draws it ([`Setup`]).
//! - [`byte_at`] / [`fill`] / [`fnv1a64`]: re-exported from
//!   [`bufwrite_engine::pattern`], the fixed byte function of the `replay` contract
//!   (docs/DESIGN.md §7), so any tool can reproduce the bytes a
//!   sequence wrote.
//! - [`Model`]: a `Vec<u8>` file with a position, a size and a capacity,
//!   applying each op the way [`File`] must.
//! - [`apply`]: runs an op on both and describes the first difference
//!   (bytes read, returned counts, error kind, size, position).
//! - [`check_device`]: after an fsync, compares the device bytes of the
//!   file's region with the model ([`flat_bytes`]: a Flat file's bytes as
//!   the device and the mapper hold them, unwritten ranges as zeroes).
//! - [`Subject`] and [`apply_to`]: a file with what it is opened over, so
//!   that [`Op::Reopen`] can open a fresh one and every fsync checks the
//!   device (Flat, or the delalloc test mapper [`Reserving`]).
//!
//! ```
//! use bufwrite_testkit::{apply, check_device, Model, Op, TraceOp};
//! use bufwrite_engine::{device::mem::Mem, File, FileOptions, Flat, IomapPath};
//! use std::sync::Arc;
//!
//! let dev = Arc::new(Mem::new(1 << 20));
//! let flat = Arc::new(Flat::new(0, 1 << 20, 4096, 0)?);
//! let file = File::open(dev.clone(), flat, Box::new(IomapPath::new()), FileOptions::default())?;
//! let mut model = Model::new(1 << 20);
//! for op in [
//!     TraceOp::Pwrite { off: 5000, len: 300, seed: 7 },
//!     TraceOp::Read { off: 0, len: 6000 },
//!     TraceOp::Fsync,
//! ] {
//!     let op = Op::from(op);
//!     apply(&file, &mut model, &op).unwrap();
//! }
//! check_device(&dev.snapshot(0, model.size()), &model).unwrap();
//! # Ok::<(), bufwrite_engine::Error>(())
//! ```

pub mod budget;
pub mod e2fs;
pub mod loopdev;

use bufwrite_engine::align::AlignedBuf;
use bufwrite_engine::device::BlockDevice;
use bufwrite_engine::mapping::{FallocMode, Flat, Mapper};
use bufwrite_engine::page_cache::OrderPolicy;
use bufwrite_engine::write_path::WritePath;
use bufwrite_engine::Error;
use bufwrite_engine::{CacheMemory, File, FileOptions};
use proptest::prelude::*;
use proptest::strategy::Union;
use std::fmt;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::Arc;

pub use bufwrite_engine::pattern::{byte_at, fill, fnv1a64, splitmix64};
pub use bufwrite_engine::trace::Op as TraceOp;

/// Largest buffer [`apply`] allocates for one op; larger ops are refused
/// with an error rather than exhausting memory.
pub const MAX_OP_BYTES: u64 = 1 << 30;

/// One step of a model test: an operation of the trace grammar, or one
/// the model tests need that no trace holds.
///
/// The grammar's operations (and how they print) are [`TraceOp`]'s, so a
/// failing sequence prints as a trace `bufwrite replay` runs as it is; a
/// [`Op::DropCaches`] prints as a `#` comment, which replay skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A trace operation. `write` and `pwrite` carry `fill(seed, offset,
    /// ..)`; a `writev`'s buffers together carry it from the position.
    /// `fdatasync` does what `fsync` does.
    Trace(TraceOp),
    /// Drop the file's clean folios, so later accesses read the device.
    DropCaches,
    /// fsync, drop the [`File`], open a new one over the same device and
    /// mapper: only what reached the device and the mapper survives (the
    /// position starts at 0 again). Needs a [`Subject`] ([`apply_to`]).
    Reopen,
}

impl From<TraceOp> for Op {
    fn from(op: TraceOp) -> Self {
        Op::Trace(op)
    }
}

impl fmt::Display for Op {
    /// The trace line (docs/DESIGN.md §7); `drop_caches` is not part of
    /// that contract and prints as a `# drop_caches` comment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Trace(op) => op.fmt(f),
            Op::DropCaches => f.write_str("# drop_caches"),
            Op::Reopen => f.write_str("# reopen"),
        }
    }
}

const MIB: u64 = 1 << 20;

/// One file setup for a random-sequence test: block size, folio order
/// policy, and a `Flat` file of `capacity` bytes at device offset `base`
/// whose first `size` bytes the device already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Block size (1024, 2048 or 4096).
    pub bs: u32,
    /// Folio order policy of the page cache.
    pub order: OrderPolicy,
    /// The largest size the file may reach.
    pub capacity: u64,
    /// Device offset of the file's first byte.
    pub base: u64,
    /// Initial file size: bytes the device already holds for the file.
    pub size: u64,
}

/// Every block size (1, 2, 4 KiB) with every order policy the tests cover
/// (fixed 0, 2, 9; from the write up to 9), for fixed-sequence tests.
pub fn every_block_size_and_policy() -> impl Iterator<Item = (u32, OrderPolicy)> {
    [1024u32, 2048, 4096].into_iter().flat_map(|bs| {
        [
            OrderPolicy::Fixed(0),
            OrderPolicy::Fixed(2),
            OrderPolicy::Fixed(9),
            OrderPolicy::FromWrite { max_order: 9 },
        ]
        .into_iter()
        .map(move |order| (bs, order))
    })
}

/// A fixed sequence for a file of `capacity` bytes (at least 3 MiB) that
/// writes past EOF, across 2 MiB folios, up to the capacity and past it
/// (refused), with fsyncs and drop_caches between, then reads back.
pub fn edge_sequence(capacity: u64) -> Vec<Op> {
    vec![
        Op::Trace(TraceOp::Pwrite {
            off: 100,
            len: 10,
            seed: 1,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: 2 * MIB - 1000,
            len: 3000,
            seed: 2,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::DropCaches,
        Op::Trace(TraceOp::Pwrite {
            off: 2 * MIB - 10,
            len: 20,
            seed: 3,
        }),
        Op::Trace(TraceOp::Read {
            off: 0,
            len: 3 * MIB,
        }),
        Op::Trace(TraceOp::Seek {
            off: capacity - 5000,
        }),
        Op::Trace(TraceOp::Write { len: 5000, seed: 4 }),
        Op::Trace(TraceOp::Write { len: 1, seed: 5 }),
        Op::Trace(TraceOp::Pwrite {
            off: capacity - 1,
            len: 2,
            seed: 6,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::DropCaches,
        // At the capacity: refused whole.
        Op::Trace(TraceOp::Writev {
            lens: vec![1, 0, 4095, 3000],
            seed: 7,
        }),
        Op::Trace(TraceOp::Seek { off: 7000 }),
        Op::Trace(TraceOp::Writev {
            lens: vec![1, 0, 4095, 3000],
            seed: 7,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: 0,
            len: 2 * MIB + 4096,
            seed: 8,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: 4096,
            len: 1024,
            seed: 9,
        }),
        Op::Trace(TraceOp::Read {
            off: 1000,
            len: 9000,
        }),
        Op::Trace(TraceOp::Read {
            off: 1000,
            len: 4 * MIB,
        }),
        Op::Trace(TraceOp::Fsync),
    ]
}

/// Every block size (1, 2, 4 KiB) and order policy (fixed 0, 2, 9; from
/// the write up to 9); a capacity of 4 MiB (two order-9 folios exactly) or
/// 3 MiB + 12 KiB (ends inside one, so folios reach past the capacity); a
/// base of 0 or 64 KiB; an initial size of 0 (weight `empty_weight`), 5000
/// or 1 MiB + 777 (weight 1 each).
pub fn setup_strategy(empty_weight: u32) -> impl Strategy<Value = Setup> {
    let bs = prop_oneof![Just(1024u32), Just(2048), Just(4096)];
    let order = prop_oneof![
        Just(OrderPolicy::Fixed(0)),
        Just(OrderPolicy::Fixed(2)),
        Just(OrderPolicy::Fixed(9)),
        Just(OrderPolicy::FromWrite { max_order: 9 }),
    ];
    let capacity = prop_oneof![Just(4 * MIB), Just(3 * MIB + (12 << 10))];
    let base = prop_oneof![Just(0u64), Just(64 << 10)];
    let size = prop_oneof![
        empty_weight => Just(0u64),
        1 => Just(5000),
        1 => Just(MIB + 777),
    ];
    (bs, order, capacity, base, size).prop_map(|(bs, order, capacity, base, size)| Setup {
        bs,
        order,
        capacity,
        base,
        size,
    })
}

/// Relative weights of the kinds of [`Op`] that [`op_strategy`] draws; a
/// kind of weight 0 is never drawn. The default is the engine model
/// test's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpWeights {
    /// [`TraceOp::Write`].
    pub write: u32,
    /// [`TraceOp::Pwrite`] at an [offset](op_strategy) below the capacity.
    pub pwrite: u32,
    /// [`TraceOp::Pwrite`] within 5000 bytes of `u64::MAX`, whose end overflows.
    pub pwrite_near_max: u32,
    /// [`TraceOp::Writev`] of up to five buffers.
    pub writev: u32,
    /// [`TraceOp::Seek`].
    pub seek: u32,
    /// [`TraceOp::Read`].
    pub read: u32,
    /// [`TraceOp::Fsync`].
    pub fsync: u32,
    /// [`Op::DropCaches`].
    pub drop_caches: u32,
    /// [`TraceOp::Fdatasync`].
    pub fdatasync: u32,
    /// [`TraceOp::Truncate`] (sometimes past the capacity, refused).
    pub truncate: u32,
    /// [`TraceOp::Fallocate`], with and without `keep_size`.
    pub fallocate: u32,
    /// [`TraceOp::Punch`].
    pub punch: u32,
    /// [`Op::Reopen`] (only [`apply_to`] runs it).
    pub reopen: u32,
}

impl OpWeights {
    /// The engine model test's mix (the [`Default`]).
    pub const MODEL: OpWeights = OpWeights {
        write: 4,
        pwrite: 8,
        pwrite_near_max: 1,
        writev: 3,
        seek: 3,
        read: 5,
        fsync: 2,
        drop_caches: 2,
        fdatasync: 1,
        truncate: 2,
        fallocate: 1,
        punch: 2,
        reopen: 1,
    };
}

impl Default for OpWeights {
    fn default() -> Self {
        OpWeights::MODEL
    }
}

/// A file offset: small, near the 16 KiB and 2 MiB boundaries, anywhere
/// below `capacity`, or near the capacity's end.
fn offset(capacity: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..64 << 10,
        3 => (0u64..=2, -3000i64..3000).prop_map(|(k, d)| (k * 2 * MIB).saturating_add_signed(d)),
        2 => (0u64..256, -700i64..700).prop_map(|(k, d)| (k * 16384).saturating_add_signed(d)),
        2 => 0..capacity,
        1 => (0u64..20000).prop_map(move |d| capacity.saturating_sub(d)),
    ]
}

/// A write or read length: mostly small, sometimes folio-sized, sometimes 0.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..5000,
        3 => 1u64..40000,
        1 => (2 * MIB - 8192)..(2 * MIB + 70000),
        1 => Just(0u64),
    ]
}

/// One random [`Op`] for a file of `capacity` bytes, drawn with `weights`.
/// Offsets are small, near 16 KiB / 2 MiB boundaries, anywhere below the
/// capacity or near its end; lengths mostly small, sometimes folio-sized or
/// zero; seeds any `u64`.
///
/// # Panics
///
/// When every weight is 0.
pub fn op_strategy(capacity: u64, weights: OpWeights) -> impl Strategy<Value = Op> {
    let seed = any::<u64>();
    let w = weights;
    let kinds: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            w.write,
            (length(), seed)
                .prop_map(|(len, seed)| Op::Trace(TraceOp::Write { len, seed }))
                .boxed(),
        ),
        (
            w.pwrite,
            (offset(capacity), length(), seed)
                .prop_map(|(off, len, seed)| Op::Trace(TraceOp::Pwrite { off, len, seed }))
                .boxed(),
        ),
        (
            w.pwrite_near_max,
            (u64::MAX - 5000..=u64::MAX, 1u64..10000, seed)
                .prop_map(|(off, len, seed)| Op::Trace(TraceOp::Pwrite { off, len, seed }))
                .boxed(),
        ),
        (
            w.writev,
            (
                prop::collection::vec(prop_oneof![4 => 0u64..3000, 1 => 0u64..20000], 0..6),
                seed,
            )
                .prop_map(|(lens, seed)| Op::Trace(TraceOp::Writev { lens, seed }))
                .boxed(),
        ),
        (
            w.seek,
            offset(capacity)
                .prop_map(|off| Op::Trace(TraceOp::Seek { off }))
                .boxed(),
        ),
        (
            w.read,
            (offset(capacity), length())
                .prop_map(|(off, len)| Op::Trace(TraceOp::Read { off, len }))
                .boxed(),
        ),
        (w.fsync, Just(Op::Trace(TraceOp::Fsync)).boxed()),
        (w.drop_caches, Just(Op::DropCaches).boxed()),
        (w.fdatasync, Just(Op::Trace(TraceOp::Fdatasync)).boxed()),
        (
            w.truncate,
            prop_oneof![
                8 => offset(capacity),
                1 => Just(0u64),
                1 => (1u64..5000).prop_map(move |d| capacity + d),
            ]
            .prop_map(|size| Op::Trace(TraceOp::Truncate { size }))
            .boxed(),
        ),
        (
            w.fallocate,
            (offset(capacity), length(), any::<bool>())
                .prop_map(|(off, len, keep_size)| {
                    Op::Trace(TraceOp::Fallocate {
                        off,
                        len,
                        keep_size,
                    })
                })
                .boxed(),
        ),
        (
            w.punch,
            (offset(capacity), length())
                .prop_map(|(off, len)| Op::Trace(TraceOp::Punch { off, len }))
                .boxed(),
        ),
        (w.reopen, Just(Op::Reopen).boxed()),
    ];
    Union::new_weighted(kinds.into_iter().filter(|(w, _)| *w > 0).collect())
}

/// A sequence of [`op_strategy`] ops whose length is drawn from `len`.
pub fn ops_strategy(
    capacity: u64,
    weights: OpWeights,
    len: Range<usize>,
) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(capacity, weights), len)
}

/// The error a write should fail with, as the model predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The write succeeds in full.
    Ok,
    /// `offset + len` overflows: [`Error::RangeOverflow`].
    RangeOverflow,
    /// The write ends past the capacity: [`Error::FileTooLarge`].
    FileTooLarge,
    /// A bad argument (a zero-length fallocate): [`Error::InvalidArgument`].
    InvalidArgument,
}

/// What a file should hold: its bytes (`data.len()` is the size), its
/// position and the largest size it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    data: Vec<u8>,
    pos: u64,
    capacity: u64,
}

impl Model {
    /// An empty file (size 0, position 0) that may grow to `capacity`.
    pub fn new(capacity: u64) -> Self {
        Model {
            data: Vec::new(),
            pos: 0,
            capacity,
        }
    }

    /// A file that starts with `data` (for a `Flat` opened with a size > 0
    /// over a device already holding those bytes).
    pub fn with_data(data: Vec<u8>, capacity: u64) -> Self {
        Model {
            data,
            pos: 0,
            capacity,
        }
    }

    /// The file's bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// i_size.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The file position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How a write of `len` bytes at `pos` must end. Zero-length writes
    /// always succeed and change nothing.
    pub fn expect_write(&self, pos: u64, len: u64) -> Expected {
        if len == 0 {
            return Expected::Ok;
        }
        match pos.checked_add(len) {
            None => Expected::RangeOverflow,
            Some(end) if end > self.capacity => Expected::FileTooLarge,
            Some(_) => Expected::Ok,
        }
    }

    /// Applies a successful write of `bytes` at `pos`: a gap past the old
    /// size reads as zeroes.
    pub fn write_at(&mut self, pos: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = pos as usize;
        let end = start + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
    }

    /// The bytes a `pread(off, len)` returns: up to EOF.
    pub fn read_at(&self, off: u64, len: u64) -> &[u8] {
        let size = self.size();
        if off >= size {
            return &[];
        }
        let end = off.saturating_add(len).min(size);
        &self.data[off as usize..end as usize]
    }

    /// Sets the position.
    pub fn seek(&mut self, off: u64) {
        self.pos = off;
    }

    /// How a truncate to `size` must end.
    pub fn expect_truncate(&self, size: u64) -> Expected {
        if size > self.capacity {
            Expected::FileTooLarge
        } else {
            Expected::Ok
        }
    }

    /// Sets the size: cut, or grown with zeroes.
    pub fn set_len(&mut self, size: u64) {
        self.data.resize(size as usize, 0);
    }

    /// How a fallocate (or punch, `punch` true) of `len` bytes at `off`
    /// must end: a zero length is EINVAL, an overflowing end
    /// RangeOverflow, an allocation past the capacity FileTooLarge.
    pub fn expect_fallocate(&self, off: u64, len: u64, punch: bool) -> Expected {
        if len == 0 {
            return Expected::InvalidArgument;
        }
        match off.checked_add(len) {
            None => Expected::RangeOverflow,
            Some(end) if !punch && end > self.capacity => Expected::FileTooLarge,
            Some(_) => Expected::Ok,
        }
    }

    /// fallocate: only the size can change (to `off + len`, unless
    /// `keep_size`); the bytes read as before.
    pub fn fallocate(&mut self, off: u64, len: u64, keep_size: bool) {
        let end = off + len;
        if !keep_size && end > self.size() {
            self.set_len(end);
        }
    }

    /// punch: the range (below the size) reads as zeroes; the size stays.
    pub fn punch(&mut self, off: u64, len: u64) {
        let size = self.size();
        let end = off.saturating_add(len).min(size);
        if off < end {
            self.data[off as usize..end as usize].fill(0);
        }
    }
}

/// Runs `op` on `file` and on `model`, and returns a description of the
/// first mismatch: bytes read, returned counts, the error (or its absence),
/// the size afterwards, the position afterwards.
///
/// A write the model expects to fail must fail with the same error kind and
/// leave the model unchanged; the file's size and position are then
/// compared with the unchanged model. Device contents are not checked here:
/// call [`check_device`] after an fsync.
pub fn apply(file: &File, model: &mut Model, op: &Op) -> Result<(), String> {
    match op {
        Op::Trace(TraceOp::Write { len, seed }) => {
            let pos = model.pos;
            let buf = make_buf(*seed, pos, *len)?;
            let res = file.write(&buf);
            check_write(model, op, pos, &buf, res)?;
            if model.expect_write(pos, *len) == Expected::Ok {
                model.pos = pos + len;
            }
        }
        Op::Trace(TraceOp::Pwrite { off, len, seed }) => {
            let buf = make_buf(*seed, *off, *len)?;
            let res = file.pwrite(*off, &buf);
            check_write(model, op, *off, &buf, res)?;
        }
        Op::Trace(TraceOp::Writev { lens, seed }) => {
            let pos = model.pos;
            let Some(total) = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l)) else {
                return Err(format!(
                    "{op}: iovec lengths overflow; the harness cannot build it"
                ));
            };
            let buf = make_buf(*seed, pos, total)?;
            let mut slices = Vec::with_capacity(lens.len());
            let mut at = 0usize;
            for &l in lens {
                slices.push(IoSlice::new(&buf[at..at + l as usize]));
                at += l as usize;
            }
            let res = file.writev(&slices);
            check_write(model, op, pos, &buf, res)?;
            if model.expect_write(pos, total) == Expected::Ok {
                model.pos = pos + total;
            }
        }
        Op::Trace(TraceOp::Seek { off }) => {
            file.seek(*off);
            model.seek(*off);
        }
        Op::Trace(TraceOp::Read { off, len }) => {
            if *len > MAX_OP_BYTES {
                return Err(format!(
                    "{op}: longer than the harness's {MAX_OP_BYTES} bytes"
                ));
            }
            let mut buf = vec![0u8; *len as usize];
            let n = file
                .pread(*off, &mut buf)
                .map_err(|e| format!("{op}: failed: {e}"))?;
            let want = model.read_at(*off, *len);
            if n != want.len() {
                return Err(format!(
                    "{op}: returned {n} bytes, expected {} (size {})",
                    want.len(),
                    model.size()
                ));
            }
            if let Some(i) = first_diff(&buf[..n], want) {
                return Err(format!(
                    "{op}: byte at file offset {} is {:#04x}, expected {:#04x}",
                    off + i as u64,
                    buf[i],
                    want[i]
                ));
            }
        }
        Op::Trace(TraceOp::Fsync) => file.fsync().map_err(|e| format!("{op}: failed: {e}"))?,
        Op::Trace(TraceOp::Fdatasync) => {
            file.fdatasync().map_err(|e| format!("{op}: failed: {e}"))?
        }
        Op::Trace(TraceOp::Truncate { size }) => {
            let res = file.set_len(*size);
            let want = model.expect_truncate(*size);
            check_outcome(op, want, res)?;
            if want == Expected::Ok {
                model.set_len(*size);
            }
        }
        Op::Trace(TraceOp::Fallocate {
            off,
            len,
            keep_size,
        }) => {
            let mode = if *keep_size {
                FallocMode::KeepSize
            } else {
                FallocMode::Allocate
            };
            let res = file.fallocate(*off, *len, mode);
            let want = model.expect_fallocate(*off, *len, false);
            check_outcome(op, want, res)?;
            if want == Expected::Ok {
                model.fallocate(*off, *len, *keep_size);
            }
        }
        Op::Trace(TraceOp::Punch { off, len }) => {
            let res = file.fallocate(*off, *len, FallocMode::PunchHole);
            let want = model.expect_fallocate(*off, *len, true);
            check_outcome(op, want, res)?;
            if want == Expected::Ok {
                model.punch(*off, *len);
            }
        }
        Op::DropCaches => {
            file.drop_caches();
        }
        Op::Reopen => return Err(format!("{op}: needs a Subject (testing::apply_to)")),
    }
    check_size_and_position(file, model, op)
}

/// Checks an operation's outcome (no bytes) against the model's
/// prediction.
fn check_outcome(op: &Op, want: Expected, res: bufwrite_engine::Result<()>) -> Result<(), String> {
    match (want, res) {
        (Expected::Ok, Ok(())) => Ok(()),
        (Expected::RangeOverflow, Err(Error::RangeOverflow { .. }))
        | (Expected::FileTooLarge, Err(Error::FileTooLarge { .. }))
        | (Expected::InvalidArgument, Err(Error::InvalidArgument(_))) => Ok(()),
        (want, Ok(())) => Err(format!("{op}: expected {want:?}, got Ok")),
        (want, Err(e)) => Err(format!("{op}: expected {want:?}, got error {e}")),
    }
}

/// What a model test runs its operations on: a [`File`] and what it is
/// opened over (device, mapper, the write path to make again), so that
/// [`Op::Reopen`] can open a fresh one; and, for a [`Flat`] file, the
/// region whose device bytes must equal the model after every fsync.
pub struct Subject {
    file: File,
    device: Arc<dyn BlockDevice>,
    mapper: Arc<dyn Mapper>,
    flat: Option<Arc<Flat>>,
    reserving: Option<Arc<Reserving>>,
    make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
    opts: FileOptions,
    /// The cache memory the file (and every reopen) charges; `None`: each
    /// open gets memory of its own under the default limits.
    memory: Option<Arc<CacheMemory>>,
}

impl Subject {
    /// A file over `mapper` on `device`, through the write path `make_path`
    /// makes (again at each reopen). `flat` is the same mapper when it is
    /// a [`Flat`]: then every fsync checks the device.
    pub fn new(
        device: Arc<dyn BlockDevice>,
        mapper: Arc<dyn Mapper>,
        flat: Option<Arc<Flat>>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        Self::open(None, device, mapper, flat, make_path, opts)
    }

    /// As [`Subject::new`], with the file (and every file a reopen makes)
    /// charging `memory`: a budget, dirty limits and a flusher of the
    /// test's choosing, whose [`CacheMemory::stats`] the test can read.
    pub fn in_memory(
        memory: &Arc<CacheMemory>,
        device: Arc<dyn BlockDevice>,
        mapper: Arc<dyn Mapper>,
        flat: Option<Arc<Flat>>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        Self::open(
            Some(Arc::clone(memory)),
            device,
            mapper,
            flat,
            make_path,
            opts,
        )
    }

    /// A [`Flat`] file on `device` charging `memory` ([`Subject::in_memory`]).
    pub fn flat_in(
        memory: &Arc<CacheMemory>,
        device: Arc<dyn BlockDevice>,
        flat: Arc<Flat>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        let mapper: Arc<dyn Mapper> = flat.clone();
        Subject::in_memory(memory, device, mapper, Some(flat), make_path, opts)
    }

    fn open(
        memory: Option<Arc<CacheMemory>>,
        device: Arc<dyn BlockDevice>,
        mapper: Arc<dyn Mapper>,
        flat: Option<Arc<Flat>>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        let file = open_file(
            memory.as_ref(),
            Arc::clone(&device),
            Arc::clone(&mapper),
            make_path(),
            opts,
        )?;
        Ok(Subject {
            file,
            device,
            mapper,
            flat,
            reserving: None,
            make_path,
            opts,
            memory,
        })
    }

    /// The cache memory given at construction, if any.
    pub fn memory(&self) -> Option<&Arc<CacheMemory>> {
        self.memory.as_ref()
    }

    /// A [`Reserving`] (delalloc) file on `device`: every fsync checks the
    /// device bytes of its written blocks, and that no reservation is left.
    pub fn reserving(
        device: Arc<dyn BlockDevice>,
        mapper: Arc<Reserving>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        let dynm: Arc<dyn Mapper> = mapper.clone();
        let mut s = Subject::new(device, dynm, None, make_path, opts)?;
        s.reserving = Some(mapper);
        Ok(s)
    }

    /// A [`Flat`] file on `device`.
    pub fn flat(
        device: Arc<dyn BlockDevice>,
        flat: Arc<Flat>,
        make_path: Box<dyn Fn() -> Box<dyn WritePath>>,
        opts: FileOptions,
    ) -> bufwrite_engine::Result<Subject> {
        let mapper: Arc<dyn Mapper> = flat.clone();
        Subject::new(device, mapper, Some(flat), make_path, opts)
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// fsync, then a new [`File`] over the same device and mapper.
    pub fn reopen(&mut self) -> Result<(), String> {
        self.file
            .fsync()
            .map_err(|e| format!("reopen: fsync failed: {e}"))?;
        let file = open_file(
            self.memory.as_ref(),
            Arc::clone(&self.device),
            Arc::clone(&self.mapper),
            (self.make_path)(),
            self.opts,
        )
        .map_err(|e| format!("reopen: open failed: {e}"))?;
        // The old file is clean: dropping it writes nothing.
        self.file = file;
        Ok(())
    }

    /// For a Flat file: the file's bytes as the device and the mapper
    /// hold them (unwritten ranges read as zeroes), up to the model's
    /// size, compared with the model ([`check_device`]). Other mappers:
    /// nothing to check here.
    pub fn check_device(&self, model: &Model) -> Result<(), String> {
        if let Some(r) = &self.reserving {
            if r.reserved() != 0 {
                return Err(format!(
                    "{} blocks still reserved after the writeback",
                    r.reserved()
                ));
            }
            let bytes = r.file_bytes(self.device.as_ref(), model.size())?;
            return check_device(&bytes, model);
        }
        let Some(flat) = &self.flat else {
            return Ok(());
        };
        let bytes = flat_bytes(self.device.as_ref(), flat, model.size())?;
        check_device(&bytes, model)
    }
}

/// Opens a file charging `memory`, or memory of its own when `None`.
fn open_file(
    memory: Option<&Arc<CacheMemory>>,
    device: Arc<dyn BlockDevice>,
    mapper: Arc<dyn Mapper>,
    path: Box<dyn WritePath>,
    opts: FileOptions,
) -> bufwrite_engine::Result<File> {
    match memory {
        Some(m) => File::open_in(m, device, mapper, path, opts),
        None => File::open(device, mapper, path, opts),
    }
}

/// The first `size` bytes of a Flat file as a reader of the device and
/// the mapper sees them: the device's, with the unwritten ranges zero.
pub fn flat_bytes(device: &dyn BlockDevice, flat: &Flat, size: u64) -> Result<Vec<u8>, String> {
    let len = flat.block_size().round_up(size);
    let mut buf = AlignedBuf::zeroed(len as usize);
    if len > 0 {
        device
            .read_at(flat.base().get(), &mut buf)
            .map_err(|e| format!("reading the device: {e}"))?;
    }
    for r in flat.unwritten_ranges() {
        let (a, b) = (r.start.min(len) as usize, r.end.min(len) as usize);
        buf[a..b].fill(0);
    }
    Ok(buf[..size as usize].to_vec())
}

/// [`apply`] on a [`Subject`], with what only it can do: [`Op::Reopen`],
/// and after every fsync / fdatasync (and reopen) the device check of a
/// Flat file ([`Subject::check_device`]).
pub fn apply_to(subject: &mut Subject, model: &mut Model, op: &Op) -> Result<(), String> {
    match op {
        Op::Reopen => {
            subject.reopen()?;
            model.seek(0);
            subject.check_device(model)?;
            check_size_and_position(&subject.file, model, op)
        }
        Op::Trace(TraceOp::Fsync | TraceOp::Fdatasync) => {
            apply(&subject.file, model, op)?;
            subject
                .check_device(model)
                .map_err(|e| format!("after {op}: {e}"))
        }
        _ => apply(&subject.file, model, op),
    }
}

/// What a block of a [`Reserving`] file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    /// Reserved by a write, no disk block yet.
    Delalloc,
    /// Allocated, not written yet: reads as zeroes.
    Unwritten,
    /// Allocated and written.
    Written,
}

/// The state of a [`Reserving`] file, under its lock.
#[derive(Debug, Default)]
struct ReservingState {
    /// File block -> state; absent blocks are holes.
    blocks: std::collections::BTreeMap<u64, BlockState>,
    /// Blocks reserved or allocated (of the `limit`).
    used: u64,
    /// get_block(create) calls so far (for [`Reserving::fail_get_block_at`]).
    get_blocks: u64,
}

/// A delayed-allocation mapper for tests, the engine's side of the
/// contract an allocating filesystem implements: a file over a device
/// region at `base` where file block `b` lives at `base + b * bs` once
/// allocated (so the device check stays simple), holes until a write
/// reserves them (`Delalloc`, counted against `limit` blocks: ENOSPC
/// beyond), allocated at writeback (`map_blocks`, unwritten or written per
/// the [`AllocPolicy`](bufwrite_engine::AllocPolicy)) and converted at `end_io`.
/// Truncate and punch free blocks and release reservations.
#[derive(Debug)]
pub struct Reserving {
    base: u64,
    capacity: u64,
    bs: bufwrite_engine::BlockSize,
    limit: u64,
    policy: bufwrite_engine::AllocPolicy,
    size: std::sync::atomic::AtomicU64,
    state: std::sync::Mutex<ReservingState>,
    /// The get_block(create) call (1-based) that fails, if any.
    fail_get_block_at: std::sync::atomic::AtomicU64,
    /// release_delalloc calls, as (file offset, length).
    releases: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl Reserving {
    /// An empty file at device offset `base` of at most `capacity` bytes,
    /// with room for `limit` blocks, allocating with `policy`.
    pub fn new(
        base: u64,
        capacity: u64,
        bs: u32,
        limit: u64,
        policy: bufwrite_engine::AllocPolicy,
    ) -> Self {
        Reserving {
            base,
            capacity,
            bs: bufwrite_engine::BlockSize::new(bs).unwrap_or_else(|_| panic!("block size {bs}")),
            limit,
            policy,
            size: std::sync::atomic::AtomicU64::new(0),
            state: std::sync::Mutex::new(ReservingState::default()),
            fail_get_block_at: std::sync::atomic::AtomicU64::new(0),
            releases: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReservingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `n`-th get_block(create) call from now on fail (0: none).
    pub fn fail_get_block_at(&self, n: u64) {
        let mut st = self.lock();
        st.get_blocks = 0;
        self.fail_get_block_at
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Blocks reserved and not yet allocated.
    pub fn reserved(&self) -> u64 {
        let st = self.lock();
        st.blocks
            .values()
            .filter(|s| **s == BlockState::Delalloc)
            .count() as u64
    }

    /// Blocks reserved or allocated.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Blocks allocated unwritten (waiting for end_io).
    pub fn unwritten(&self) -> u64 {
        let st = self.lock();
        st.blocks
            .values()
            .filter(|s| **s == BlockState::Unwritten)
            .count() as u64
    }

    /// The release_delalloc calls so far.
    pub fn releases(&self) -> Vec<(u64, u64)> {
        self.releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first `size` bytes of the file as the device and this mapper
    /// hold them: written blocks from the device, the rest zeroes.
    pub fn file_bytes(&self, device: &dyn BlockDevice, size: u64) -> Result<Vec<u8>, String> {
        let bs = self.bs.as_usize();
        let len = self.bs.round_up(size) as usize;
        let mut out = vec![0u8; len];
        let mut buf = AlignedBuf::zeroed(bs);
        let st = self.lock();
        for (&b, s) in st.blocks.range(..(len / bs) as u64) {
            if *s == BlockState::Written {
                let at = b as usize * bs;
                device
                    .read_at(self.base + at as u64, &mut buf)
                    .map_err(|e| format!("reading the device: {e}"))?;
                out[at..at + bs].copy_from_slice(&buf);
            }
        }
        out.truncate(size as usize);
        Ok(out)
    }

    fn addr(&self, pos: u64) -> bufwrite_engine::DevAddr {
        bufwrite_engine::DevAddr::new(self.base + pos)
    }

    /// The extent at block `b`: its state (None: hole) and how many blocks
    /// (at most `max`) share it.
    fn extent(st: &ReservingState, b: u64, max: u64) -> (Option<BlockState>, u64) {
        let kind = st.blocks.get(&b).copied();
        let mut n = 1;
        while n < max && st.blocks.get(&(b + n)).copied() == kind {
            n += 1;
        }
        (kind, n)
    }

    /// Frees blocks `[from, to)` (block numbers): reservations and allocations.
    fn free(&self, st: &mut ReservingState, from: u64, to: u64) {
        let gone: Vec<u64> = st.blocks.range(from..to).map(|(&b, _)| b).collect();
        for b in gone {
            st.blocks.remove(&b);
            st.used -= 1;
        }
    }

    fn too_large(&self, offset: u64, len: u64) -> Error {
        Error::FileTooLarge {
            offset,
            len,
            capacity: self.capacity,
        }
    }
}

impl Mapper for Reserving {
    fn block_size(&self) -> bufwrite_engine::BlockSize {
        self.bs
    }

    fn iomap_begin(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
        intent: bufwrite_engine::MapIntent,
    ) -> bufwrite_engine::Result<bufwrite_engine::Iomap> {
        use bufwrite_engine::{ExtentKind, Iomap};
        let p = pos.get();
        if p >= self.capacity {
            return Err(self.too_large(p, len));
        }
        let len = len.min(self.capacity - p);
        let shift = self.bs.shift();
        let b = p >> shift;
        let last = (p + len.max(1) - 1) >> shift;
        let mut st = self.lock();
        let (kind, n) = Self::extent(&st, b, last - b + 1);
        let ext_len = ((b + n) << shift) - p;
        let (kind, new) = match kind {
            Some(BlockState::Written) => (ExtentKind::Mapped, false),
            Some(BlockState::Unwritten) => (ExtentKind::Unwritten, false),
            Some(BlockState::Delalloc) => (ExtentKind::Delalloc, false),
            None if intent != bufwrite_engine::MapIntent::Write => (ExtentKind::Hole, false),
            None => {
                // Reserve as much of the hole as there is room for.
                let room = self.limit - st.used;
                if room == 0 {
                    return Err(Error::NoSpace { offset: p, len });
                }
                let n = n.min(room);
                for k in 0..n {
                    st.blocks.insert(b + k, BlockState::Delalloc);
                }
                st.used += n;
                return Ok(Iomap {
                    offset: pos,
                    length: (((b + n) << shift) - p).min(len),
                    kind: ExtentKind::Delalloc,
                    addr: bufwrite_engine::DevAddr::new(0),
                    new: true,
                });
            }
        };
        Ok(Iomap {
            offset: pos,
            length: ext_len.min(len),
            kind,
            addr: self.addr(p),
            new,
        })
    }

    fn get_block(
        &self,
        block: bufwrite_engine::FileBlock,
        create: bool,
    ) -> bufwrite_engine::Result<bufwrite_engine::BlockMapping> {
        use bufwrite_engine::{BlockMapping, DevAddr, ExtentKind};
        let bs = self.bs.get();
        let Some(pos) = block.pos(self.bs).filter(|p| p.get() < self.capacity) else {
            return Err(self.too_large(block.get().saturating_mul(bs), bs));
        };
        let b = block.get();
        let mut st = self.lock();
        if create {
            st.get_blocks += 1;
            let at = self
                .fail_get_block_at
                .load(std::sync::atomic::Ordering::Relaxed);
            if at != 0 && st.get_blocks == at {
                return Err(Error::InvalidArgument(format!(
                    "get_block call {at} fails (test)"
                )));
            }
        }
        let m = match st.blocks.get(&b).copied() {
            Some(BlockState::Written) => BlockMapping {
                kind: ExtentKind::Mapped,
                addr: self.addr(pos.get()),
                new: false,
            },
            Some(BlockState::Unwritten) => BlockMapping {
                kind: ExtentKind::Unwritten,
                addr: self.addr(pos.get()),
                new: create,
            },
            Some(BlockState::Delalloc) => BlockMapping {
                kind: ExtentKind::Delalloc,
                addr: DevAddr::new(0),
                new: false,
            },
            None if !create => BlockMapping {
                kind: ExtentKind::Hole,
                addr: DevAddr::new(0),
                new: false,
            },
            None => {
                if st.used >= self.limit {
                    return Err(Error::NoSpace {
                        offset: pos.get(),
                        len: bs,
                    });
                }
                st.used += 1;
                st.blocks.insert(b, BlockState::Delalloc);
                BlockMapping {
                    kind: ExtentKind::Delalloc,
                    addr: DevAddr::new(0),
                    new: true,
                }
            }
        };
        Ok(m)
    }

    fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, std::sync::atomic::Ordering::Release);
    }

    fn max_size(&self) -> u64 {
        self.capacity
    }

    fn map_blocks(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
    ) -> bufwrite_engine::Result<bufwrite_engine::Iomap> {
        use bufwrite_engine::{ExtentKind, Iomap};
        let shift = self.bs.shift();
        let b = pos.get() >> shift;
        let mut st = self.lock();
        let (kind, n) = Self::extent(&st, b, (len >> shift).max(1));
        if kind != Some(BlockState::Delalloc) {
            return Err(Error::InvalidArgument(format!(
                "map_blocks at {pos}: not delalloc ({kind:?})"
            )));
        }
        let (to, kind) = match self.policy {
            bufwrite_engine::AllocPolicy::Unwritten => {
                (BlockState::Unwritten, ExtentKind::Unwritten)
            }
            bufwrite_engine::AllocPolicy::Ordered => (BlockState::Written, ExtentKind::Mapped),
        };
        for k in 0..n {
            st.blocks.insert(b + k, to);
        }
        Ok(Iomap {
            offset: pos,
            length: n << shift,
            kind,
            addr: self.addr(pos.get()),
            new: true,
        })
    }

    fn release_delalloc(&self, pos: bufwrite_engine::FilePos, len: u64) {
        self.releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pos.get(), len));
        let shift = self.bs.shift();
        let (from, to) = (pos.get() >> shift, (pos.get() + len) >> shift);
        let mut st = self.lock();
        for b in from..to {
            if st.blocks.get(&b) == Some(&BlockState::Delalloc) {
                st.blocks.remove(&b);
                st.used -= 1;
            }
        }
    }

    fn end_io(&self, pos: bufwrite_engine::FilePos, len: u64) -> bufwrite_engine::Result<()> {
        let shift = self.bs.shift();
        let (from, to) = (pos.get() >> shift, (pos.get() + len) >> shift);
        let mut st = self.lock();
        for b in from..to {
            if let Some(s) = st.blocks.get_mut(&b) {
                if *s == BlockState::Unwritten {
                    *s = BlockState::Written;
                }
            }
        }
        Ok(())
    }

    fn truncate(&self, size: u64) -> bufwrite_engine::Result<()> {
        if size > self.capacity {
            return Err(self.too_large(size, 0));
        }
        let mut st = self.lock();
        if size < self.size() {
            let from = self.bs.round_up(size) >> self.bs.shift();
            self.free(&mut st, from, u64::MAX);
        }
        self.set_size(size);
        Ok(())
    }

    fn fallocate(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
        mode: FallocMode,
    ) -> bufwrite_engine::Result<()> {
        let (start, shift) = (pos.get(), self.bs.shift());
        let end = start
            .checked_add(len)
            .ok_or(Error::RangeOverflow { offset: start, len })?;
        let mut st = self.lock();
        match mode {
            FallocMode::PunchHole => {
                let (from, to) = (
                    self.bs.round_up(start) >> shift,
                    self.bs.round_down(end) >> shift,
                );
                self.free(&mut st, from, to.max(from));
            }
            FallocMode::Allocate | FallocMode::KeepSize => {
                if end > self.capacity {
                    return Err(self.too_large(start, len));
                }
                let (from, to) = (start >> shift, self.bs.round_up(end) >> shift);
                let holes = (from..to).filter(|b| !st.blocks.contains_key(b)).count() as u64;
                if st.used + holes > self.limit {
                    return Err(Error::NoSpace { offset: start, len });
                }
                for b in from..to {
                    if let std::collections::btree_map::Entry::Vacant(e) = st.blocks.entry(b) {
                        e.insert(BlockState::Unwritten);
                        st.used += 1;
                    }
                }
                if mode == FallocMode::Allocate && end > self.size() {
                    self.set_size(end);
                }
            }
        }
        Ok(())
    }
}

/// Compares the device bytes of the file's region, read after an fsync,
/// with the model: every byte below the model's size must match.
/// `file_region_bytes` starts at the file's offset 0 (e.g.
/// `Mem::snapshot(flat.base().get(), model.size())`) and may be longer.
pub fn check_device(file_region_bytes: &[u8], model: &Model) -> Result<(), String> {
    let want = model.data();
    if file_region_bytes.len() < want.len() {
        return Err(format!(
            "device region holds {} bytes, the file has {}",
            file_region_bytes.len(),
            want.len()
        ));
    }
    match first_diff(&file_region_bytes[..want.len()], want) {
        None => Ok(()),
        Some(i) => Err(format!(
            "device byte at file offset {i} is {:#04x}, expected {:#04x} (file size {})",
            file_region_bytes[i],
            want[i],
            want.len()
        )),
    }
}

fn make_buf(seed: u64, pos: u64, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_OP_BYTES {
        return Err(format!(
            "a {len}-byte buffer is longer than the harness's {MAX_OP_BYTES} bytes"
        ));
    }
    let mut buf = vec![0u8; len as usize];
    fill(seed, pos, &mut buf);
    Ok(buf)
}

/// Checks a write's result against the model's prediction and, when it
/// succeeded, applies it to the model.
fn check_write(
    model: &mut Model,
    op: &Op,
    pos: u64,
    buf: &[u8],
    res: bufwrite_engine::Result<usize>,
) -> Result<(), String> {
    let len = buf.len() as u64;
    match (model.expect_write(pos, len), res) {
        (Expected::Ok, Ok(n)) if n as u64 == len => {
            model.write_at(pos, buf);
            Ok(())
        }
        (Expected::Ok, Ok(n)) => Err(format!("{op} at {pos}: wrote {n} of {len} bytes")),
        (Expected::Ok, Err(e)) => Err(format!("{op} at {pos}: failed: {e}")),
        (Expected::RangeOverflow, Err(Error::RangeOverflow { .. })) => Ok(()),
        (Expected::FileTooLarge, Err(Error::FileTooLarge { .. })) => Ok(()),
        (want, Ok(n)) => Err(format!("{op} at {pos}: expected {want:?}, got Ok({n})")),
        (want, Err(e)) => Err(format!("{op} at {pos}: expected {want:?}, got error {e}")),
    }
}

fn check_size_and_position(file: &File, model: &Model, op: &Op) -> Result<(), String> {
    if file.size() != model.size() {
        return Err(format!(
            "after {op}: size is {}, expected {}",
            file.size(),
            model.size()
        ));
    }
    if file.position() != model.position() {
        return Err(format!(
            "after {op}: position is {}, expected {}",
            file.position(),
            model.position()
        ));
    }
    Ok(())
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_predictions() {
        let mut m = Model::new(100);
        assert_eq!(m.expect_write(u64::MAX, 2), Expected::RangeOverflow);
        assert_eq!(m.expect_write(90, 11), Expected::FileTooLarge);
        assert_eq!(m.expect_write(u64::MAX, 0), Expected::Ok);
        m.write_at(10, &[1, 2]);
        assert_eq!(m.size(), 12);
        assert_eq!(m.read_at(8, 10), &[0, 0, 1, 2]);
        assert!(m.read_at(12, 1).is_empty());
    }
}
