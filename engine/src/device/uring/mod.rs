//! `UringDevice`: the io_uring backend (O_DIRECT on an image file or a block
//! device).
//!
//! A batch from the page cache goes to the kernel as it is: each request's
//! scatter list becomes one Read/Write (one segment) or Readv/Writev SQE
//! over the folios' own memory, so aligned buffers are never copied
//! (misaligned ones go through an aligned bounce buffer). At most
//! `queue_depth` requests are in flight; completions are matched by slot
//! index, short transfers are resubmitted for the rest, and the call
//! returns only once every request has completed. A flush is an fsync
//! (DATASYNC) issued after all of the data completions it must cover.
//!
//! [`BlockDevice::submit_stream`] streams: the next owned write is pulled
//! as soon as a slot is free and each completion is handed back as it is
//! reaped, with no barrier (see `ring::Ring::stream`).
//!
//! A device keeps a small pool of rings, one per concurrent submitter
//! (see [`MAX_RINGS`]): a long `submit_stream` holds its ring while its
//! `next_write` takes folio locks, and a writer holding one of those locks
//! may read from the same device meanwhile; with a single ring that is a
//! deadlock. Every ring has the same queue depth, batch, registered file
//! and registered buffers.
//!
//! Registration is off by default because it measured no gain here:
//! `bufwrite writeback --compare-registered-file` at QD 32 with 4 KiB I/Os on
//! a virtio disk gave differences inside the run-to-run noise (the device,
//! not the per-I/O fd lookup, is the limit). `UringConfig::register_file`
//! turns it on (falling back to the fd if registration fails).
//!
//! Registered buffers are an opt-in capability, off by default and unused
//! by the page cache: [`UringDevice::register_buffers`] takes ownership of
//! a set of buffers, and requests over them go out as WriteFixed/ReadFixed.
//! Measured with `bufwrite writeback --backend uring --qd 32 --io-size
//! 4K,64K --layout seq,random --total 64M --runs 5
//! --compare-registered-buffers` (2 cores, virtio disk, 6 invocations,
//! plain and registered alternated run by run). Median MB/s over the six
//! invocations, then the spread of the per-invocation gain:
//!
//! | I/O  | layout | plain | registered | gain per invocation |
//! |------|--------|------:|-----------:|---------------------|
//! | 4K   | seq    | 321.7 | 330.1      | -1.6 % .. +8.8 % (median +5.0 %)  |
//! | 4K   | random | 129.5 | 139.8      | +0.3 % .. +18.6 % (median +5.2 %) |
//! | 64K  | seq    | 450.1 | 517.4      | -9.7 % .. +60 % (median +9.9 %)   |
//! | 64K  | random | 409.6 | 475.2      | +5.3 % .. +57 % (median +10.6 %)  |
//!
//! At 4 KiB, where sparing the per-I/O page pinning should matter most, the
//! gain is a few percent and never consistently above the disk's noise
//! (runs of one set-up vary by 10-30 %); the 64 KiB figures lean the same
//! way but swing from -10 % to +60 % between invocations. Not enough to
//! make the page cache own a registered arena, so it stays off.

mod ring;
mod setup;
mod slots;

use super::open::OpenOptions;
use super::probe::{self, Geometry};
use super::{check_request, BlockDevice, IoCounters, IoRequest, IoStats};
use crate::align::AlignedBuf;
use crate::error::{Error, IoKind, Result};
use ring::{Ctx, Limits, Ring, Target};
pub use setup::probe;
use setup::setup_ring;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// Largest queue depth accepted (the kernel allows more; nothing here needs it).
pub const MAX_QUEUE_DEPTH: u32 = 4096;

/// Most rings one device sets up: one per concurrent submitter, created
/// when a submitter finds every existing ring busy; past this many, a
/// submitter waits for one to come back.
pub const MAX_RINGS: usize = 8;

/// How to set up a [`UringDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringConfig {
    /// Most requests in flight at once (1 ..= [`MAX_QUEUE_DEPTH`]); the SQ
    /// has this many entries and the CQ twice as many.
    pub queue_depth: u32,
    /// SQEs queued before the kernel is entered to submit them (1 ..=
    /// `queue_depth`); the default submits a full queue per call.
    pub batch: u32,
    /// Register the descriptor with the ring (falls back to the plain fd
    /// when registration fails). Off by default: no measured gain.
    pub register_file: bool,
    /// Refuse writes.
    pub read_only: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            queue_depth: 32,
            batch: 32,
            register_file: false,
            read_only: false,
        }
    }
}

