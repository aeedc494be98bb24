//! The log writer: appends transactions to an internal journal and
//! checkpoints them.
//!
//! A transaction is a set of filesystem blocks (their new contents) and
//! revoked block numbers. It is written as the kernel's commit
//! (fs/jbd2/commit.c, `jbd2_journal_commit_transaction`) writes one:
//! revoke blocks first, then descriptor blocks each followed by the data
//! blocks its tags describe (a data block starting with the journal magic
//! is logged with its first four bytes zeroed and the ESCAPE flag), then
//! the commit block. The kernel waits for the log blocks and then writes
//! the commit block with a cache flush before it and FUA on it, so a
//! commit block is never durable before the blocks it commits; bufwrite
//! writes the log blocks, flushes, writes the commit block and flushes.
//! With ASYNC_COMMIT the kernel submits the commit block together with the
//! log blocks and issues one flush after all of them (a torn transaction
//! is then caught by the commit checksum); bufwrite does the same.

use super::format::{
    self, block_type, encode_revoke, encode_tag, feature, revoke_capacity, set_tail_checksum,
    tag_flag, ChecksumVersion, Commit, Header, Tag, HEADER_LEN,
};
use super::Journal;
use crate::error::{Ext4Error, Result};
use std::collections::BTreeMap;

/// Where a committed transaction went in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedTransaction {
    /// Its sequence number.
    pub sequence: u32,
    /// The log block of its first block.
    pub start: u64,
    /// Log blocks it took (revoke, descriptor, data and commit blocks).
    pub len: u64,
}

/// A committed transaction not yet checkpointed.
struct Live {
    info: LoggedTransaction,
    /// The blocks still to be written home (revoked ones removed).
    blocks: BTreeMap<u64, Vec<u8>>,
}

/// Appends transactions to the internal journal of an image and
/// checkpoints them. While a transaction is in the log and not
/// checkpointed, the journal superblock's `s_start` / `s_sequence` point
/// at the oldest one and the ext4 superblock has `needs_recovery`.
pub struct JournalWriter {
    j: Journal,
    /// The next log block to write.
    head: u64,
    /// The next transaction's sequence number.
    next_seq: u32,
    /// Log blocks taken by live transactions.
    used: u64,
    live: Vec<Live>,
    /// The last commit time written, so that commit times never go back.
    last_time: (u64, u32),
}

impl std::fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalWriter")
            .field("head", &self.head)
            .field("next_seq", &self.next_seq)
            .field("used", &self.used)
            .field("live", &self.live.len())
            .finish()
    }
}

