//! The ext4 journal (jbd2): its on-disk format ([`format`]), a log writer
//! ([`log::JournalWriter`]) and recovery ([`recovery`]), for the internal
//! journal (the journal inode) only.
//!
//! [`Journal`] is the journal as found on an image: its superblock and the
//! map from log blocks to device blocks, every log block number
//! bounds-checked against the journal and every device block against the
//! filesystem before it is read or written.

pub mod format;
pub mod log;
pub mod recovery;

use crate::error::{Ext4Error, Result};
use crate::fs::Ext4;
use crate::superblock::{compat, incompat, Superblock, SUPERBLOCK_OFFSET};
use bufwrite_engine::BlockDevice;
use format::JournalSuperblock;
use std::sync::Arc;

pub use log::{JournalWriter, LoggedTransaction};
pub use recovery::{RecoveryReport, ScanStop, SkipReason};

/// The internal journal of an image: where its blocks are and what its
/// superblock says.
pub struct Journal {
    dev: Arc<dyn BlockDevice>,
    /// `(log block, device block, length)` runs of the journal inode, sorted.
    map: Vec<(u64, u64, u64)>,
    /// Sorted, merged `[start, end)` device block runs of the journal.
    runs: Vec<(u64, u64)>,
    sb: JournalSuperblock,
    /// The raw journal superblock block (fields bufwrite does not change
    /// are written back as found).
    sb_raw: Vec<u8>,
    block_size: u32,
    /// The filesystem's first data block and block count: replay writes
    /// only inside `[first_data_block, blocks_count)`.
    first_data_block: u64,
    blocks_count: u64,
    journal_ino: u32,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("inode", &self.journal_ino)
            .field("superblock", &self.sb)
            .field("runs", &self.runs)
            .finish()
    }
}

/// Why the image's journal cannot be used at all, or `None`: no journal,
/// or an external one (which bufwrite does not open).
fn journal_refusal(sb: &Superblock) -> Option<String> {
    if sb.feature_compat & compat::HAS_JOURNAL == 0 {
        return Some("the filesystem has no journal (has_journal is off)".into());
    }
    if sb.journal_inum == 0 {
        let uuid = sb.journal_uuid.iter().any(|&b| b != 0);
        return Some(format!(
            "the journal is external (s_journal_inum 0, device {:#x}{}): bufwrite opens internal journals only",
            sb.journal_dev,
            if uuid { ", with a journal UUID" } else { "" }
        ));
    }
    if sb.has_incompat(incompat::JOURNAL_DEV) {
        return Some("this image is an external journal device, not a filesystem".into());
    }
    None
}

impl Journal {
    /// Finds the internal journal of `fs`: its inode, the inode's block
    /// map, the journal superblock (checked, see
    /// [`JournalSuperblock::parse`] and
    /// [`JournalSuperblock::check_geometry`]).
    pub fn open(fs: &Ext4) -> Result<Journal> {
        Self::open_on(fs, Arc::clone(fs.device()))
    }