impl UringConfig {
    /// The config an [`OpenOptions`] asks for.
    pub fn from_open_options(opts: &OpenOptions) -> Self {
        UringConfig {
            queue_depth: opts.queue_depth,
            batch: opts.queue_depth,
            read_only: opts.read_only,
            ..UringConfig::default()
        }
    }
}

/// The io_uring backend.
pub struct UringDevice {
    file: std::fs::File,
    desc: String,
    size: u64,
    lbs: u32,
    mem_align: usize,
    read_only: bool,
    fixed_file: bool,
    queue_depth: u32,
    batch: u32,
    /// Whether rings register the descriptor (`UringConfig::register_file`).
    register_file: bool,
    rings: Pool,
    counters: IoCounters,
    /// ReadFixed/WriteFixed SQEs, over every ring.
    fixed_sqes: AtomicU64,
    /// Held by [`UringDevice::register_buffers`], one call at a time.
    registering: Mutex<()>,
    /// Buffers handed over by [`UringDevice::register_buffers`]. Declared
    /// after `rings` so that they are freed only after the rings (and their
    /// registrations) are gone; never replaced once set.
    fixed_bufs: OnceLock<FixedBufs>,
}

/// The buffers owned by a device and whether the kernel took them.
struct FixedBufs {
    bufs: Vec<AlignedBuf>,
    /// Whether the first ring's registration succeeded (what
    /// [`UringDevice::buffers_registered`] reports).
    registered: bool,
}

impl FixedBufs {
    /// The iovecs the kernel is given for these buffers.
    fn iovecs(bufs: &[AlignedBuf]) -> Vec<libc::iovec> {
        bufs.iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            })
            .collect()
    }
}

/// The device's rings: those not lent out, and how many exist.
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a ring comes back.
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Ring>,
    /// Rings in existence (idle or lent out).
    created: usize,
    /// Most rings to have: [`MAX_RINGS`], lowered to `created` when setting
    /// up another one fails (the kernel's limits), so it is not retried on
    /// every call.
    cap: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Never held across I/O or a callback, only over Vec pushes and
        // pops: a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A ring lent to one submitter; it goes back to the pool when dropped
/// (also while unwinding: the ring's own guard has emptied it by then).
struct Lent<'d> {
    pool: &'d Pool,
    ring: Option<Ring>,
}

impl std::ops::Deref for Lent<'_> {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        self.ring
            .as_ref()
            .expect("a lent ring is present until dropped")
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Ring {
        self.ring
            .as_mut()
            .expect("a lent ring is present until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            self.pool.lock().idle.push(ring);
            self.pool.returned.notify_one();
        }
    }
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("desc", &self.desc)
            .field("size", &self.size)
            .field("lbs", &self.lbs)
            .field("mem_align", &self.mem_align)
            .field("queue_depth", &self.queue_depth)
            .field("fixed_file", &self.fixed_file)
            .finish_non_exhaustive()
    }
}

