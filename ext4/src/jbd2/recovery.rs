//! Journal recovery: the kernel's three passes over the log (scan, revoke,
//! replay), then the journal reset.
//!
//! The passes follow fs/jbd2/recovery.c as e2fsprogs 1.47 carries it
//! (e2fsck/recovery.c), rule for rule:
//!
//! - **scan** walks from `s_start` expecting transaction `s_sequence`:
//!   it stops at a block without the magic, a block of another sequence
//!   or an unknown block type. A commit block whose checksum fails (the
//!   v1 crc32 over the transaction's descriptors and data, or the v2/v3
//!   crc32c of the commit block) ends the log there; without
//!   ASYNC_COMMIT that transaction is a *failed commit* (the kernel
//!   refuses the mount, e2fsck marks the filesystem in error). A
//!   descriptor or revoke block failing its tail checksum is not an end
//!   by itself: at the transaction's commit block, a commit time older
//!   than the previous transaction's means stale blocks of an older log
//!   (the log ends there, quietly); otherwise recovery fails
//!   (`-EFSBADCRC`) and nothing is replayed.
//! - **revoke** collects every revoke record up to the end of the log,
//!   keeping for each block the latest transaction that revoked it.
//! - **replay** writes every logged block home unless a transaction at or
//!   after its own revoked it, restoring escaped magics; a data block whose
//!   v2/v3 tag checksum fails is skipped and the recovery reports it.
//!
//! Where the kernel would hang or write outside the filesystem, bufwrite
//! stops or skips instead: a scan longer than one lap of the log ends
//! ([`ScanStop::FullLap`]), and a tag naming a block outside
//! `[s_first_data_block, s_blocks_count)` or inside the journal itself is
//! not written ([`SkipReason`]); the kernel and e2fsck (whose
//! `ll_rw_block` writes any block number it is given) have no such check.
//!
//! After a replay the journal is reset as e2fsck resets it: `s_start = 0`,
//! `s_sequence` one past the end of the log (so that no commit block left
//! in the log can look valid), and `needs_recovery` cleared in the ext4
//! superblock, with a flush after the replayed blocks, after the journal
//! superblock and after the ext4 superblock.

use super::format::{
    self, block_type, feature, parse_revoke, parse_tags, tag_checksum_ok, tag_flag,
    tail_checksum_ok, Commit, Header, JournalSuperblock, TagLayout,
};
use super::Journal;
use crate::error::{Ext4Error, Result};
use std::collections::HashMap;

/// `EXT2_ERROR_FS` in `s_state`.
const STATE_ERROR_FS: u16 = 2;

/// Why the scan pass stopped: where the valid log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScanStop {
    /// `s_start` was 0: the log was empty, nothing was scanned.
    Empty,
    /// Log block `block` does not start with the journal magic.
    NoMagic {
        /// The log block.
        block: u64,
    },
    /// Log block `block` belongs to transaction `found`, not the expected
    /// one (a stale block of an older lap).
    Sequence {
        /// The log block.
        block: u64,
        /// Its `h_sequence`.
        found: u32,
    },
    /// Log block `block` is of a type a log does not hold there.
    UnknownType {
        /// The log block.
        block: u64,
        /// Its `h_blocktype`.
        block_type: u32,
    },
    /// Transaction `sequence`'s commit checksum failed: the log ends before
    /// it (a failed commit unless the journal has ASYNC_COMMIT).
    CommitChecksum {
        /// The transaction.
        sequence: u32,
    },
    /// A checksum failed in transaction `sequence` and its commit time is
    /// older than the previous transaction's: stale blocks of an older
    /// log, ignored, the log ends before it.
    Stale {
        /// The transaction.
        sequence: u32,
    },
    /// A block of the transaction being checksummed (v1) could not be read.
    Unreadable {
        /// The log block.
        block: u64,
    },
    /// The scan went once around the whole log without reaching an end
    /// (only garbage does this; the kernel would loop).
    FullLap,
}

/// Why a logged block was not written home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The tag names a block outside `[s_first_data_block, s_blocks_count)`.
    OutsideFilesystem,
    /// The tag names a block of the journal itself.
    InsideJournal,
    /// The data block's v2/v3 tag checksum failed.
    BadChecksum,
}

