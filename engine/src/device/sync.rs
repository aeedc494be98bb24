//! `SyncDevice`: the pread/pwrite backend (optionally O_DIRECT), the
//! baseline the io_uring backend must beat.
//!
//! A request with several segments is one `preadv`/`pwritev`, so a
//! writeback run that spans folios costs one syscall. Alignment is queried
//! from the kernel (BLKSSZGET for block devices, `statx(STATX_DIOALIGN)` for
//! files opened O_DIRECT), never assumed.

use super::open::OpenOptions;
use super::probe;
use super::segments::{self, Errno};
use super::{check_request, BlockDevice, IoBufs, IoCounters, IoRequest, IoStats};
use crate::align::AlignedBuf;
use crate::error::{Error, IoKind, Result};
use smallvec::SmallVec;
use std::fs;
use std::io::{self, IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A device or image file accessed with pread/pwrite.
#[derive(Debug)]
pub struct SyncDevice {
    file: fs::File,
    path: PathBuf,
    size: u64,
    lbs: u32,
    /// Address alignment an O_DIRECT segment needs; 1 without O_DIRECT.
    mem_align: usize,
    direct: bool,
    read_only: bool,
    counters: IoCounters,
}

impl Drop for SyncDevice {
    fn drop(&mut self) {
        // The image's write lock goes with the device (see probe::unlock).
        super::probe::unlock(&self.file);
    }
}

impl SyncDevice {
    /// Opens the image file or block device at `path`.
    ///
    /// `opts.direct` opens with O_DIRECT, `opts.read_only` with O_RDONLY.
    /// Opened for writing, a mounted device or image (also through a loop
    /// device) is refused, a block device is claimed exclusively (O_EXCL)
    /// and an image file is locked against a second writer for as long as
    /// the device lives (see [`probe::open_for_io`]).
    pub fn open(path: &Path, opts: OpenOptions) -> Result<SyncDevice> {
        let (file, geo) = probe::open_for_io(path, opts.direct, opts.read_only)?;
        Ok(SyncDevice {
            file,
            path: path.to_path_buf(),
            size: geo.size,
            lbs: geo.lbs,
            mem_align: geo.mem_align,
            direct: opts.direct,
            read_only: opts.read_only,
            counters: IoCounters::default(),
        })
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when opened with O_DIRECT.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// The buffer address alignment O_DIRECT needs (1 without O_DIRECT).
    /// Segments not aligned to it go through a bounce buffer.
    pub fn mem_align(&self) -> usize {
        self.mem_align
    }

    fn run(&self, req: &mut IoRequest<'_>) -> Result<()> {
        check_request(req, self.size, self.lbs, self.read_only)?;
        let offset = req.offset;
        let len = req.bufs.len();
        let bounce = segments::needs_bounce(&req.bufs, self.mem_align);
        match &mut req.bufs {
            IoBufs::Read(segs) => {
                if bounce {
                    self.read_bounced(offset, segs)?;
                } else {
                    self.read_segs(offset, segs)?;
                }
                self.counters.record_read(len);
            }
            IoBufs::Write(segs) => {
                if bounce {
                    self.write_bounced(offset, segs)?;
                } else {
                    self.write_segs(offset, segs)?;
                }
                self.counters.record_write(len);
            }
        }
        Ok(())
    }

    /// Reads consecutive device bytes at `offset` into `segs`, continuing
    /// after short reads.
    fn read_segs(&self, offset: u64, segs: &mut [&mut [u8]]) -> Result<()> {
        let total: u64 = segs.iter().map(|s| s.len() as u64).sum();
        let mut done = 0u64;
        while done < total {
            let at = offset + done;
            let fail = |e| Error::io(IoKind::Read, at, total - done, e);
            let n = {
                let mut iov: SmallVec<[IoSliceMut; 4]> = segments::tail_mut(segs, done)
                    .map(IoSliceMut::new)
                    .collect();
                retry_eintr(|| match iov.as_mut_slice() {
                    [one] => rustix::io::pread(&self.file, &mut one[..], at),
                    many => rustix::io::preadv(&self.file, many, at),
                })
                .map_err(fail)?
            };
            if n == 0 {
                return Err(fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the device ended before the read did",
                )));
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `segs` to consecutive device bytes at `offset`, continuing
    /// after short writes.
    fn write_segs(&self, offset: u64, segs: &[&[u8]]) -> Result<()> {
        let total: u64 = segs.iter().map(|s| s.len() as u64).sum();
        let mut done = 0u64;
        while done < total {
            let at = offset + done;
            let fail = |e| Error::io(IoKind::Write, at, total - done, e);
            let iov: SmallVec<[IoSlice; 4]> =
                segments::tail(segs, done).map(IoSlice::new).collect();
            let n = retry_eintr(|| match iov.as_slice() {
                [one] => rustix::io::pwrite(&self.file, one, at),
                many => rustix::io::pwritev(&self.file, many, at),
            })
            .map_err(fail)?;
            if n == 0 {
                return Err(fail(io::Error::from(io::ErrorKind::WriteZero)));
            }
            done += n as u64;
        }
        Ok(())
    }

    /// O_DIRECT read for segments whose memory is not aligned: read into an
    /// aligned buffer, then copy out.
    fn read_bounced(&self, offset: u64, segs: &mut [&mut [u8]]) -> Result<()> {
        let mut bounce = AlignedBuf::zeroed(segs.iter().map(|s| s.len()).sum());
        self.read_segs(offset, &mut [&mut bounce[..]])?;
        segments::scatter(&bounce, segs);
        Ok(())
    }

    /// O_DIRECT write for segments whose memory is not aligned: gather into
    /// an aligned buffer first.
    fn write_bounced(&self, offset: u64, segs: &[&[u8]]) -> Result<()> {
        let bounce = segments::gather(segs);
        self.write_segs(offset, &[&bounce[..]])
    }
}

impl BlockDevice for SyncDevice {
    fn backend(&self) -> &'static str {
        "sync"
    }

    fn describe(&self) -> String {
        if self.direct {
            format!("{} (O_DIRECT)", self.path.display())
        } else {
            self.path.display().to_string()
        }
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
            req.result = Some(self.run(req));
        }
    }

    fn flush(&self) -> Result<()> {
        // fdatasync also flushes the device's volatile write cache (a
        // block device's too), which is what durability needs.
        self.file
            .sync_data()
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
    Ok(Arc::new(SyncDevice::open(path, opts)?))
}

/// Runs `f` again for as long as it is interrupted (EINTR) before moving
/// any byte; every other errno is the call's result (the classes are
/// [`segments::classify`]'s).
fn retry_eintr(mut f: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if segments::classify(e.raw_os_error()) == Errno::Interrupted => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}