impl UringDevice {
    /// Opens `path` (an image file or a block device) as [`OpenOptions`] say;
    /// `direct` is implied.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Self> {
        Self::open_with(path, &UringConfig::from_open_options(&opts))
    }

    /// Opens `path` with O_DIRECT and sets up a ring. Opened for writing, a
    /// mounted device or image (also through a loop device) is refused, a
    /// block device is claimed exclusively (O_EXCL) and an image file is
    /// locked against a second writer for as long as the device lives (see
    /// [`probe::open_for_io`]).
    pub fn open_with(path: &Path, cfg: &UringConfig) -> Result<Self> {
        check_config(cfg)?;
        let (file, geo) = probe::open_for_io(path, true, cfg.read_only)?;
        Self::build(file, path.display().to_string(), geo, cfg)
    }

    /// Wraps a descriptor opened by the caller (it should be O_DIRECT, or
    /// the host page cache sits below this one). `size` and `lbs` are taken
    /// as given: requests are checked against them before submission.
    pub fn from_file(
        file: std::fs::File,
        desc: String,
        size: u64,
        lbs: u32,
        cfg: &UringConfig,
    ) -> Result<Self> {
        check_config(cfg)?;
        if !lbs.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "logical block size {lbs} is not a power of two"
            )));
        }
        let geo = Geometry {
            size,
            lbs,
            mem_align: lbs as usize,
        };
        Self::build(file, desc, geo, cfg)
    }

    fn build(file: std::fs::File, desc: String, geo: Geometry, cfg: &UringConfig) -> Result<Self> {
        let first = new_ring(&file, cfg.queue_depth, cfg.batch, cfg.register_file)?;
        Ok(UringDevice {
            file,
            desc,
            size: geo.size,
            lbs: geo.lbs,
            mem_align: geo.mem_align,
            read_only: cfg.read_only,
            fixed_file: first.fixed_file(),
            queue_depth: cfg.queue_depth,
            batch: cfg.batch,
            register_file: cfg.register_file,
            rings: Pool {
                state: Mutex::new(PoolState {
                    idle: vec![first],
                    created: 1,
                    cap: MAX_RINGS,
                }),
                returned: Condvar::new(),
            },
            counters: IoCounters::default(),
            fixed_sqes: AtomicU64::new(0),
            registering: Mutex::new(()),
            fixed_bufs: OnceLock::new(),
        })
    }

    /// Lends a ring: an idle one, else a new one while there are fewer
    /// than [`MAX_RINGS`], else the next one returned. Registered buffers
    /// are registered with a ring the first time it is lent after
    /// [`UringDevice::register_buffers`].
    ///
    /// A submitter that needs a second ring on its own thread (a stream
    /// callback reading from this device) when no other can be had waits
    /// forever: only with [`MAX_RINGS`] such submitters at once, or when
    /// the kernel refuses every ring past the first.
    fn ring(&self) -> Lent<'_> {
        let mut st = self.rings.lock();
        let ring = loop {
            if let Some(r) = st.idle.pop() {
                break r;
            }
            if st.created < st.cap {
                st.created += 1;
                drop(st);
                let made = new_ring(&self.file, self.queue_depth, self.batch, self.register_file);
                st = self.rings.lock();
                match made {
                    Ok(r) => break r,
                    Err(_) => {
                        st.created -= 1;
                        st.cap = st.created.max(1);
                        continue;
                    }
                }
            }
            st = self
                .rings
                .returned
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        };
        drop(st);
        let mut lent = Lent {
            pool: &self.rings,
            ring: Some(ring),
        };
        self.register_fixed_bufs(&mut lent);
        lent
    }

    /// Registers the device's buffers with `ring` if they were registered
    /// with the first ring and this ring has not tried yet. A failure
    /// leaves this ring on plain SQEs (the requests are the same).
    fn register_fixed_bufs(&self, ring: &mut Ring) {
        let Some(fixed) = self.fixed_bufs.get() else {
            return;
        };
        if !fixed.registered || ring.buffers_tried {
            return;
        }
        ring.buffers_tried = true;
        let iovs = FixedBufs::iovecs(&fixed.bufs);
        // SAFETY: the iovecs point into `self.fixed_bufs`' buffers, which
        // are never replaced, moved or freed while `self` lives, and the
        // field is dropped after `rings` (and `Drop` unregisters every ring
        // first), so the memory outlives this ring's registration.
        let _ = unsafe { ring.register_buffers(&iovs) };
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            mem_align: self.mem_align,
            counters: &self.counters,
            fixed_sqes: &self.fixed_sqes,
        }
    }

    /// Rings set up so far (1 ..= [`MAX_RINGS`]): the most submitters that
    /// ran at once, in effect.
    pub fn rings(&self) -> usize {
        self.rings.lock().created
    }

    /// Most requests in flight.
    pub fn queue_depth(&self) -> u32 {
        self.queue_depth
    }

    /// SQEs queued per kernel entry.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// True when SQEs use the registered file instead of the fd.
    pub fn fixed_file(&self) -> bool {
        self.fixed_file
    }

    /// Buffer address alignment O_DIRECT needs here; buffers aligned to it
    /// go to the kernel without a copy.
    pub fn mem_align(&self) -> usize {
        self.mem_align
    }

    /// The open descriptor (for queries; I/O goes through the ring).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Takes ownership of `bufs` and registers them with the ring (buffer
    /// index = position). Afterwards, a request whose memory is one segment
    /// lying entirely inside one of them (borrowed through
    /// [`UringDevice::registered_buffers`]) is submitted as
    /// WriteFixed/ReadFixed, which spares the kernel pinning and mapping the
    /// pages per I/O. Every other request is unchanged.
    ///
    /// Returns `Ok(true)` when registered and `Ok(false)` when the kernel
    /// refused (ENOMEM past RLIMIT_MEMLOCK without CAP_IPC_LOCK, EPERM,
    /// EINVAL for an empty list, a zero-length or over-1-GiB buffer, or more
    /// than 16384 buffers, EFAULT): the buffers are kept all the same and
    /// requests over them are plain writes, so callers need no second path.
    /// Only one set of buffers per device: a second call is an error.
    ///
    /// The device owns the buffers (rather than borrowing them) because the
    /// kernel serves fixed SQEs from the pages it pinned at registration:
    /// the memory must outlive the registration, which a safe borrow could
    /// not promise. They are freed after the ring is unregistered and
    /// dropped. Their contents are fixed at registration (fill them
    /// first): the device only hands out shared references.
    ///
    /// Off unless called. Measured (`bufwrite writeback
    /// --compare-registered-buffers`, see `benches/src/writeback/`):
    /// see the module documentation for the figures.
    ///
    /// With several rings (see [`MAX_RINGS`]), the buffers are registered
    /// with the ring this call borrows, then with every other ring the next
    /// time it is lent (only if this first registration succeeded); a ring
    /// whose own registration fails sends plain SQEs.
    pub fn register_buffers(&self, bufs: Vec<AlignedBuf>) -> Result<bool> {
        // Serialises concurrent calls: a second caller finds the cell set.
        let _one = self.registering.lock().unwrap_or_else(|e| e.into_inner());
        if self.fixed_bufs.get().is_some() {
            return Err(Error::InvalidArgument(
                "buffers are already registered with this device".to_string(),
            ));
        }
        let mut ring = self.ring();
        ring.buffers_tried = true;
        let iovs = FixedBufs::iovecs(&bufs);
        // SAFETY: the iovecs point into `bufs`, whose heap memory does not
        // move when the Vec is moved into `self.fixed_bufs` just below. That
        // cell is never replaced or emptied while `self` lives, and the
        // field is dropped after `rings` (and `Drop` unregisters first), so
        // the memory outlives the registration. Should the `set` below not
        // happen (it cannot fail: checked empty under `registering`), the
        // ring is unregistered before `bufs` is dropped.
        let registered = unsafe { ring.register_buffers(&iovs) }.is_ok();
        if let Err(FixedBufs { bufs, .. }) = self.fixed_bufs.set(FixedBufs { bufs, registered }) {
            let _ = ring.unregister_buffers();
            drop(bufs);
        }
        Ok(registered)
    }

    /// The buffers given to [`UringDevice::register_buffers`] (empty before
    /// that call). Requests over them use the fixed opcodes when
    /// [`UringDevice::buffers_registered`] is true.
    pub fn registered_buffers(&self) -> &[AlignedBuf] {
        self.fixed_bufs.get().map_or(&[], |f| &f.bufs)
    }

    /// True when the kernel accepted the buffers of
    /// [`UringDevice::register_buffers`].
    pub fn buffers_registered(&self) -> bool {
        self.fixed_bufs.get().is_some_and(|f| f.registered)
    }

    /// ReadFixed/WriteFixed SQEs submitted so far (resubmissions of short
    /// transfers included), summed over every ring: how many I/Os used the
    /// registered buffers.
    pub fn fixed_sqes(&self) -> u64 {
        self.fixed_sqes.load(Ordering::Relaxed)
    }
}