impl SkipReason {
    /// A short sentence for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            SkipReason::OutsideFilesystem => "outside the filesystem",
            SkipReason::InsideJournal => "inside the journal",
            SkipReason::BadChecksum => "its data checksum in the log failed",
        }
    }
}

/// What a recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The first transaction expected (`s_sequence` before recovery).
    pub start_sequence: u32,
    /// The first transaction not replayed: the end of the valid log.
    pub end_sequence: u32,
    /// Transactions replayed (`end_sequence - start_sequence`).
    pub transactions: u32,
    /// The last transaction replayed, if any.
    pub last_sequence: Option<u32>,
    /// Logged blocks written home.
    pub replayed: u64,
    /// Revoke records read.
    pub revoke_records: u64,
    /// Logged blocks not written because a revoke record covered them.
    pub revoked: u64,
    /// Why the scan stopped.
    pub stop: ScanStop,
    /// The transaction whose commit checksum failed on a journal without
    /// ASYNC_COMMIT (the filesystem is then marked in error, as e2fsck does).
    pub failed_commit: Option<u32>,
    /// Logged blocks not written home: `(home block, why)`.
    pub skipped: Vec<(u64, SkipReason)>,
    /// True when the ext4 superblock was marked in error (failed commit,
    /// bad data checksums or a journal error recorded in `s_errno`): run
    /// e2fsck before writing.
    pub marked_error: bool,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transaction(s) {}..{} replayed, {} block(s) written, {} revoked ({} revoke records), scan stopped: {:?}",
            self.transactions,
            self.start_sequence,
            self.end_sequence,
            self.replayed,
            self.revoked,
            self.revoke_records,
            self.stop
        )?;
        if let Some(s) = self.failed_commit {
            write!(f, "; transaction {s} failed its commit checksum")?;
        }
        if !self.skipped.is_empty() {
            write!(f, "; {} block(s) skipped", self.skipped.len())?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

/// State carried between the passes (the kernel's `recovery_info` plus
/// the revoke table).
struct Info {
    end: Option<u32>,
    stop: ScanStop,
    failed_commit: Option<u32>,
    revokes: HashMap<u64, u32>,
    revoke_records: u64,
    revoked: u64,
    replayed: u64,
    skipped: Vec<(u64, SkipReason)>,
    /// A replay-pass failure reported at the end (bad data checksum, or
    /// the passes disagreeing on the end).
    replay_error: bool,
}

/// `tid_gt` / `tid_geq`: sequence comparisons that survive wrapping.
fn tid_gt(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) > 0
}

fn tid_geq(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) >= 0
}

impl Journal {
    /// Recovers the journal: the three passes, then the reset (see the
    /// module doc). An empty log (`s_start == 0`) replays nothing; its
    /// `s_sequence` is still moved on by one, as e2fsck does (the kernel
    /// numbers its next transaction so too, and writes it with the first
    /// tail update). On an error nothing has been written (every
    /// failure the kernel reports happens before the replay pass) and the
    /// journal still needs recovery.
    pub fn recover(&mut self) -> Result<RecoveryReport> {
        if self.sb.has_incompat(feature::INCOMPAT_FAST_COMMIT) && self.sb.start != 0 {
            return Err(Ext4Error::Unsupported(
                "the journal has fast commits (journal_fast_commit): their replay is ext4's own and bufwrite does not do it"
                    .into(),
            ));
        }
        let start_sequence = self.sb.sequence;
        let mut info = Info {
            end: None,
            stop: ScanStop::Empty,
            failed_commit: None,
            revokes: HashMap::new(),
            revoke_records: 0,
            revoked: 0,
            replayed: 0,
            skipped: Vec::new(),
            replay_error: false,
        };
        let end = if self.sb.start == 0 {
            // The kernel's "no recovery required": the next transaction
            // is s_sequence + 1.
            Some(start_sequence)
        } else {
            self.pass(Pass::Scan, &mut info)?;
            self.pass(Pass::Revoke, &mut info)?;
            self.pass(Pass::Replay, &mut info)?;
            self.dev().flush()?;
            Some(info.end.unwrap_or(start_sequence))
        };
        let bad_data = info
            .skipped
            .iter()
            .any(|(_, r)| *r == SkipReason::BadChecksum);
        let marked_error =
            info.failed_commit.is_some() || bad_data || info.replay_error || self.sb.errno != 0;
        if let Some(end) = end {
            self.sb.start = 0;
            self.sb.sequence = end.wrapping_add(1);
        }
        // A journal error is moved to the filesystem's error state, as the
        // kernel (ext4_clear_journal_err) and e2fsck do.
        self.sb.errno = 0;
        if end.is_some() || marked_error {
            self.write_superblock()?;
            self.dev().flush()?;
        }
        super::set_needs_recovery(
            self.dev(),
            false,
            if marked_error { STATE_ERROR_FS } else { 0 },
        )?;
        self.dev().flush()?;
        let end_sequence = end.unwrap_or(start_sequence);
        let transactions = end_sequence.wrapping_sub(start_sequence);
        Ok(RecoveryReport {
            start_sequence,
            end_sequence,
            transactions,
            last_sequence: (transactions > 0).then(|| end_sequence.wrapping_sub(1)),
            replayed: info.replayed,
            revoke_records: info.revoke_records,
            revoked: info.revoked,
            stop: info.stop,
            failed_commit: info.failed_commit,
            skipped: info.skipped,
            marked_error,
        })
    }

