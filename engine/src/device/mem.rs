//! `Mem`: a RAM-backed device, for tests and CPU-only measurements.
//!
//! Two stores: a dense one (one buffer of the whole size, allocated up
//! front: [`Mem::new`], [`Mem::with_block_size`], [`Mem::from_bytes`]) and a
//! sparse one ([`Mem::sparse`]) whose memory is allocated a chunk at a time
//! on the first write of non-zero bytes into it, so a device may be far
//! larger than the machine's memory (`bufwrite replay --mem 100G`) and only
//! what is written costs RAM. The write hot path never touches the device;
//! writeback and read-in do, where a chunk lookup is small next to the copy.

use super::{check_request, BlockDevice, IoBufs, IoCounters, IoRequest, IoStats};
use crate::error::{Error, IoKind, Result};
use std::collections::HashMap;
use std::sync::RwLock;

/// Bytes of one chunk of a sparse device: small enough that scattered small
/// writes cost little memory, large enough that a 2 MiB folio's writeback
/// is a few dozen lookups.
pub const SPARSE_CHUNK: usize = 64 << 10;

/// Where a device's bytes live.
#[derive(Debug)]
enum Store {
    /// Every byte, in one buffer.
    Dense(Vec<u8>),
    /// Chunk index -> its [`SPARSE_CHUNK`] bytes; absent chunks read as zeroes.
    Sparse(HashMap<u64, Box<[u8]>>),
}

/// A device held in memory. Sizes need not be powers of two; the logical
/// block size is configurable (512 by default).
#[derive(Debug)]
pub struct Mem {
    data: RwLock<Store>,
    /// Fixed at creation; kept outside the lock so `size` costs nothing.
    size: u64,
    lbs: u32,
    counters: IoCounters,
}

impl Mem {
    /// A zeroed device of `size` bytes with 512-byte logical blocks, all of
    /// it allocated now (the allocation aborts the process when the
    /// machine cannot give it; use [`Mem::sparse`] for sizes that come from
    /// a user).
    pub fn new(size: u64) -> Self {
        Self::with_block_size(size, 512)
    }

    /// A zeroed device of `size` bytes with `lbs`-byte logical blocks, all
    /// of it allocated now (see [`Mem::new`]).
    pub fn with_block_size(size: u64, lbs: u32) -> Self {
        Self::from_bytes(vec![0; usize::try_from(size).unwrap_or(usize::MAX)], lbs)
    }

    /// A device holding a copy of `bytes`.
    pub fn from_bytes(bytes: Vec<u8>, lbs: u32) -> Self {
        Mem {
            size: bytes.len() as u64,
            data: RwLock::new(Store::Dense(bytes)),
            lbs: lbs.max(1),
            counters: IoCounters::default(),
        }
    }

    /// A zeroed device of `size` bytes (any `u64`) with `lbs`-byte logical
    /// blocks that allocates nothing until it is written: a chunk of
    /// [`SPARSE_CHUNK`] bytes is allocated on the first write of non-zero
    /// bytes into it, and chunks never written read as zeroes. A chunk the
    /// machine cannot allocate fails that write with an I/O error, it does
    /// not abort.
    pub fn sparse(size: u64, lbs: u32) -> Self {
        Mem {
            size,
            data: RwLock::new(Store::Sparse(HashMap::new())),
            lbs: lbs.max(1),
            counters: IoCounters::default(),
        }
    }

    /// Bytes of memory the device's contents occupy (the whole size for a
    /// dense device; the allocated chunks for a sparse one).
    pub fn allocated_bytes(&self) -> u64 {
        match &*self.data.read().unwrap_or_else(|e| e.into_inner()) {
            Store::Dense(v) => v.len() as u64,
            Store::Sparse(chunks) => (chunks.len() * SPARSE_CHUNK) as u64,
        }
    }

    /// A copy of the device's bytes in `[offset, offset + len)` (clipped to
    /// the device), for tests that compare with a model.
    pub fn snapshot(&self, offset: u64, len: u64) -> Vec<u8> {
        let start = offset.min(self.size);
        let end = start.saturating_add(len).min(self.size);
        let mut out = vec![0u8; usize::try_from(end - start).unwrap_or(usize::MAX)];
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        read_store(&data, start, &mut out);
        out
    }

    fn run(&self, req: &mut IoRequest<'_>) -> Result<()> {
        check_request(req, self.size, self.lbs, false)?;
        // check_request proved offset + len <= size.
        let mut at = req.offset;
        match &mut req.bufs {
            IoBufs::Read(bufs) => {
                let data = self.data.read().unwrap_or_else(|e| e.into_inner());
                for b in bufs.iter_mut() {
                    read_store(&data, at, b);
                    at += b.len() as u64;
                }
                self.counters.record_read(req.bufs.len());
            }
            IoBufs::Write(bufs) => {
                let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
                for b in bufs.iter() {
                    write_store(&mut data, at, b)?;
                    at += b.len() as u64;
                }
                self.counters.record_write(req.bufs.len());
            }
        }
        Ok(())
    }
}

/// The chunk index of device offset `at` and the offset inside the chunk.
fn chunk_of(at: u64) -> (u64, usize) {
    let c = SPARSE_CHUNK as u64;
    (at / c, (at % c) as usize)
}

