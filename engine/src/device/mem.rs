//! `Mem`: a RAM-backed device, for tests and CPU-only measurements.

use super::{check_request, BlockDevice, IoBufs, IoCounters, IoRequest, IoStats};
use crate::error::Result;
use std::sync::RwLock;

/// A device held in memory. Sizes need not be powers of two; the logical
/// block size is configurable (512 by default).
#[derive(Debug)]
pub struct Mem {
    data: RwLock<Vec<u8>>,
    lbs: u32,
    counters: IoCounters,
}

impl Mem {
    /// A zeroed device of `size` bytes with 512-byte logical blocks.
    pub fn new(size: u64) -> Self {
        Self::with_block_size(size, 512)
    }

    /// A zeroed device of `size` bytes with `lbs`-byte logical blocks.
    pub fn with_block_size(size: u64, lbs: u32) -> Self {
        Mem {
            data: RwLock::new(vec![0; usize::try_from(size).unwrap_or(usize::MAX)]),
            lbs: lbs.max(1),
            counters: IoCounters::default(),
        }
    }

    /// A device holding a copy of `bytes`.
    pub fn from_bytes(bytes: Vec<u8>, lbs: u32) -> Self {
        Mem {
            data: RwLock::new(bytes),
            lbs: lbs.max(1),
            counters: IoCounters::default(),
        }
    }

    /// A copy of the device's bytes in `[offset, offset + len)` (clipped to
    /// the device), for tests that compare with a model.
    pub fn snapshot(&self, offset: u64, len: u64) -> Vec<u8> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(data.len());
        data[start..end].to_vec()
    }

    fn run(&self, req: &mut IoRequest<'_>) -> Result<()> {
        let size = self.size();
        check_request(req, size, self.lbs, false)?;
        // check_request proved offset + len <= size, which fits usize.
        let mut at = req.offset as usize;
        match &mut req.bufs {
            IoBufs::Read(bufs) => {
                let data = self.data.read().unwrap_or_else(|e| e.into_inner());
                for b in bufs.iter_mut() {
                    b.copy_from_slice(&data[at..at + b.len()]);
                    at += b.len();
                }
                self.counters.record_read(req.bufs.len());
            }
            IoBufs::Write(bufs) => {
                let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
                for b in bufs.iter() {
                    data[at..at + b.len()].copy_from_slice(b);
                    at += b.len();
                }
                self.counters.record_write(req.bufs.len());
            }
        }
        Ok(())
    }
}

impl BlockDevice for Mem {
    fn backend(&self) -> &'static str {
        "mem"
    }

    fn describe(&self) -> String {
        format!("ram ({} bytes)", self.size())
    }

    fn logical_block_size(&self) -> u32 {
        self.lbs
    }

    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        for req in batch.iter_mut() {
            let r = self.run(req);
            req.result = Some(r);
        }
    }

    fn flush(&self) -> Result<()> {
        self.counters.record_flush();
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    #[test]
    fn round_trip_and_gather() {
        let m = Mem::new(8192);
        let a = [1u8; 512];
        let b = [2u8; 1024];
        let mut batch = [IoRequest::writev(512, smallvec![&a[..], &b[..]])];
        m.submit(&mut batch);
        batch[0].take_result().unwrap();
        let mut out = [0u8; 2048];
        m.read_at(0, &mut out).unwrap();
        assert!(out[..512].iter().all(|&x| x == 0));
        assert!(out[512..1024].iter().all(|&x| x == 1));
        assert!(out[1024..2048].iter().all(|&x| x == 2));
        let s = m.stats();
        assert_eq!((s.reads, s.writes, s.bytes_written), (1, 1, 1536));
    }

    #[test]
    fn refuses_out_of_bounds() {
        let m = Mem::new(4096);
        assert!(m.write_at(4096, &[0u8; 512]).is_err());
        assert!(m.write_at(100, &[0u8; 512]).is_err());
        assert_eq!(m.stats().writes, 0);
    }
}