/// Sets up one ring over `file`, registering the descriptor when asked
/// (falling back to the fd if the kernel refuses).
fn new_ring(file: &std::fs::File, qd: u32, batch: u32, register_file: bool) -> Result<Ring> {
    let uring = setup_ring(qd)?;
    let fd = file.as_raw_fd();
    let fixed = register_file && uring.submitter().register_files(&[fd]).is_ok();
    let target = if fixed { Target::Fixed } else { Target::Fd(fd) };
    Ok(Ring::new(uring, target, qd as usize, batch as usize))
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // Nothing is lent out (`&mut self`): every ring is idle. A panic
        // inside a ring's loop (a bug) leaves it empty, its guard having
        // waited for every in-flight CQE, so all are as good as new.
        let rings = std::mem::take(&mut self.rings.lock().idle);
        for mut ring in rings {
            // A ring's teardown is asynchronous, and a registered file is
            // only released with it: a block device would stay claimed
            // (O_EXCL) for a moment after the drop, and a mkfs or mount
            // right after would see it busy. Unregistering waits for the
            // table to be released.
            if ring.fixed_file() {
                let _ = ring.unregister_files();
            }
            // Also drop the pinned pages now, before the buffers are freed.
            let _ = ring.unregister_buffers();
        }
        // The image's write lock goes with the device (see probe::unlock).
        super::probe::unlock(&self.file);
    }
}