/// Fills `buf` from the store at `at`; the caller checked the bounds.
fn read_store(store: &Store, mut at: u64, buf: &mut [u8]) {
    match store {
        Store::Dense(v) => {
            // In bounds, so `at` fits in usize.
            let at = at as usize;
            buf.copy_from_slice(&v[at..at + buf.len()]);
        }
        Store::Sparse(chunks) => {
            let mut done = 0;
            while done < buf.len() {
                let (idx, off) = chunk_of(at);
                let n = (SPARSE_CHUNK - off).min(buf.len() - done);
                let dst = &mut buf[done..done + n];
                match chunks.get(&idx) {
                    Some(chunk) => dst.copy_from_slice(&chunk[off..off + n]),
                    None => dst.fill(0),
                }
                done += n;
                at += n as u64;
            }
        }
    }
}

/// Copies `buf` into the store at `at`; the caller checked the bounds. On a
/// sparse store, zeroes bound for a chunk never written allocate nothing
/// (writeback of a zero-filled gap stays free).
fn write_store(store: &mut Store, mut at: u64, buf: &[u8]) -> Result<()> {
    match store {
        Store::Dense(v) => {
            let at = at as usize;
            v[at..at + buf.len()].copy_from_slice(buf);
        }
        Store::Sparse(chunks) => {
            let mut done = 0;
            while done < buf.len() {
                let (idx, off) = chunk_of(at);
                let n = (SPARSE_CHUNK - off).min(buf.len() - done);
                let src = &buf[done..done + n];
                match chunks.get_mut(&idx) {
                    Some(chunk) => chunk[off..off + n].copy_from_slice(src),
                    None if src.iter().all(|&b| b == 0) => {}
                    None => {
                        let mut chunk = new_chunk().ok_or_else(|| {
                            Error::io(
                                IoKind::Write,
                                at,
                                n as u64,
                                std::io::Error::new(
                                    std::io::ErrorKind::OutOfMemory,
                                    "cannot allocate memory for the RAM device",
                                ),
                            )
                        })?;
                        chunk[off..off + n].copy_from_slice(src);
                        chunks.insert(idx, chunk);
                    }
                }
                done += n;
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// A zeroed chunk, or `None` when the allocator refuses it.
fn new_chunk() -> Option<Box<[u8]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(SPARSE_CHUNK).ok()?;
    v.resize(SPARSE_CHUNK, 0);
    Some(v.into_boxed_slice())
}

impl BlockDevice for Mem {
    fn backend(&self) -> &'static str {
        "mem"
    }

    fn describe(&self) -> String {
        format!("ram ({} bytes)", self.size)
    }

    fn logical_block_size(&self) -> u32 {
        self.lbs
    }

    fn size(&self) -> u64 {
        self.size
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
        for m in [Mem::new(8192), Mem::sparse(8192, 512)] {
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
    }

    #[test]
    fn refuses_out_of_bounds() {
        for m in [Mem::new(4096), Mem::sparse(4096, 512)] {
            assert!(m.write_at(4096, &[0u8; 512]).is_err());
            assert!(m.write_at(100, &[0u8; 512]).is_err());
            assert_eq!(m.stats().writes, 0);
        }
        let m = Mem::sparse(u64::MAX, 512);
        assert!(m.write_at(u64::MAX - 511, &[1u8; 512]).is_err());
        assert_eq!(m.allocated_bytes(), 0);
    }

    #[test]
    fn sparse_allocates_only_written_chunks_and_crosses_chunk_edges() {
        // Far larger than any machine's memory: nothing is allocated up front.
        let size = u64::MAX / 512 * 512;
        let m = Mem::sparse(size, 512);
        assert_eq!((m.size(), m.allocated_bytes()), (size, 0));
        let c = SPARSE_CHUNK as u64;
        // A write across a chunk edge, one near the end, and zeroes into an
        // unwritten chunk (which allocate nothing).
        let data: Vec<u8> = (0..2048u32).map(|i| (i % 251 + 1) as u8).collect();
        m.write_at(c - 1024, &data).unwrap();
        m.write_at(size - 512, &data[..512]).unwrap();
        m.write_at(5 * c, &[0u8; 4096]).unwrap();
        assert_eq!(m.allocated_bytes(), 3 * c);
        let mut back = vec![0u8; 4096];
        m.read_at(c - 2048, &mut back).unwrap();
        assert!(back[..1024].iter().all(|&b| b == 0));
        assert_eq!(&back[1024..3072], &data[..]);
        assert!(back[3072..].iter().all(|&b| b == 0));
        assert_eq!(m.snapshot(size - 512, 4096), &data[..512]);
        assert_eq!(m.snapshot(c - 1024, 2048), data);
        // Overwrites of an allocated chunk, zeroes included, land.
        m.write_at(c - 1024, &[0u8; 512]).unwrap();
        assert_eq!(m.snapshot(c - 1024, 512), vec![0u8; 512]);
        assert_eq!(m.snapshot(c - 512, 1), &data[512..513]);
    }

    #[test]
    fn dense_and_sparse_agree_on_a_write_sequence() {
        let (dense, sparse) = (Mem::new(1 << 20), Mem::sparse(1 << 20, 512));
        let mut x = 7u64;
        for i in 0..200u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) % ((1 << 20) / 512) * 512;
            let len = ((x >> 8) % 16 + 1) * 512;
            let len = len.min((1 << 20) - off) as usize;
            let fill = if i % 5 == 0 { 0 } else { (x >> 56) as u8 | 1 };
            let buf = vec![fill; len];
            dense.write_at(off, &buf).unwrap();
            sparse.write_at(off, &buf).unwrap();
        }
        assert!(dense.snapshot(0, 1 << 20) == sparse.snapshot(0, 1 << 20));
    }
}
