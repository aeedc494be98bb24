//! The flusher: one thread per mount's memory (the kernel's per-bdi
//! writeback worker), and [`CacheMemory`], the handle that owns it.
//!
//! It wakes every `writeback_interval`, when a writer passes the
//! background dirty limit, and when reclaim needs memory. It writes back,
//! oldest-dirtied inode first, every inode while the mount is over the
//! background limit or under pressure, and any inode whose dirty data is
//! older than `dirty_expire`. Its passes are background ones
//! ([`SyncMode::Background`](crate::writeback::SyncMode)): folios already
//! under writeback are skipped, and the device is not flushed; completions
//! that wait for a flush (unwritten conversion) are made durable only
//! under memory pressure, when they pin folios reclaim needs, and
//! otherwise wait for fsync, close or sync.

use crate::error::Result;
use crate::memory::{CacheLimits, MemShared, MemStats};
use crate::writeback;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A mount's cache memory and its flusher thread: shared by the mount and
/// every file open in it; the thread stops when the last one goes.
pub struct CacheMemory {
    shared: Arc<MemShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CacheMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMemory")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl CacheMemory {
    /// Memory under `limits` (checked), with a flusher thread when
    /// `limits.flusher` is set.
    pub fn new(limits: CacheLimits) -> Result<Arc<CacheMemory>> {
        limits.validate()?;
        Ok(Self::start(limits))
    }

    /// Memory under the default limits.
    pub fn with_defaults() -> Arc<CacheMemory> {
        Self::start(CacheLimits::default())
    }

    /// [`new`](Self::new) for limits known to be valid. If the thread
    /// cannot be started the memory works without it (fsync, close and
    /// reclaim write back; writers at the hard limit write back
    /// themselves), and says so on stderr.
    fn start(limits: CacheLimits) -> Arc<CacheMemory> {
        let shared = MemShared::new(limits);
        let mut thread = None;
        if limits.flusher {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name("bufwrite-flush".into())
                .spawn(move || run(&s))
            {
                Ok(h) => {
                    shared.set_has_flusher();
                    thread = Some(h);
                }
                Err(e) => eprintln!("bufwrite: no flusher thread ({e}); writers write back"),
            }
        }
        Arc::new(CacheMemory {
            shared,
            thread: Mutex::new(thread),
        })
    }

    /// The shared state the caches charge.
    pub fn shared(&self) -> &Arc<MemShared> {
        &self.shared
    }

    /// The counters.
    pub fn stats(&self) -> MemStats {
        self.shared.stats()
    }

    /// The limits.
    pub fn limits(&self) -> &CacheLimits {
        self.shared.limits()
    }
}

impl Drop for CacheMemory {
    fn drop(&mut self) {
        self.shared.shutdown();
        let h = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// The thread's loop.
fn run(mem: &MemShared) {
    let interval = mem.limits().writeback_interval;
    loop {
        let (pressure, shutdown) = {
            let g = mem.work.lock().unwrap_or_else(|e| e.into_inner());
            let (mut g, _) = mem
                .work_cv
                .wait_timeout_while(g, interval, |w| !(w.pressure || w.background || w.shutdown))
                .unwrap_or_else(|e| e.into_inner());
            let p = (g.pressure, g.shutdown);
            g.pressure = false;
            g.background = false;
            p
        };
        if shutdown {
            return;
        }
        flush_pass(mem, pressure);
    }
}

/// One round of the flusher (module docs).
fn flush_pass(mem: &MemShared, pressure: bool) {
    let l = *mem.limits();
    let now = mem.now_ms();
    let expire = l.dirty_expire.as_millis() as u64;
    let mut inodes: Vec<_> = mem
        .inodes()
        .into_iter()
        .filter(|m| m.dirtied_when() != 0)
        .collect();
    inodes.sort_by_key(|m| m.dirtied_when());
    for m in &inodes {
        let expired = now.saturating_sub(m.dirtied_when()) >= expire;
        let over = mem.nr_dirty() > l.dirty_background;
        if !(over || pressure || expired) {
            continue;
        }
        // Errors are recorded for the inode's files (errseq) by the pass.
        if let Ok(s) = writeback::background(m, None) {
            mem.flusher_bytes
                .fetch_add(s.bytes, std::sync::atomic::Ordering::Relaxed);
        }
        mem.flusher_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if pressure {
        for m in mem.inodes() {
            let _ = m.flush_pending_io();
        }
    }
}
