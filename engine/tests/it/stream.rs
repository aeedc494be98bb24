//! `BlockDevice::submit_stream` on io_uring: streaming with no barrier,
//! every completion once with its tag, bad writes failing alone, and a
//! stream whose callback waits for a reader of the same device (a ring per
//! submitter, no deadlock).
//!
//! Tests skip, printing `SKIP`, when io_uring is unavailable here.

use bufwrite_engine::device::uring::{self, UringConfig, UringDevice};
use bufwrite_engine::{AlignedBuf, BlockDevice, Error, OwnedWrite, Result, WriteStream};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const BLOCK: usize = 4096;

fn uring_available() -> bool {
    match uring::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: {e}");
            false
        }
    }
}

/// A zero-filled image of `blocks` 4 KiB blocks on a real filesystem.
fn image(blocks: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("image");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len((blocks * BLOCK) as u64).unwrap();
    (dir, path)
}

fn open(path: &Path, qd: u32, batch: u32) -> UringDevice {
    let cfg = UringConfig {
        queue_depth: qd,
        batch,
        ..UringConfig::default()
    };
    UringDevice::open_with(path, &cfg).unwrap()
}

/// The bytes write `tag` puts in its block: the tag, then a fill byte.
fn pattern(tag: u64) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(BLOCK);
    b.fill((tag % 251) as u8 + 1);
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b
}

fn write(block: usize, tag: u64) -> OwnedWrite {
    OwnedWrite {
        offset: (block * BLOCK) as u64,
        buf: pattern(tag),
        len: BLOCK,
        tag,
    }
}

/// A stream over a list of writes that records every completion (once)
/// and how many of its writes were started but not completed each time
/// it was asked for the next one.
#[derive(Default)]
struct Recorder {
    todo: VecDeque<OwnedWrite>,
    started: usize,
    done: HashMap<u64, Result<()>>,
    /// Largest started-minus-completed seen at a `next_write` call.
    max_outstanding: usize,
}

impl Recorder {
    fn new(writes: impl IntoIterator<Item = OwnedWrite>) -> Self {
        Recorder {
            todo: writes.into_iter().collect(),
            ..Recorder::default()
        }
    }
}

impl WriteStream for Recorder {
    fn next_write(&mut self) -> Option<OwnedWrite> {
        let outstanding = self.started - self.done.len();
        self.max_outstanding = self.max_outstanding.max(outstanding);
        let w = self.todo.pop_front()?;
        self.started += 1;
        Some(w)
    }

    fn complete(&mut self, write: OwnedWrite, result: Result<()>) {
        let again = self.done.insert(write.tag, result);
        assert!(again.is_none(), "tag {} completed twice", write.tag);
    }
}

/// A small deterministic generator (xorshift64*), for block orders.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
    v
}

fn read_block(dev: &dyn BlockDevice, block: usize) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(BLOCK);
    dev.read_at((block * BLOCK) as u64, &mut b).unwrap();
    b
}

#[test]
fn two_thousand_random_writes_stream_with_no_barrier() {
    if !uring_available() {
        return;
    }
    const WRITES: usize = 2000;
    let (_d, path) = image(2048);
    let dev = open(&path, 8, 4);
    // Distinct blocks: writes in flight together never overlap, so the
    // contents do not depend on completion order.
    let blocks = shuffled(2048, 0x5eed);
    let before = dev.stats();
    let mut rec = Recorder::new(
        blocks[..WRITES]
            .iter()
            .enumerate()
            .map(|(tag, &b)| write(b, tag as u64)),
    );
    dev.submit_stream(&mut rec);
    assert_eq!(rec.started, WRITES);
    assert_eq!(rec.done.len(), WRITES, "every write completed once");
    for (tag, r) in &rec.done {
        assert!(r.is_ok(), "write {tag}: {r:?}");
    }
    assert!(
        rec.max_outstanding > 1,
        "next_write was only called with at most {} write outstanding: a barrier",
        rec.max_outstanding
    );
    assert!(rec.max_outstanding <= 8, "{} > qd", rec.max_outstanding);
    let after = dev.stats();
    assert_eq!(after.writes - before.writes, WRITES as u64);
    assert_eq!(
        after.bytes_written - before.bytes_written,
        (WRITES * BLOCK) as u64
    );
    for (tag, &b) in blocks[..WRITES].iter().enumerate() {
        assert_eq!(
            &read_block(&dev, b)[..],
            &pattern(tag as u64)[..],
            "block {b}"
        );
    }
    for &b in &blocks[WRITES..] {
        assert!(read_block(&dev, b).iter().all(|&x| x == 0), "block {b}");
    }
}

