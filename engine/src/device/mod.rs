//! The device layer: the [`BlockDevice`] trait and its backends.
//!
//! Two ways in. `submit` takes a batch of requests whose buffers it borrows
//! (reads into locked folios' memory, a scatter list per request) and
//! returns once every request has completed; the borrow keeps each buffer
//! alive until its completion arrives. `submit_stream` runs writes whose
//! buffers the device owns while they are in flight (writeback copies the
//! runs of folios it has unlocked into them), pulling the next as a queue
//! slot frees and handing back each completion as it arrives.

mod counters;
pub mod faulty;
pub mod mem;
mod open;
pub mod probe;
mod segments;
pub mod sync;
pub mod uring;

pub use counters::{IoCounters, IoStats};
pub use open::{open_device, Backend, OpenOptions};

use crate::error::{Error, IoKind, Result};
use smallvec::SmallVec;

/// The buffers of one request: read into them, or write from them, in order.
#[derive(Debug)]
pub enum IoBufs<'a> {
    /// Fill these buffers from consecutive device bytes.
    Read(SmallVec<[&'a mut [u8]; 4]>),
    /// Write these buffers to consecutive device bytes.
    Write(SmallVec<[&'a [u8]; 4]>),
}

impl IoBufs<'_> {
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            IoBufs::Read(v) => v.iter().map(|b| b.len() as u64).sum(),
            IoBufs::Write(v) => v.iter().map(|b| b.len() as u64).sum(),
        }
    }

    /// True when the request moves no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read or write.
    pub fn kind(&self) -> IoKind {
        match self {
            IoBufs::Read(_) => IoKind::Read,
            IoBufs::Write(_) => IoKind::Write,
        }
    }

    /// Address and length of every segment, for alignment checks.
    pub fn segments(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (reads, writes) = match self {
            IoBufs::Read(v) => (Some(v.iter().map(|b| (b.as_ptr() as usize, b.len()))), None),
            IoBufs::Write(v) => (None, Some(v.iter().map(|b| (b.as_ptr() as usize, b.len())))),
        };
        reads
            .into_iter()
            .flatten()
            .chain(writes.into_iter().flatten())
    }
}

/// One device request in a batch, and (after submission) its result.
#[derive(Debug)]
pub struct IoRequest<'a> {
    /// Device byte offset of the first byte.
    pub offset: u64,
    /// The buffers.
    pub bufs: IoBufs<'a>,
    /// Set by the device when the request completes; `None` before.
    pub result: Option<Result<()>>,
}

impl<'a> IoRequest<'a> {
    /// A read of `buf.len()` bytes at `offset` into one buffer.
    pub fn read(offset: u64, buf: &'a mut [u8]) -> Self {
        let mut v = SmallVec::new();
        v.push(buf);
        IoRequest {
            offset,
            bufs: IoBufs::Read(v),
            result: None,
        }
    }

    /// A write of `buf` at `offset`.
    pub fn write(offset: u64, buf: &'a [u8]) -> Self {
        let mut v = SmallVec::new();
        v.push(buf);
        IoRequest {
            offset,
            bufs: IoBufs::Write(v),
            result: None,
        }
    }