impl JournalWriter {
    /// A writer for `journal`, whose log must be empty (`s_start == 0`:
    /// recover it first). A v2 journal gets the revoke feature, as the
    /// kernel gives it at mount. The first transaction gets `s_sequence + 1`, as
    /// the kernel numbers them after an empty log, and starts at `s_first`.
    pub fn new(mut journal: Journal) -> Result<JournalWriter> {
        if journal.sb.version == 2
            && journal.sb.start == 0
            && !journal.sb.has_incompat(feature::INCOMPAT_REVOKE)
        {
            // The kernel turns revoke records on at every read-write
            // mount (ext4 asks jbd2 for the feature); mke2fs leaves it off.
            // Here it goes to disk with the first transaction's superblock
            // update, so that opening a writer writes nothing.
            journal.sb.feature_incompat |= feature::INCOMPAT_REVOKE;
        }
        let sb = journal.superblock();
        if sb.start != 0 {
            return Err(Ext4Error::NeedsRecovery(
                "the log is not empty (s_start != 0): recover the journal before writing to it"
                    .into(),
            ));
        }
        if sb.has_incompat(feature::INCOMPAT_FAST_COMMIT) {
            return Err(Ext4Error::Unsupported(
                "the journal has fast commits (journal_fast_commit): bufwrite does not write such journals"
                    .into(),
            ));
        }
        Ok(JournalWriter {
            head: u64::from(sb.first),
            next_seq: sb.sequence.wrapping_add(1),
            used: 0,
            live: Vec::new(),
            last_time: (0, 0),
            j: journal,
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.j
    }

    /// Gives the journal back (live transactions stay in the log: a later
    /// open recovers them).
    pub fn into_journal(self) -> Journal {
        self.j
    }

    /// The sequence number the next transaction gets.
    pub fn next_sequence(&self) -> u32 {
        self.next_seq
    }

    /// The next log block to be written.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Log blocks free for transactions.
    pub fn free_blocks(&self) -> u64 {
        self.lap() - self.used
    }

    fn lap(&self) -> u64 {
        let sb = self.j.superblock();
        u64::from(sb.last() - sb.first)
    }

    /// Commits a transaction stamped with the current time.
    pub fn commit(
        &mut self,
        blocks: &[(u64, Vec<u8>)],
        revoked: &[u64],
    ) -> Result<LoggedTransaction> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.commit_at(blocks, revoked, now.as_secs(), now.subsec_nanos())
    }

    /// Commits a transaction: `blocks` (filesystem block, its new
    /// contents of one block) and `revoked` block numbers, with commit
    /// time `sec.nsec` (raised to the previous commit's if earlier).
    /// Checkpoints first when the log lacks room. Nothing is written when
    /// the transaction is refused (a block outside the filesystem or in
    /// the journal, a wrong length, a block both logged and revoked, a
    /// revoke on a journal without the revoke feature, a 64-bit block
    /// number on a 32-bit journal, a transaction larger than the log).
    pub fn commit_at(
        &mut self,
        blocks: &[(u64, Vec<u8>)],
        revoked: &[u64],
        sec: u64,
        nsec: u32,
    ) -> Result<LoggedTransaction> {
        let sb = self.j.superblock().clone();
        let bs = self.j.block_size() as usize;
        let layout = sb.tags();
        let mut set: BTreeMap<u64, &[u8]> = BTreeMap::new();
        // Keep the caller's order (the last copy of a block wins).
        let mut order: Vec<u64> = Vec::new();
        for (b, data) in blocks {
            if data.len() != bs {
                return Err(Ext4Error::Refused(format!(
                    "block {b}: {} bytes, not one block of {bs}",
                    data.len()
                )));
            }
            if let Some(why) = self.j.home_refusal(*b) {
                return Err(Ext4Error::Refused(format!(
                    "block {b} cannot be journaled: it is {}",
                    why.describe()
                )));
            }
            if !layout.bit64 && *b > u64::from(u32::MAX) {
                return Err(Ext4Error::Refused(format!(
                    "block {b} needs 64-bit tags and the journal has no 64bit feature"
                )));
            }
            if set.insert(*b, data).is_none() {
                order.push(*b);
            }
        }
        if !revoked.is_empty() && !sb.has_incompat(feature::INCOMPAT_REVOKE) {
            return Err(Ext4Error::Refused(
                "the journal has no revoke feature: it cannot record revoked blocks".into(),
            ));
        }
        for r in revoked {
            if set.contains_key(r) {
                return Err(Ext4Error::Refused(format!(
                    "block {r} is both logged and revoked in one transaction"
                )));
            }
            if !layout.bit64 && *r > u64::from(u32::MAX) {
                return Err(Ext4Error::Refused(format!(
                    "revoked block {r} needs 64-bit records and the journal has no 64bit feature"
                )));
            }
        }
        let per_revoke = revoke_capacity(layout, bs);
        let revoke_blocks = revoked.len().div_ceil(per_revoke) as u64;
        let tb = layout.tag_bytes();
        let space = bs - HEADER_LEN - layout.tail_bytes();
        // The first tag of a descriptor carries the UUID.
        let per_desc = (space - 16) / tb;
        let desc_blocks = order.len().div_ceil(per_desc) as u64;
        let need = revoke_blocks + desc_blocks + order.len() as u64 + 1;
        if need > self.free_blocks() {
            self.checkpoint()?;
        }
        if need > self.free_blocks() {
            return Err(Ext4Error::NoSpace(format!(
                "a transaction of {need} log blocks does not fit in a log of {}",
                self.lap()
            )));
        }
        let seq = self.next_seq;
        let seed = sb.csum_seed();
        if self.live.is_empty() {
            // The log goes from empty to live: the ext4 superblock says
            // so first, then the journal superblock points at the first
            // transaction (the kernel updates the log tail before the
            // first commit after a flush).
            super::set_needs_recovery(self.j.dev(), true, 0)?;
            self.j.dev().flush()?;
            self.j.sb.start = self.head as u32;
            self.j.sb.sequence = seq;
            self.j.write_superblock()?;
            self.j.dev().flush()?;
        }
        let start = self.head;
        let mut crc = !0u32;
        let mut block = vec![0u8; bs];
        for chunk in revoked.chunks(per_revoke.max(1)) {
            encode_revoke(&mut block, layout, seed, seq, chunk);
            self.put(&block)?;
        }
        for chunk in order.chunks(per_desc.max(1)) {
            let mut logged: Vec<Vec<u8>> = Vec::with_capacity(chunk.len());
            block.fill(0);
            Header {
                block_type: block_type::DESCRIPTOR,
                sequence: seq,
            }
            .encode(&mut block);
            let mut off = HEADER_LEN;
            for (i, b) in chunk.iter().enumerate() {
                let mut data = set[b].to_vec();
                let mut flags = 0;
                if format::be32(&data, 0) == format::MAGIC {
                    data[..4].fill(0);
                    flags |= tag_flag::ESCAPE;
                }
                if i > 0 {
                    flags |= tag_flag::SAME_UUID;
                }
                if i + 1 == chunk.len() {
                    flags |= tag_flag::LAST_TAG;
                }
                let checksum = match layout.version {
                    ChecksumVersion::V2 | ChecksumVersion::V3 => {
                        format::data_checksum(seed, seq, &data)
                    }
                    _ => 0,
                };
                let tag = Tag {
                    block: *b,
                    flags,
                    checksum,
                };
                off = encode_tag(&mut block, off, layout, &tag, &sb.uuid);
                logged.push(data);
            }
            set_tail_checksum(layout, seed, &mut block);
            crc = format::crc32_be(crc, &block);
            self.put(&block)?;
            for d in &logged {
                crc = format::crc32_be(crc, d);
                self.put(d)?;
            }
        }
        let time = (sec, nsec).max(self.last_time);
        self.last_time = time;
        Commit::encode(&mut block, &sb, seq, crc, time.0, time.1);
        if sb.has_incompat(feature::INCOMPAT_ASYNC_COMMIT) {
            self.put(&block)?;
            self.j.dev().flush()?;
        } else {
            self.j.dev().flush()?;
            self.put(&block)?;
            self.j.dev().flush()?;
        }
        let info = LoggedTransaction {
            sequence: seq,
            start,
            len: need,
        };
        // A revoked block's earlier logged copies must not be written home
        // any more: the block was freed (and may be reused as data).
        for l in &mut self.live {
            for r in revoked {
                l.blocks.remove(r);
            }
        }
        self.live.push(Live {
            info,
            blocks: set.into_iter().map(|(b, d)| (b, d.to_vec())).collect(),
        });
        self.used += need;
        self.next_seq = seq.wrapping_add(1);
        Ok(info)
    }

    /// Writes one block at the head and advances it, wrapping at the log's
    /// end.
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.j.write_block(self.head, data)?;
        let sb = self.j.superblock();
        self.head += 1;
        if self.head >= u64::from(sb.last()) {
            self.head = u64::from(sb.first);
        }
        Ok(())
    }

    /// Writes every live transaction's blocks home (the latest copy of
    /// each), flushes, marks the log empty in the journal superblock
    /// (`s_start = 0`, `s_sequence` = the next transaction), flushes, and
    /// clears `needs_recovery`, flushing again.
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.live.is_empty() {
            return Ok(());
        }
        let mut home: BTreeMap<u64, &[u8]> = BTreeMap::new();
        for l in &self.live {
            for (b, d) in &l.blocks {
                home.insert(*b, d);
            }
        }
        for (b, d) in home {
            self.j.write_home(b, d)?;
        }
        self.j.dev().flush()?;
        self.j.sb.start = 0;
        self.j.sb.sequence = self.next_seq;
        self.j.write_superblock()?;
        self.j.dev().flush()?;
        super::set_needs_recovery(self.j.dev(), false, 0)?;
        self.j.dev().flush()?;
        self.live.clear();
        self.used = 0;
        Ok(())
    }

    /// The transactions in the log, oldest first.
    pub fn live(&self) -> Vec<LoggedTransaction> {
        self.live.iter().map(|l| l.info).collect()
    }
}