fn check_config(cfg: &UringConfig) -> Result<()> {
    if cfg.queue_depth == 0 || cfg.queue_depth > MAX_QUEUE_DEPTH {
        return Err(Error::InvalidArgument(format!(
            "queue depth {} (must be 1 ..= {MAX_QUEUE_DEPTH})",
            cfg.queue_depth
        )));
    }
    if cfg.batch == 0 || cfg.batch > cfg.queue_depth {
        return Err(Error::InvalidArgument(format!(
            "batch {} (must be 1 ..= the queue depth {})",
            cfg.batch, cfg.queue_depth
        )));
    }
    Ok(())
}

impl BlockDevice for UringDevice {
    fn backend(&self) -> &'static str {
        "uring"
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn logical_block_size(&self) -> u32 {
        self.lbs
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        for req in batch.iter_mut() {
            req.result = check_request(req, self.size, self.lbs, self.read_only)
                .err()
                .map(Err);
        }
        let ctx = self.ctx();
        let mut ring = self.ring();
        ring.run(batch, &ctx);
        debug_assert_eq!(ring.in_flight(), 0, "run returned with requests in flight");
    }

    /// Streams: up to the queue depth in flight on one ring of the pool,
    /// the next write pulled as soon as a slot is free, each completion
    /// handed to `stream.complete` as it is reaped (never from inside
    /// `next_write` or `complete`: only from this loop). Each write is
    /// checked as [`check_request`] checks a request (and its `len` against
    /// its buffer) and, when bad, completed with the error unsubmitted.
    /// Should `next_write` or `complete` panic, the writes in flight are
    /// waited for and dropped (not completed), and the panic goes on.
    fn submit_stream(&self, stream: &mut dyn super::WriteStream) {
        let limits = Limits {
            size: self.size,
            lbs: self.lbs,
            read_only: self.read_only,
        };
        let ctx = self.ctx();
        let mut ring = self.ring();
        ring.stream(stream, limits, &ctx);
        debug_assert_eq!(ring.in_flight(), 0, "stream returned with writes in flight");
    }

    /// An fsync (DATASYNC) through any idle ring: it covers every write
    /// that completed before it, on whichever ring (the sync is of the
    /// file, not of a ring); writes still in flight on other rings are not
    /// covered, as they would not be with one ring.
    fn flush(&self) -> Result<()> {
        self.ring()
            .flush()
            .map_err(|e| Error::io(IoKind::Flush, 0, 0, e))?;
        self.counters.record_flush();
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.counters.snapshot()
    }
}

/// Opens `path` with this backend, as a shared device.
pub fn open(path: &Path, opts: OpenOptions) -> Result<Arc<dyn BlockDevice>> {
    Ok(Arc::new(UringDevice::open(path, opts)?))
}

#[cfg(test)]
mod tests {
    use super::ring::PanicAt;
    use super::*;
    use std::panic::{self, AssertUnwindSafe};

    const BLOCK: usize = 4096;
    const BLOCKS: usize = 32;