    /// A write gathering several buffers to consecutive device bytes.
    pub fn writev(offset: u64, bufs: SmallVec<[&'a [u8]; 4]>) -> Self {
        IoRequest {
            offset,
            bufs: IoBufs::Write(bufs),
            result: None,
        }
    }

    /// A read scattering consecutive device bytes into several buffers.
    pub fn readv(offset: u64, bufs: SmallVec<[&'a mut [u8]; 4]>) -> Self {
        IoRequest {
            offset,
            bufs: IoBufs::Read(bufs),
            result: None,
        }
    }

    /// The request's result; a request the device never completed is an error.
    pub fn take_result(&mut self) -> Result<()> {
        let (op, offset, len) = (self.bufs.kind(), self.offset, self.bufs.len());
        self.result.take().unwrap_or_else(|| {
            Err(Error::io(
                op,
                offset,
                len,
                std::io::Error::other("request was not completed by the device"),
            ))
        })
    }
}

/// A write whose buffer the device owns while it is in flight: what the
/// writeback pipeline hands to [`BlockDevice::submit_stream`]. The folios
/// it was copied from are unlocked (and may be written again) while it
/// runs, so it cannot borrow their memory.
#[derive(Debug)]
pub struct OwnedWrite {
    /// Device byte offset of the first byte.
    pub offset: u64,
    /// The bytes: `buf[..len]` is written.
    pub buf: crate::align::AlignedBuf,
    /// Bytes to write (a multiple of the logical block size, `<= buf.len()`).
    pub len: usize,
    /// The caller's tag, handed back with the completion.
    pub tag: u64,
}

/// A source of writes and a sink of their completions, for
/// [`BlockDevice::submit_stream`]: the device pulls the next write as soon
/// as it has a free queue slot and reports each completion as it arrives.
pub trait WriteStream {
    /// The next write to start; `None` when there is no more (the stream
    /// ends once every write started has completed).
    fn next_write(&mut self) -> Option<OwnedWrite>;

    /// One started write has completed (in any order), with its result.
    fn complete(&mut self, write: OwnedWrite, result: Result<()>);
}

/// How many writes the default [`BlockDevice::submit_stream`] gathers
/// into one [`BlockDevice::submit`] batch.
pub const STREAM_BATCH: usize = 32;

/// A block device (or image file, or RAM) that the page cache reads from and
/// writes back to.
///
/// Offsets and segment lengths must be multiples of
/// [`logical_block_size`](BlockDevice::logical_block_size); requests must lie
/// inside [`size`](BlockDevice::size). Backends check both before submitting
/// anything and fail the request (not the batch) otherwise.
pub trait BlockDevice: Send + Sync {
    /// Short backend name for reports: `mem`, `sync`, `uring`, ...
    fn backend(&self) -> &'static str;

    /// What the device is (a path, or `ram`), for reports.
    fn describe(&self) -> String;

    /// The smallest unit of I/O, in bytes (512 or 4096 for real devices).
    fn logical_block_size(&self) -> u32;

    /// Device size in bytes.
    fn size(&self) -> u64;

    /// True when writes are refused.
    fn read_only(&self) -> bool {
        false
    }

    /// Submits every request of `batch` and returns once all have completed,
    /// each with its `result` set. Requests may complete in any order.
    fn submit(&self, batch: &mut [IoRequest<'_>]);

    /// Makes completed writes durable (a device cache flush).
    fn flush(&self) -> Result<()>;
    /// Runs every write `stream` gives, keeping up to the device's queue
    /// depth in flight: the next write is pulled as soon as a slot is free,
    /// completions are handed back as they arrive, and the call returns once
    /// the stream is dry and nothing is in flight. No flush.
    ///
    /// The default gathers up to [`STREAM_BATCH`] writes into one
    /// [`submit`](BlockDevice::submit) batch at a time (a barrier between
    /// batches); backends with a queue (io_uring) override it.
    fn submit_stream(&self, stream: &mut dyn WriteStream) {
        let mut batch: Vec<OwnedWrite> = Vec::with_capacity(STREAM_BATCH);
        loop {
            while batch.len() < STREAM_BATCH {
                match stream.next_write() {
                    Some(w) => batch.push(w),
                    None => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            let results: Vec<Result<()>> = {
                let mut reqs: Vec<IoRequest<'_>> = batch
                    .iter()
                    .map(|w| IoRequest::write(w.offset, &w.buf[..w.len.min(w.buf.len())]))
                    .collect();
                self.submit(&mut reqs);
                reqs.iter_mut().map(IoRequest::take_result).collect()
            };
            for (w, r) in batch.drain(..).zip(results) {
                stream.complete(w, r);
            }
        }
    }

    /// Counters of the I/O this device has done.
    fn stats(&self) -> IoStats;

    /// Reads `buf.len()` bytes at `offset` (one request).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut req = [IoRequest::read(offset, buf)];
        self.submit(&mut req);
        req[0].take_result()
    }

    /// Writes `buf` at `offset` (one request).
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut req = [IoRequest::write(offset, buf)];
        self.submit(&mut req);
        req[0].take_result()
    }
}

/// Why a write request failed having written only part of its bytes: the
/// device took the first `written` bytes and reported no more (what
/// `pwrite(2)` returning less than asked means, when continuing does not
/// help).
///
/// The [`BlockDevice`] contract stays "a request succeeds whole or fails":
/// a short write fails, with [`ShortWrite::into_error`]'s error, an
/// [`Error::Io`] whose offset and length are the part that did *not* land
/// (as a failure part-way through a transfer is reported by every
/// backend) and whose source is this value, for a caller that wants to
/// know how much did ([`ShortWrite::of`]). Bytes past `written` were not
/// written. The page cache treats it as any failed write: the whole run
/// stays dirty and is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("short write: {written} of {requested} bytes at device offset {offset} landed")]
pub struct ShortWrite {
    /// Device offset of the request.
    pub offset: u64,
    /// Bytes the request asked to write.
    pub requested: u64,
    /// Bytes that landed, from `offset` on.
    pub written: u64,
}

impl ShortWrite {
    /// The error a short write fails its request with.
    pub fn into_error(self) -> Error {
        let at = self.offset + self.written;
        let rest = self.requested - self.written;
        Error::io(
            IoKind::Write,
            at,
            rest,
            std::io::Error::new(std::io::ErrorKind::WriteZero, self),
        )
    }

    /// The short write behind `err`, when it is one.
    pub fn of(err: &Error) -> Option<&ShortWrite> {
        match err {
            Error::Io { source, .. } => source.get_ref()?.downcast_ref::<ShortWrite>(),
            _ => None,
        }
    }
}

/// Checks that a request lies inside a device of `size` bytes, is aligned to
/// `lbs`, and is not a write to a read-only device. Backends call this before
/// submitting.
pub fn check_request(req: &IoRequest<'_>, size: u64, lbs: u32, read_only: bool) -> Result<()> {
    let op = req.bufs.kind();
    let len = req.bufs.len();
    if read_only && op == IoKind::Write {
        return Err(Error::ReadOnly);
    }
    let out = Error::OutOfBounds {
        op,
        offset: req.offset,
        len,
        size,
    };
    match req.offset.checked_add(len) {
        Some(end) if end <= size => {}
        _ => return Err(out),
    }
    let lbs = u64::from(lbs.max(1));
    let seg_misaligned = req
        .bufs
        .segments()
        .any(|(_, l)| !(l as u64).is_multiple_of(lbs));
    if !req.offset.is_multiple_of(lbs) || seg_misaligned {
        return Err(Error::Misaligned {
            op,
            offset: req.offset,
            len,
            align: lbs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_bounds_and_alignment() {
        let mut buf = [0u8; 1024];
        let r = IoRequest::read(0, &mut buf);
        assert!(check_request(&r, 4096, 512, false).is_ok());
        assert!(matches!(
            check_request(&r, 512, 512, false),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            check_request(&r, 4096, 4096, false),
            Err(Error::Misaligned { .. })
        ));
        drop(r);
        let r = IoRequest::read(u64::MAX - 10, &mut buf);
        assert!(matches!(
            check_request(&r, u64::MAX, 1, false),
            Err(Error::OutOfBounds { .. })
        ));
        drop(r);
        let w = [0u8; 512];
        let r = IoRequest::write(0, &w);
        assert!(matches!(
            check_request(&r, 4096, 512, true),
            Err(Error::ReadOnly)
        ));
    }

    #[test]
    fn a_short_write_reports_the_part_that_did_not_land() {
        let short = ShortWrite {
            offset: 4096,
            requested: 8192,
            written: 1024,
        };
        let e = short.into_error();
        assert!(matches!(
            e,
            Error::Io {
                op: IoKind::Write,
                offset: 5120,
                len: 7168,
                ..
            }
        ));
        assert_eq!(ShortWrite::of(&e), Some(&short));
        assert_eq!(ShortWrite::of(&Error::ReadOnly), None);
        let text = e.to_string();
        assert!(!text.contains("short write"), "{text}");
    }

    /// Hands out `n` one-block writes (block `i`, byte `i + 1`, tag `i`),
    /// the 7th past the device's end; records each completion.
    struct Counting {
        n: u64,
        next: u64,
        size: u64,
        results: std::collections::BTreeMap<u64, Result<()>>,
    }

    impl WriteStream for Counting {
        fn next_write(&mut self) -> Option<OwnedWrite> {
            if self.next == self.n {
                return None;
            }
            let tag = self.next;
            self.next += 1;
            let mut buf = crate::align::AlignedBuf::zeroed(512);
            buf.fill(tag as u8 + 1);
            let offset = if tag == 7 { self.size } else { tag * 512 };
            Some(OwnedWrite {
                offset,
                buf,
                len: 512,
                tag,
            })
        }

        fn complete(&mut self, w: OwnedWrite, r: Result<()>) {
            assert!(
                self.results.insert(w.tag, r).is_none(),
                "tag {} twice",
                w.tag
            );
        }
    }

    #[test]
    fn the_default_stream_completes_every_write_once() {
        let size = 100 * 512;
        let dev = mem::Mem::with_block_size(size, 512);
        // More than two batches, so that the barrier between them is used.
        let mut s = Counting {
            n: 2 * STREAM_BATCH as u64 + 5,
            next: 0,
            size,
            results: Default::default(),
        };
        dev.submit_stream(&mut s);
        assert_eq!(s.results.len() as u64, s.n);
        for (&tag, r) in &s.results {
            if tag == 7 {
                assert!(matches!(r, Err(Error::OutOfBounds { .. })), "{r:?}");
                continue;
            }
            assert!(r.is_ok(), "{tag}: {r:?}");
            let mut b = [0u8; 512];
            dev.read_at(tag * 512, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == tag as u8 + 1), "block {tag}");
        }
    }
}
