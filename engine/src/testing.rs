//! A model harness for testing a [`File`] (any write path, any device)
//! against a plain in-memory file. Compiled only with the `testing` feature.
//!
//! The pieces:
//!
//! - [`Op`]: one file operation: a [`TraceOp`] of the trace grammar
//!   ([`crate::trace`]: write, pwrite, writev, seek, read, fsync,
//!   fdatasync), or a drop-caches, which no trace holds. Test crates
//!   generate sequences of these with [`op_strategy`] / [`ops_strategy`] (weights in [`OpWeights`]), over a
//!   file set up as [`setup_strategy`] draws it ([`Setup`]).
//! - [`byte_at`] / [`fill`] / [`fnv1a64`]: re-exported from
//!   [`crate::pattern`], the fixed byte function of the `replay` contract
//!   (docs/DESIGN.md §7), so any tool can reproduce the bytes a
//!   sequence wrote.
//! - [`Model`]: a `Vec<u8>` file with a position, a size and a capacity,
//!   applying each op the way [`File`] must.
//! - [`apply`]: runs an op on both and describes the first difference
//!   (bytes read, returned counts, error kind, size, position).
//! - [`check_device`]: after an fsync, compares the device bytes of the
//!   file's region with the model.
//!
//! ```
//! use bufwrite_engine::testing::{apply, check_device, Model, Op, TraceOp};
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

use crate::error::Error;
use crate::file::File;
use crate::page_cache::OrderPolicy;
use proptest::prelude::*;
use proptest::strategy::Union;
use std::fmt;
use std::io::IoSlice;
use std::ops::Range;

pub use crate::pattern::{byte_at, fill, fnv1a64, splitmix64};
pub use crate::trace::Op as TraceOp;

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
        Op::Trace(TraceOp::Fsync | TraceOp::Fdatasync) => {
            file.fsync().map_err(|e| format!("{op}: failed: {e}"))?
        }
        Op::DropCaches => {
            file.drop_caches();
        }
    }
    check_size_and_position(file, model, op)
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
    res: crate::Result<usize>,
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