    /// A device over a patterned image of `BLOCKS` blocks (block `i` holds
    /// byte `i + 1`), or `None` where io_uring is unavailable.
    fn device(qd: u32, batch: u32) -> Option<(tempfile::TempDir, UringDevice)> {
        if probe().is_err() {
            eprintln!("SKIP: io_uring unavailable");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bufwrite-ring-unwind")
            .tempdir_in("/tmp")
            .ok()?;
        let path = dir.path().join("image");
        let data: Vec<u8> = (0..BLOCKS)
            .flat_map(|i| std::iter::repeat_n(i as u8 + 1, BLOCK))
            .collect();
        std::fs::write(&path, &data).ok()?;
        let file = std::fs::File::open(&path).ok()?;
        let cfg = UringConfig {
            queue_depth: qd,
            batch,
            read_only: true,
            ..UringConfig::default()
        };
        let size = (BLOCKS * BLOCK) as u64;
        let dev = UringDevice::from_file(file, "unwind".into(), size, 512, &cfg).ok()?;
        Some((dir, dev))
    }

    /// Reads every block into fresh buffers; odd iterations use a
    /// misaligned start so that bounce buffers are in flight too.
    fn read_all(dev: &UringDevice, bufs: &mut [AlignedBuf], shift: usize) {
        let mut batch: Vec<IoRequest<'_>> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| IoRequest::read((i * BLOCK) as u64, &mut b[shift..shift + BLOCK]))
            .collect();
        dev.submit(&mut batch);
        for r in &mut batch {
            r.take_result().unwrap();
        }
    }

    fn fresh(n: usize, fill: u8) -> Vec<AlignedBuf> {
        (0..n)
            .map(|_| {
                let mut b = AlignedBuf::zeroed(BLOCK + 512);
                b.fill(fill);
                b
            })
            .collect()
    }

    /// Panics inside the loop at `at`, then checks that nothing is in
    /// flight, that the freed buffers' memory (reallocated and marked) is
    /// not written by a late completion, and that the ring still works.
    fn panic_then_reuse(at: PanicAt, rounds: usize) -> Vec<Option<usize>> {
        let Some((_dir, dev)) = device(8, 2) else {
            return Vec::new();
        };
        let mut seen = Vec::new();
        for round in 0..rounds {
            let shift = if round % 2 == 0 { 0 } else { 512 };
            let mut bufs = fresh(BLOCKS, 0);
            dev.ring().panic_at = Some(at);
            let caught = panic::catch_unwind(AssertUnwindSafe(|| {
                read_all(&dev, &mut bufs, shift);
            }));
            assert!(caught.is_err(), "the hook did not fire ({at:?})");
            {
                let ring = dev.ring();
                assert_eq!(ring.in_flight(), 0, "requests left in flight");
                seen.push(ring.in_flight_at_panic);
            }
            drop(bufs);
            // Likely the same memory again: a late read would overwrite it.
            let marked = fresh(BLOCKS, 0xEE);
            let mut good = fresh(BLOCKS, 0);
            read_all(&dev, &mut good, shift);
            for (i, b) in good.iter().enumerate() {
                assert!(b[shift..shift + BLOCK].iter().all(|&x| x == i as u8 + 1));
            }
            assert!(marked.iter().all(|b| b.iter().all(|&x| x == 0xEE)));
        }
        seen
    }

    #[test]
    #[cfg_attr(miri, ignore = "io_uring syscalls")]
    fn a_panic_after_queueing_waits_for_every_request_in_flight() {
        // batch 2, qd 8: the 5th push comes before any reap, so exactly
        // five requests are queued or running when the hook fires.
        for n in panic_then_reuse(PanicAt::Push(5), 50) {
            assert_eq!(n, Some(5));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "io_uring syscalls")]
    fn a_panic_while_processing_a_completion_waits_for_the_rest() {
        let seen = panic_then_reuse(PanicAt::Complete(2), 50);
        assert!(seen.iter().all(Option::is_some));
    }

    /// A writable device over a zeroed image of `BLOCKS` blocks.
    fn writable(qd: u32, batch: u32) -> Option<(tempfile::TempDir, UringDevice)> {
        if probe().is_err() {
            eprintln!("SKIP: io_uring unavailable");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bufwrite-stream-unwind")
            .tempdir_in("/tmp")
            .ok()?;
        let path = dir.path().join("image");
        std::fs::write(&path, vec![0u8; BLOCKS * BLOCK]).ok()?;
        let cfg = UringConfig {
            queue_depth: qd,
            batch,
            ..UringConfig::default()
        };
        Some((dir, UringDevice::open_with(&path, &cfg).ok()?))
    }

    /// Writes block `i` with byte `fill + i` for `i < BLOCKS`; panics at
    /// the `panic_next`-th `next_write` or the `panic_complete`-th
    /// completion (from 1) when set.
    struct Panicky {
        fill: u8,
        handed: usize,
        completed: usize,
        panic_next: Option<usize>,
        panic_complete: Option<usize>,
        outstanding_at_panic: Option<usize>,
    }

    impl Panicky {
        fn new(fill: u8) -> Self {
            Panicky {
                fill,
                handed: 0,
                completed: 0,
                panic_next: None,
                panic_complete: None,
                outstanding_at_panic: None,
            }
        }
    }

    impl super::super::WriteStream for Panicky {
        fn next_write(&mut self) -> Option<super::super::OwnedWrite> {
            if self.panic_next == Some(self.handed + 1) {
                self.outstanding_at_panic = Some(self.handed - self.completed);
                panic!("test: next_write panics");
            }
            if self.handed == BLOCKS {
                return None;
            }
            let i = self.handed;
            self.handed += 1;
            let mut buf = AlignedBuf::zeroed(BLOCK);
            buf.fill(self.fill.wrapping_add(i as u8));
            Some(super::super::OwnedWrite {
                offset: (i * BLOCK) as u64,
                buf,
                len: BLOCK,
                tag: i as u64,
            })
        }

        fn complete(&mut self, w: super::super::OwnedWrite, r: Result<()>) {
            r.unwrap();
            assert_eq!(w.offset, w.tag * BLOCK as u64);
            self.completed += 1;
            if self.panic_complete == Some(self.completed) {
                self.outstanding_at_panic = Some(self.handed - self.completed);
                panic!("test: complete panics");
            }
        }
    }

    /// True when blocks `0 .. n` hold what a [`Panicky`] with `fill` wrote.
    fn landed(dev: &UringDevice, fill: u8, n: usize) -> bool {
        let mut b = AlignedBuf::zeroed(BLOCK);
        (0..n).all(|i| {
            dev.read_at((i * BLOCK) as u64, &mut b).unwrap();
            b.iter().all(|&x| x == fill.wrapping_add(i as u8))
        })
    }

    #[test]
    #[cfg_attr(miri, ignore = "io_uring syscalls")]
    fn a_panicking_stream_waits_for_its_writes_and_the_device_works_after() {
        let Some((_dir, dev)) = writable(8, 2) else {
            return;
        };
        for round in 0..40u8 {
            let fill = round.wrapping_mul(40);
            let mut s = Panicky::new(fill);
            if round % 2 == 0 {
                // The 8th pull comes before any reap: 7 writes are queued
                // or running when it panics.
                s.panic_next = Some(8);
            } else {
                s.panic_complete = Some(3);
            }
            let caught = panic::catch_unwind(AssertUnwindSafe(|| dev.submit_stream(&mut s)));
            assert!(caught.is_err(), "the panic did not propagate");
            if round % 2 == 0 {
                assert_eq!(s.outstanding_at_panic, Some(7));
            }
            assert_eq!(dev.ring().in_flight(), 0, "writes left in flight");
            // Every write handed out was waited for, so it has landed.
            assert!(landed(&dev, fill, s.handed), "round {round}");
            // And the device (the same ring) streams as before.
            let mut good = Panicky::new(fill.wrapping_add(7));
            dev.submit_stream(&mut good);
            assert_eq!((good.handed, good.completed), (BLOCKS, BLOCKS));
            assert!(landed(&dev, fill.wrapping_add(7), BLOCKS));
        }
        assert_eq!(dev.rings(), 1, "one submitter at a time needs one ring");
    }

    #[test]
    #[cfg_attr(miri, ignore = "io_uring syscalls")]
    fn registered_buffers_are_used_by_every_ring() {
        let Some((_dir, dev)) = writable(4, 4) else {
            return;
        };
        let mut arena = AlignedBuf::zeroed(4 * BLOCK);
        arena.fill(0x5A);
        if !dev.register_buffers(vec![arena]).unwrap() {
            eprintln!("SKIP: buffer registration refused here");
            return;
        }
        // Two rings: one lent out while the other submits.
        let held = dev.ring();
        let bufs = dev.registered_buffers();
        dev.write_at(0, &bufs[0][..BLOCK]).unwrap();
        drop(held);
        assert_eq!(dev.rings(), 2);
        assert_eq!(dev.fixed_sqes(), 1, "the second ring used the fixed buffer");
        dev.write_at(BLOCK as u64, &bufs[0][BLOCK..2 * BLOCK])
            .unwrap();
        assert_eq!(dev.fixed_sqes(), 2);
        let mut b = AlignedBuf::zeroed(2 * BLOCK);
        dev.read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x5A));
    }
}