    /// As [`Journal::open`], reading and writing through `dev` (the
    /// filesystem's own device under any overlay the write side lays over
    /// it).
    pub(crate) fn open_on(fs: &Ext4, dev: Arc<dyn BlockDevice>) -> Result<Journal> {
        let sb = fs.superblock();
        if let Some(why) = journal_refusal(sb) {
            return Err(Ext4Error::Unsupported(why));
        }
        let ino = sb.journal_inum;
        let inode = fs.read_inode(ino)?;
        let extents = fs.map_inode(&inode)?;
        let bs = u64::from(sb.block_size);
        let inode_blocks = inode.size / bs;
        let mut map: Vec<(u64, u64, u64)> = Vec::new();
        for e in &extents {
            if e.pblk < u64::from(sb.first_data_block)
                || e.pblk.saturating_add(e.len) > sb.blocks_count
            {
                return Err(Ext4Error::JournalCorrupt(format!(
                    "journal inode {ino} maps file blocks {}.. to device blocks {}..{}, outside the filesystem",
                    e.lblk,
                    e.pblk,
                    e.pblk.saturating_add(e.len)
                )));
            }
            map.push((e.lblk, e.pblk, e.len));
        }
        map.sort_unstable();
        let mut runs: Vec<(u64, u64)> = map.iter().map(|&(_, p, l)| (p, p + l)).collect();
        runs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in runs {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut j = Journal {
            dev,
            map,
            runs: merged,
            // Replaced below: a placeholder so that `read_block` can
            // read log block 0 before the superblock is parsed.
            sb: placeholder_sb(),
            sb_raw: Vec::new(),
            block_size: sb.block_size,
            first_data_block: u64::from(sb.first_data_block),
            blocks_count: sb.blocks_count,
            journal_ino: ino,
        };
        // The superblock is log block 0; bound reads by the inode for now.
        j.sb.maxlen = u32::try_from(inode_blocks).unwrap_or(u32::MAX);
        let raw = j.read_block(0)?;
        let jsb = JournalSuperblock::parse(&raw)?;
        jsb.check_geometry(sb.block_size, inode_blocks)?;
        j.sb = jsb;
        j.sb_raw = raw;
        Ok(j)
    }

    /// The journal superblock as last read or written.
    pub fn superblock(&self) -> &JournalSuperblock {
        &self.sb
    }

    /// The journal inode's number.
    pub fn inode(&self) -> u32 {
        self.journal_ino
    }

    /// The journal's block size (the filesystem's).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The sorted, merged `[start, end)` device block runs of the journal.
    pub fn device_runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// The device block of log block `jblk`, checked: inside `s_maxlen`,
    /// mapped by the journal inode (a hole is corrupt).
    pub fn bmap(&self, jblk: u64) -> Result<u64> {
        if jblk >= u64::from(self.sb.maxlen) {
            return Err(Ext4Error::JournalCorrupt(format!(
                "log block {jblk} is past the journal's end ({} blocks)",
                self.sb.maxlen
            )));
        }
        let i = self.map.partition_point(|&(l, _, _)| l <= jblk);
        if let Some(&(l, p, len)) = i.checked_sub(1).and_then(|i| self.map.get(i)) {
            if jblk < l + len {
                return Ok(p + (jblk - l));
            }
        }
        Err(Ext4Error::JournalCorrupt(format!(
            "log block {jblk} is a hole in journal inode {}",
            self.journal_ino
        )))
    }

    /// True when device block `b` belongs to the journal.
    pub fn contains_device_block(&self, b: u64) -> bool {
        let i = self.runs.partition_point(|&(_, e)| e <= b);
        self.runs.get(i).is_some_and(|&(s, _)| s <= b)
    }

    /// Reads log block `jblk`.
    pub fn read_block(&self, jblk: u64) -> Result<Vec<u8>> {
        let p = self.bmap(jblk)?;
        let mut buf = vec![0u8; self.block_size as usize];
        read_bytes(self.dev.as_ref(), p * u64::from(self.block_size), &mut buf)?;
        Ok(buf)
    }

    /// Writes log block `jblk`.
    fn write_block(&self, jblk: u64, data: &[u8]) -> Result<()> {
        let p = self.bmap(jblk)?;
        write_bytes(self.dev.as_ref(), p * u64::from(self.block_size), data)
    }

    /// Writes filesystem block `block` in place, refusing one outside the
    /// filesystem or inside the journal.
    fn write_home(&self, block: u64, data: &[u8]) -> Result<()> {
        if let Some(why) = self.home_refusal(block) {
            return Err(Ext4Error::Refused(format!(
                "block {block}: {}",
                why.describe()
            )));
        }
        write_bytes(self.dev.as_ref(), block * u64::from(self.block_size), data)
    }

    /// Why filesystem block `block` must not be written from the log.
    pub fn home_refusal(&self, block: u64) -> Option<SkipReason> {
        if block < self.first_data_block || block >= self.blocks_count {
            Some(SkipReason::OutsideFilesystem)
        } else if self.contains_device_block(block) {
            Some(SkipReason::InsideJournal)
        } else {
            None
        }
    }

    /// Writes the journal superblock with the current fields.
    fn write_superblock(&mut self) -> Result<()> {
        let mut raw = std::mem::take(&mut self.sb_raw);
        self.sb.store(&mut raw);
        let r = self.write_block(0, &raw);
        self.sb_raw = raw;
        r
    }

    /// The device.
    fn dev(&self) -> &dyn BlockDevice {
        self.dev.as_ref()
    }
}

/// A superblock value used only until the real one is read.
fn placeholder_sb() -> JournalSuperblock {
    JournalSuperblock {
        version: 2,
        block_size: 0,
        maxlen: 0,
        first: 0,
        sequence: 0,
        start: 0,
        errno: 0,
        feature_compat: 0,
        feature_incompat: 0,
        feature_ro_compat: 0,
        uuid: [0; 16],
        nr_users: 0,
        checksum_type: 0,
        num_fc_blocks: 0,
        checksum: 0,
    }
}

/// Reads `buf.len()` bytes at `off`, widening to the device's logical
/// block size as it requires.
fn read_bytes(dev: &dyn BlockDevice, off: u64, buf: &mut [u8]) -> Result<()> {
    let lbs = u64::from(dev.logical_block_size().max(1));
    let end = off + buf.len() as u64;
    if end > dev.size() {
        return Err(Ext4Error::JournalCorrupt(format!(
            "bytes {off}..{end} are past the device's end ({})",
            dev.size()
        )));
    }
    if off.is_multiple_of(lbs) && end.is_multiple_of(lbs) {
        return Ok(dev.read_at(off, buf)?);
    }
    let start = off - off % lbs;
    let aend = end.div_ceil(lbs) * lbs;
    let mut tmp = vec![0u8; (aend - start) as usize];
    dev.read_at(start, &mut tmp)?;
    let skip = (off - start) as usize;
    buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
    Ok(())
}

/// Writes `data` at `off`, read-modify-writing the device blocks it only
/// partly covers.
pub(crate) fn write_bytes(dev: &dyn BlockDevice, off: u64, data: &[u8]) -> Result<()> {
    let lbs = u64::from(dev.logical_block_size().max(1));
    let end = off + data.len() as u64;
    if off.is_multiple_of(lbs) && end.is_multiple_of(lbs) {
        return Ok(dev.write_at(off, data)?);
    }
    let start = off - off % lbs;
    let aend = end.div_ceil(lbs) * lbs;
    let mut tmp = vec![0u8; (aend - start) as usize];
    dev.read_at(start, &mut tmp)?;
    let skip = (off - start) as usize;
    tmp[skip..skip + data.len()].copy_from_slice(data);
    Ok(dev.write_at(start, &tmp)?)
}

/// Rewrites the ext4 superblock's `needs_recovery` flag (and ORs `state`
/// bits into `s_state`), refreshing its checksum; reads the superblock as
/// it is on the device now (replay may just have rewritten it).
fn set_needs_recovery(dev: &dyn BlockDevice, on: bool, state_or: u16) -> Result<()> {
    rewrite_superblock(dev, |b| {
        let mut inc = u32::from_le_bytes([b[0x60], b[0x61], b[0x62], b[0x63]]);
        if on {
            inc |= incompat::RECOVER;
        } else {
            inc &= !incompat::RECOVER;
        }
        b[0x60..0x64].copy_from_slice(&inc.to_le_bytes());
        let state = u16::from_le_bytes([b[0x3A], b[0x3B]]) | state_or;
        b[0x3A..0x3C].copy_from_slice(&state.to_le_bytes());
    })
}

/// Rewrites the ext4 superblock in place: reads it as it is on the device
/// now, lets `edit` change its bytes, refreshes its checksum, writes it.
pub(crate) fn rewrite_superblock(
    dev: &dyn BlockDevice,
    edit: impl FnOnce(&mut [u8]),
) -> Result<()> {
    let mut b = vec![0u8; 1024];
    read_bytes(dev, SUPERBLOCK_OFFSET, &mut b)?;
    edit(&mut b);
    let ro = u32::from_le_bytes([b[0x64], b[0x65], b[0x66], b[0x67]]);
    if ro & crate::superblock::ro_compat::METADATA_CSUM != 0 {
        let c = crate::checksum::chksum(!0, &b[..0x3FC]);
        b[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
    }
    write_bytes(dev, SUPERBLOCK_OFFSET, &b)
}