    /// The kernel's `wrap`: log block numbers past the log's end continue
    /// at its start.
    fn wrap(&self, b: u64) -> u64 {
        let (first, last) = (u64::from(self.sb.first), u64::from(self.sb.last()));
        if b >= last {
            b - (last - first)
        } else {
            b
        }
    }

    /// One pass over the log (`do_one_pass`).
    fn pass(&self, pass: Pass, info: &mut Info) -> Result<()> {
        let sb: &JournalSuperblock = &self.sb;
        let layout: TagLayout = sb.tags();
        let seed = sb.csum_seed();
        let v23 = sb.csum_v2_or_v3();
        let v1 = sb.feature_compat & feature::COMPAT_CHECKSUM != 0;
        let async_commit = sb.has_incompat(feature::INCOMPAT_ASYNC_COMMIT);
        let lap = u64::from(sb.last() - sb.first);
        let mut next_id = sb.sequence;
        let mut next_block = u64::from(sb.start);
        let mut crc32_sum: u32 = !0;
        let mut need_check_commit_time = false;
        let mut last_commit_time: u64 = 0;
        let mut read: u64 = 0;
        let stop: ScanStop = loop {
            if pass != Pass::Scan {
                if let Some(end) = info.end {
                    if tid_geq(next_id, end) {
                        break ScanStop::Empty;
                    }
                }
            }
            if read >= lap {
                break ScanStop::FullLap;
            }
            let this = next_block;
            let bh = self.read_block(this)?;
            read += 1;
            next_block = self.wrap(next_block + 1);
            let Some(h) = Header::parse(&bh) else {
                break ScanStop::NoMagic { block: this };
            };
            if h.sequence != next_id {
                break ScanStop::Sequence {
                    block: this,
                    found: h.sequence,
                };
            }
            match h.block_type {
                block_type::DESCRIPTOR => {
                    if v23 && !tail_checksum_ok(layout, seed, &bh) {
                        // The scan may meet stale blocks of a lazily
                        // initialised journal: it only notes the failure.
                        if pass != Pass::Scan {
                            return Err(Ext4Error::JournalCorrupt(format!(
                                "descriptor block at log block {this} (transaction {next_id}) fails its checksum"
                            )));
                        }
                        need_check_commit_time = true;
                    }
                    let tags = parse_tags(&bh, layout);
                    if pass != Pass::Replay {
                        if pass == Pass::Scan && v1 && !need_check_commit_time && info.end.is_none()
                        {
                            crc32_sum = format::crc32_be(crc32_sum, &bh);
                            let mut unreadable = None;
                            for _ in 0..tags.len() {
                                let io = next_block;
                                next_block = self.wrap(next_block + 1);
                                read += 1;
                                match self.read_block(io) {
                                    Ok(d) => crc32_sum = format::crc32_be(crc32_sum, &d),
                                    Err(_) => {
                                        unreadable = Some(io);
                                        break;
                                    }
                                }
                            }
                            if let Some(block) = unreadable {
                                // The kernel breaks out of the switch and
                                // reads on; a log that cannot be read is
                                // its end here.
                                break ScanStop::Unreadable { block };
                            }
                            continue;
                        }
                        next_block = self.wrap(next_block + tags.len() as u64);
                        read += tags.len() as u64;
                        continue;
                    }
                    for tag in &tags {
                        let io = next_block;
                        next_block = self.wrap(next_block + 1);
                        let mut data = match self.read_block(io) {
                            Ok(d) => d,
                            Err(_) => {
                                // Recover what can be, fail at the end.
                                info.replay_error = true;
                                continue;
                            }
                        };
                        if let Some(&rseq) = info.revokes.get(&tag.block) {
                            if !tid_gt(next_id, rseq) {
                                info.revoked += 1;
                                continue;
                            }
                        }
                        if !tag_checksum_ok(layout, seed, h.sequence, tag, &data) {
                            info.skipped.push((tag.block, SkipReason::BadChecksum));
                            continue;
                        }
                        if let Some(why) = self.home_refusal(tag.block) {
                            info.skipped.push((tag.block, why));
                            continue;
                        }
                        if tag.flags & tag_flag::ESCAPE != 0 {
                            format::put_be32(&mut data, 0, format::MAGIC);
                        }
                        self.write_home(tag.block, &data)?;
                        info.replayed += 1;
                    }
                    continue;
                }
                block_type::COMMIT => {
                    let c = Commit::parse(&bh);
                    let commit_time = c.sec;
                    if need_check_commit_time {
                        if commit_time >= last_commit_time {
                            return Err(Ext4Error::JournalCorrupt(format!(
                                "transaction {next_id} has a block failing its checksum and a commit time not older than the previous transaction's: the log is corrupt (the kernel's -EFSBADCRC)"
                            )));
                        }
                        break ScanStop::Stale { sequence: next_id };
                    }
                    let mut bad = false;
                    if pass == Pass::Scan && v1 {
                        if let Some(end) = info.end {
                            // An async commit failed earlier and a later
                            // commit block exists: that one was corrupt,
                            // not interrupted.
                            info.failed_commit = Some(end);
                            continue;
                        }
                        let matches = crc32_sum == c.checksum
                            && c.checksum_type == format::checksum_type::CRC32
                            && c.checksum_size == format::CRC32_CHKSUM_SIZE;
                        let unused =
                            c.checksum_type == 0 && c.checksum_size == 0 && c.checksum == 0;
                        bad = !(matches || unused);
                        crc32_sum = !0;
                    }
                    if !bad && pass == Pass::Scan && v23 && !Commit::csum_v23_ok(seed, &bh) {
                        bad = true;
                    }
                    if bad {
                        if commit_time < last_commit_time {
                            break ScanStop::Stale { sequence: next_id };
                        }
                        info.end = Some(next_id);
                        info.stop = ScanStop::CommitChecksum { sequence: next_id };
                        if !async_commit {
                            info.failed_commit = Some(next_id);
                            // The kernel breaks out of the switch only and
                            // reads on with the same sequence: the next
                            // block normally ends the scan.
                            continue;
                        }
                    }
                    if pass == Pass::Scan {
                        last_commit_time = commit_time;
                    }
                    next_id = next_id.wrapping_add(1);
                    continue;
                }
                block_type::REVOKE => {
                    if pass == Pass::Scan && !tail_checksum_ok(layout, seed, &bh) {
                        need_check_commit_time = true;
                    }
                    if pass != Pass::Revoke {
                        continue;
                    }
                    let records = parse_revoke(&bh, layout).map_err(|count| {
                        Ext4Error::JournalCorrupt(format!(
                            "revoke block at log block {this} (transaction {next_id}) says it holds {count} bytes, more than a block"
                        ))
                    })?;
                    for r in records {
                        info.revoke_records += 1;
                        let e = info.revokes.entry(r).or_insert(next_id);
                        if tid_gt(next_id, *e) {
                            *e = next_id;
                        }
                    }
                    continue;
                }
                t => {
                    break ScanStop::UnknownType {
                        block: this,
                        block_type: t,
                    }
                }
            }
        };
        if pass == Pass::Scan {
            if info.end.is_none() {
                info.end = Some(next_id);
                info.stop = stop;
            } else if info.stop == ScanStop::Empty {
                info.stop = stop;
            }
        } else if info.end != Some(next_id) {
            // Passes ending at different places (the kernel's "recovery
            // pass %d ended at transaction %u, expected %u").
            info.replay_error = true;
        }
        Ok(())
    }
}