#[test]
fn bad_writes_fail_alone_and_the_rest_land() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(64);
    let dev = open(&path, 4, 4);
    let size = dev.size();
    let mut writes: Vec<OwnedWrite> = (0..40).map(|i| write(i, i as u64)).collect();
    // Past the end, misaligned, longer than its buffer, and an empty one.
    writes.insert(
        10,
        OwnedWrite {
            offset: size,
            ..write(0, 100)
        },
    );
    writes.insert(
        20,
        OwnedWrite {
            offset: 100,
            ..write(0, 101)
        },
    );
    writes.insert(
        30,
        OwnedWrite {
            len: BLOCK + 512,
            ..write(50, 102)
        },
    );
    writes.insert(
        35,
        OwnedWrite {
            len: 0,
            ..write(51, 103)
        },
    );
    let mut rec = Recorder::new(writes);
    dev.submit_stream(&mut rec);
    assert_eq!(rec.done.len(), 44);
    assert!(
        matches!(rec.done[&100], Err(Error::OutOfBounds { .. })),
        "{:?}",
        rec.done[&100]
    );
    assert!(
        matches!(rec.done[&101], Err(Error::Misaligned { .. })),
        "{:?}",
        rec.done[&101]
    );
    assert!(
        matches!(rec.done[&102], Err(Error::InvalidArgument(_))),
        "{:?}",
        rec.done[&102]
    );
    assert!(rec.done[&103].is_ok(), "an empty write is a no-op");
    for i in 0..40 {
        assert!(rec.done[&(i as u64)].is_ok(), "write {i}");
        assert_eq!(
            &read_block(&dev, i)[..],
            &pattern(i as u64)[..],
            "block {i}"
        );
    }
    for b in [50, 51] {
        assert!(
            read_block(&dev, b).iter().all(|&x| x == 0),
            "block {b} was written"
        );
    }
    assert_eq!(dev.stats().writes, 40, "bad writes are not submitted");
}

#[test]
fn a_read_only_device_fails_every_streamed_write() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(16);
    let cfg = UringConfig {
        queue_depth: 4,
        batch: 4,
        read_only: true,
        ..UringConfig::default()
    };
    let dev = UringDevice::open_with(&path, &cfg).unwrap();
    let mut rec = Recorder::new((0..8).map(|i| write(i, i as u64)));
    dev.submit_stream(&mut rec);
    assert_eq!(rec.done.len(), 8);
    assert!(rec.done.values().all(|r| matches!(r, Err(Error::ReadOnly))));
    assert_eq!(dev.stats().writes, 0);
}

/// A stream whose `next_write` takes a lock at its `gate_at`-th write,
/// telling `reached` first.
struct Gated {
    inner: Recorder,
    calls: usize,
    gate_at: usize,
    gate: Arc<Mutex<()>>,
    reached: mpsc::Sender<()>,
}

impl WriteStream for Gated {
    fn next_write(&mut self) -> Option<OwnedWrite> {
        self.calls += 1;
        if self.calls == self.gate_at {
            self.reached.send(()).unwrap();
            drop(self.gate.lock().unwrap());
        }
        self.inner.next_write()
    }

    fn complete(&mut self, write: OwnedWrite, result: Result<()>) {
        self.inner.complete(write, result);
    }
}

#[test]
fn a_stream_waiting_on_a_reader_of_the_same_device_does_not_deadlock() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(512);
    let dev = Arc::new(open(&path, 8, 8));
    // Block 500 holds a known pattern for the reader.
    dev.write_at(500 * BLOCK as u64, &pattern(500)).unwrap();
    let gate = Arc::new(Mutex::new(()));
    let (holding_tx, holding_rx) = mpsc::channel();
    let (reached_tx, reached_rx) = mpsc::channel();
    let (read_tx, read_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    // B: holds the gate (a folio lock, in the writeback), and once A's
    // stream is waiting for it, reads from the device before letting go.
    let b = {
        let (dev, gate) = (Arc::clone(&dev), Arc::clone(&gate));
        std::thread::spawn(move || {
            let held = gate.lock().unwrap();
            holding_tx.send(()).unwrap();
            reached_rx.recv().unwrap();
            let got = read_block(&*dev, 500);
            drop(held);
            read_tx.send(got).unwrap();
        })
    };
    holding_rx.recv().unwrap();
    // A: a long stream whose 100th `next_write` waits for the gate, while
    // A holds a ring.
    let a = {
        let (dev, gate) = (Arc::clone(&dev), Arc::clone(&gate));
        std::thread::spawn(move || {
            let mut s = Gated {
                inner: Recorder::new((0..300).map(|i| write(i, i as u64))),
                calls: 0,
                gate_at: 100,
                gate,
                reached: reached_tx,
            };
            dev.submit_stream(&mut s);
            done_tx.send(()).unwrap();
            s.inner
        })
    };
    // Watchdogs, not measurements: a deadlock fails instead of hanging.
    let got = read_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("read_at blocked while a stream held the device's ring: deadlock");
    assert_eq!(&got[..], &pattern(500)[..]);
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the stream did not finish after the gate opened");
    b.join().unwrap();
    let rec = a.join().unwrap();
    assert_eq!(rec.done.len(), 300);
    assert!(rec.done.values().all(Result::is_ok));
    assert!(dev.rings() >= 2, "the reader had a ring of its own");
    for i in (0..300).step_by(37) {
        assert_eq!(
            &read_block(&*dev, i)[..],
            &pattern(i as u64)[..],
            "block {i}"
        );
    }
    dev.flush().unwrap();
}
