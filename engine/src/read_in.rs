//! Read-in of the blocks of one folio, shared by both write paths.
//!
//! A path decides *which* blocks need reading (iomap from its uptodate
//! bitmap and the extent map, buffer heads by walking the ring); how they are
//! read is the same mechanism for both, as in the kernel, where both end in
//! bios submitted to the block layer before anyone waits: the reads of one
//! folio are queued in a [`ReadBatch`] and go to the device in one
//! [`BlockDevice::submit`], so a backend with a queue (io_uring) has them all
//! in flight at once.
//!
//! Whether neighbouring blocks share a request is the caller's choice,
//! because the kernel's paths differ there: a buffered read builds one bio
//! over blocks that follow each other in the folio and on disk (iomap's
//! readahead, ext4's `ext4_mpage_readpages`), while the buffer-head
//! write_begin submits one bio per buffer head it must read.

use crate::device::{BlockDevice, IoRequest};
use crate::error::{Error, Result};
use crate::units::DevAddr;
use smallvec::SmallVec;

/// One run of folio bytes to fill from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRun {
    /// Offset in the folio.
    pub off: usize,
    /// Length in bytes.
    pub len: usize,
    /// Device address of the first byte.
    pub addr: DevAddr,
}

impl ReadRun {
    /// True when folio offset `off` lies in the run.
    pub fn contains(&self, off: usize) -> bool {
        (self.off..self.off + self.len).contains(&off)
    }
}

/// The reads one folio needs, in ascending folio order.
#[derive(Debug, Default)]
pub struct ReadBatch {
    runs: SmallVec<[ReadRun; 4]>,
    merge: bool,
}

/// How a submitted batch went.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// The runs whose read failed (their bytes are not valid).
    pub failed: SmallVec<[ReadRun; 2]>,
    /// The first failure.
    pub error: Option<Error>,
}

impl ReadOutcome {
    /// True when the folio bytes at `off` were read (or never queued).
    pub fn read_ok(&self, off: usize) -> bool {
        !self.failed.iter().any(|r| r.contains(off))
    }

    /// The first error, if any.
    pub fn result(self) -> Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

impl ReadBatch {
    /// A batch that joins a run to the previous one when both follow each
    /// other in the folio and on disk (one request for a buffered read).
    pub fn merging() -> Self {
        ReadBatch {
            runs: SmallVec::new(),
            merge: true,
        }
    }

    /// A batch that keeps every run its own request (the buffer-head
    /// write_begin: one bio per head).
    pub fn per_run() -> Self {
        ReadBatch {
            runs: SmallVec::new(),
            merge: false,
        }
    }

    /// Queues folio bytes `[off, off + len)` from device address `addr`.
    /// Runs must come in ascending folio order and not overlap.
    pub fn add(&mut self, off: usize, len: usize, addr: DevAddr) {
        debug_assert!(self.runs.last().is_none_or(|r| r.off + r.len <= off));
        if self.merge {
            if let Some(r) = self.runs.last_mut() {
                if r.off + r.len == off && r.addr.add(r.len as u64) == addr {
                    r.len += len;
                    return;
                }
            }
        }
        self.runs.push(ReadRun { off, len, addr });
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The queued runs.
    pub fn runs(&self) -> &[ReadRun] {
        &self.runs
    }

    /// Reads every queued run into `data` (the folio's bytes) with one
    /// submit, and says which runs failed.
    pub fn submit(&self, device: &dyn BlockDevice, data: &mut [u8]) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        if self.runs.is_empty() {
            return out;
        }
        let mut reqs: SmallVec<[IoRequest<'_>; 4]> = SmallVec::with_capacity(self.runs.len());
        let mut rest = data;
        let mut base = 0;
        // Runs are in folio order and disjoint: carve each one's buffer off
        // the front of what is left.
        for r in &self.runs {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.off - base);
            let (buf, tail) = tail.split_at_mut(r.len);
            // Requests take bare offsets: the one place a read's unit is dropped.
            reqs.push(IoRequest::read(r.addr.get(), buf));
            rest = tail;
            base = r.off + r.len;
        }
        device.submit(&mut reqs);
        for (req, r) in reqs.iter_mut().zip(&self.runs) {
            if let Err(e) = req.take_result() {
                out.failed.push(*r);
                out.error.get_or_insert(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::faulty::Faulty;
    use crate::device::mem::Mem;

    #[test]
    fn merging_joins_only_runs_contiguous_in_folio_and_on_disk() {
        let a = DevAddr::new;
        let mut b = ReadBatch::merging();
        b.add(0, 1024, a(8192));
        b.add(1024, 1024, a(9216)); // follows on both
        b.add(2048, 1024, a(0)); // follows in the folio only
        b.add(4096, 1024, a(1024)); // follows on disk only
        assert_eq!(b.runs().len(), 3);
        assert_eq!(b.runs()[0].len, 2048);
        let mut p = ReadBatch::per_run();
        p.add(0, 1024, a(8192));
        p.add(1024, 1024, a(9216));
        assert_eq!(p.runs().len(), 2);
    }

    #[test]
    fn one_submit_fills_every_run_and_reports_failures() {
        let bytes: Vec<u8> = (0..16384u32).map(|i| (i / 1024) as u8).collect();
        let mem = std::sync::Arc::new(Mem::from_bytes(bytes, 512));
        let mut b = ReadBatch::per_run();
        b.add(0, 1024, DevAddr::new(3072));
        b.add(2048, 1024, DevAddr::new(5120));
        let mut data = vec![0xffu8; 4096];
        let out = b.submit(mem.as_ref(), &mut data);
        assert!(out.failed.is_empty() && out.error.is_none());
        assert!(data[..1024].iter().all(|&x| x == 3));
        assert!(data[1024..2048].iter().all(|&x| x == 0xff));
        assert!(data[2048..3072].iter().all(|&x| x == 5));
        assert_eq!(mem.stats().reads, 2);

        let faulty = Faulty::new(mem.clone());
        faulty.fail_reads_in(5120..6144);
        let out = b.submit(&faulty, &mut data);
        assert!(out.read_ok(0) && !out.read_ok(2048) && out.error.is_some());
    }
}
