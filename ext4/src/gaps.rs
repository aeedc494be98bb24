//! The iomap feature-gap report: which features, mount defaults and inode
//! flags of an image keep its files off the iomap buffered write path
//! (following the gate of the upstream conversion; see IOMAP_GAPS.md).

use crate::error::Result;
use crate::fs::Ext4;
use crate::inode::flags;
use crate::mount::{MountDefaults, Source};
use crate::superblock::{incompat, ro_compat};
use serde::Serialize;
use std::fmt;

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The feature, mount default or inode flag.
    pub name: String,
    /// Whether the image has it.
    pub present: bool,
    /// Whether upstream's gate keeps affected files off the iomap path
    /// (false for rows listed for completeness: supported or not applicable).
    pub blocks_iomap: bool,
    /// Regular files it affects (0 when absent).
    pub files_affected: u64,
    /// What was found (flag counts), when there is something to say.
    pub detail: String,
    /// Why it keeps files off iomap (or why it does not).
    pub why: String,
    /// Which versions of upstream's gate the row's statement comes from,
    /// with the message ids to read them by.
    pub upstream: String,
}

/// The versions of Zhang Yi's series whose gate function was read: its
/// "partially enable iomap" patch, by message id.
mod series {
    /// RFC 17/18, 2023-11-23 (`ext4_should_use_buffered_iomap`).
    pub(super) const RFC_V1: &str = "RFC v1 <20231123125121.4064694-18-yi.zhang@huaweicloud.com>";
    /// RFC v3 24/26, 2024-01-27.
    pub(super) const RFC_V3: &str = "RFC v3 <20240127015825.1608160-25-yi.zhang@huaweicloud.com>";
    /// RFC v4 30/34, 2024-04-10.
    pub(super) const RFC_V4: &str = "RFC v4 <20240410150313.2820364-2-yi.zhang@huaweicloud.com>";
    /// v1 24/27, 2024-10-22.
    pub(super) const V1: &str = "v1 <20241022111059.2566137-25-yi.zhang@huaweicloud.com>";
    /// -next v2 21/22, 2026-02-03 (`ext4_enable_buffered_iomap`); the
    /// latest gate read. The merged commit (03616d672cbf, ext4 dev for
    /// 7.4) was not read.
    pub(super) const NEXT_V2: &str = "-next v2 <20260203062523.3869120-22-yi.zhang@huawei.com>";
}

/// Where each row's statement about the gate comes from.
fn upstream(name: &str) -> String {
    use series::*;
    match name {
        "journal_data inode flag (chattr +j)" => format!(
            "tested by {NEXT_V2}, which also makes ext4_inode_journal_mode ignore the flag for \
             iomap inodes; {RFC_V1} tested ext4_should_journal_data (the flag counted only where \
             it journals); {RFC_V3}, {RFC_V4} and {V1} did not test it"
        ),
        "encrypt (fscrypt)" => format!(
            "{NEXT_V2} tests the feature (ext4_has_feature_encrypt); {RFC_V1}, {RFC_V3}, {RFC_V4} \
             and {V1} tested the inode flag (EXT4_INODE_ENCRYPT)"
        ),
        "non-extent (indirect-mapped) files" => format!(
            "the extents flag is tested by {RFC_V3}, {RFC_V4}, {V1} and {NEXT_V2}; {RFC_V1} did not \
             test it"
        ),
        "DAX inode flag" => format!(
            "IS_DAX was tested by {RFC_V1} (inverted as posted), {RFC_V3}, {RFC_V4} and {V1}; \
             {NEXT_V2} dropped it, and its ext4_set_aops gives DAX inodes ext4_dax_aops before the \
             iomap aops (-next v2 09/22 <20260203062523.3869120-10-yi.zhang@huawei.com>)"
        ),
        "bigalloc" => format!(
            "refused by {RFC_V1} and {RFC_V3}; accepted from {RFC_V4} on (its commit message: \
             \"support default filesystem features and bigalloc feature\"), and by {V1} and \
             {NEXT_V2}; RFC v2 not read"
        ),
        _ => format!(
            "tested by every gate read: {RFC_V1}, {RFC_V3}, {RFC_V4}, {V1}, {NEXT_V2} (RFC v2 and \
             the versions after -next v2 not read)"
        ),
    }
}

/// The report for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapReport {
    /// The device or image described.
    pub device: String,
    /// Filesystem block size.
    pub block_size: u32,
    /// In-use regular files scanned: user files only, without the inodes
    /// the superblock names for internal use (see `internal_inodes`).
    pub regular_files: u64,
    /// Regular files upstream's gate would put on the iomap path once the
    /// filesystem is mounted with `buffered_iomap` (the option is off by
    /// default; the stored mount defaults apply otherwise).
    pub iomap_eligible_files: u64,
    /// Regular files on the iomap path for a mount that names no options:
    /// `iomap_eligible_files` when the stored defaults say
    /// `buffered_iomap`, else 0.
    pub iomap_on_default_mount: u64,
    /// What the superblock's stored mount defaults imply.
    pub mount_defaults: MountDefaults,
    /// One row per feature.
    pub features: Vec<Gap>,
    /// Why bufwrite itself would refuse to write this image (empty if it would not).
    pub bufwrite_write_blockers: Vec<String>,
    /// The inodes the superblock names for the filesystem's own use
    /// (journal, quota files, orphan file, ...), not counted as files.
    pub internal_inodes: Vec<InternalInode>,
}

/// An inode the superblock names for internal use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InternalInode {
    /// Inode number.
    pub ino: u32,
    /// What it is: `journal`, `user quota`, `orphan file`, ...
    pub role: String,
}

#[derive(Default)]
struct Counts {
    files: u64,
    journal_flag: u64,
    inline: u64,
    encrypted: u64,
    verity: u64,
    non_extent: u64,
    ea_inodes: u64,
    dax: u64,
    eligible_by_inode: u64,
}

impl Counts {
    fn add(&mut self, sb: &crate::superblock::Superblock, i: &crate::inode::Inode) {
        if sb.is_internal_inode(i.ino) {
            return;
        }
        if i.has_flag(flags::EA_INODE) {
            self.ea_inodes += 1;
            return;
        }
        if !i.is_file() {
            return;
        }
        self.files += 1;
        let per_inode = [
            (flags::JOURNAL_DATA, &mut self.journal_flag),
            (flags::INLINE_DATA, &mut self.inline),
            (flags::DAX, &mut self.dax),
        ];
        for (bit, n) in per_inode {
            if i.has_flag(bit) {
                *n += 1;
            }
        }
        let protection = i.protection();
        self.encrypted += u64::from(protection.encrypted);
        self.verity += u64::from(protection.verity);
        let non_extent = !i.has_flag(flags::EXTENTS) && !i.has_flag(flags::INLINE_DATA);
        if non_extent {
            self.non_extent += 1;
        }
        if !non_extent
            && !protection.any()
            && !i.has_flag(flags::JOURNAL_DATA)
            && !i.has_flag(flags::INLINE_DATA)
        {
            self.eligible_by_inode += 1;
        }
    }
}

fn row(name: &str, present: bool, blocks: bool, files: u64, detail: String, why: &str) -> Gap {
    Gap {
        name: name.into(),
        present,
        blocks_iomap: blocks,
        files_affected: if present { files } else { 0 },
        detail,
        why: why.into(),
        upstream: upstream(name),
    }
}

/// The detail of the encrypt / verity rows: with the feature every file is
/// affected; without it, the files whose own flag says so (the rule of
/// [`crate::inode::Inode::protection`], which `Ext4::open_file` applies too).
fn protected_detail(feature: bool, name: &str, flagged: u64, what: &str) -> String {
    if feature {
        format!("{flagged} files {what}; the {name} feature makes every file fall back")
    } else if flagged > 0 {
        format!(
            "{flagged} files {what} although the {name} feature is off: the inode flag decides for the file"
        )
    } else {
        format!("{flagged} files {what}")
    }
}

/// What EXT4_JOURNAL_DATA_FL does to a file under the stored defaults.
fn journal_flag_effect(md: &MountDefaults) -> &'static str {
    if !md.journal {
        "no journal is loaded, so the flag journals nothing"
    } else if md.data_journal {
        "every file journals its data anyway (data=journal)"
    } else if md.delalloc {
        "with delalloc (the default here) the flag journals nothing: the files use ext4_da_aops"
    } else {
        "nodelalloc here: these files journal their data (ext4_journalled_aops)"
    }
}

impl GapReport {
    /// Scans every in-use inode of `fs`.
    pub fn scan(fs: &Ext4) -> Result<GapReport> {
        let mut c = Counts::default();
        let sb = fs.superblock();
        fs.for_each_inode(|i| {
            c.add(sb, i);
            Ok(())
        })?;
        let md = MountDefaults::of(sb);
        let dj = md.data_journal;
        let inline = sb.has_incompat(incompat::INLINE_DATA);
        let encrypt = sb.has_incompat(incompat::ENCRYPT);
        let verity = sb.has_ro_compat(ro_compat::VERITY);
        let fs_wide = dj || inline || encrypt || verity;
        let flagged = |n: u64, what: &str| format!("{n} files {what}");
        let dj_detail = match (md.wants_data_journal(), dj) {
            (false, _) => String::new(),
            (true, true) => format!(
                "set in {}; a journal is loaded, so every file journals its data",
                md.data_mode_source.unwrap_or(Source::DefaultMountOpts)
            ),
            (true, false) => format!(
                "set in {}, but ignored: no journal is loaded, and the kernel drops the data \
                 mode at mount; no file is blocked by it",
                md.data_mode_source.unwrap_or(Source::DefaultMountOpts)
            ),
        };
        let features = vec![
            Gap {
                name: "data=journal (default mount option)".into(),
                present: md.wants_data_journal(),
                blocks_iomap: dj || !md.wants_data_journal(),
                files_affected: if dj { c.files } else { 0 },
                detail: dj_detail,
                why: "jbd2 journals file data per buffer head, in write_end and writeback; iomap has no per-block journal hook and takes folio lock and transaction in the opposite order; only where a journal is loaded (without one the kernel clears the data mode)".into(),
                upstream: upstream("data=journal (default mount option)"),
            },
            row("journal_data inode flag (chattr +j)", c.journal_flag > 0, true, c.journal_flag,
                format!("{}; {}", flagged(c.journal_flag, "carry the flag"), journal_flag_effect(&md)),
                "upstream's gate (ext4_enable_buffered_iomap, -next v2) refuses any inode with the flag, whatever the mount; the flag itself journals data only on a journalled mount without delalloc (ext4_inode_journal_mode, fs/ext4/ext4_jbd2.c): with delalloc, the default, it journals nothing and the file stays on the ordinary delalloc aops (ext4_da_aops), kept off iomap by the gate alone"),
            row("inline_data", inline, true, c.files, flagged(c.inline, "store data in the inode"),
                "data in the inode body is converted to extents by bh-path code as it grows; iomap's inline support is one mapping at offset 0; upstream's gate checks the feature, so every file of the filesystem falls back"),
            row("encrypt (fscrypt)", encrypt || c.encrypted > 0, true,
                if encrypt { c.files } else { c.encrypted },
                protected_detail(encrypt, "encrypt", c.encrypted, "are encrypted"),
                "decryption after read-in and encryption into bounce pages at writeback are hooks of the bh path; the -next v2 gate refuses every file of a filesystem with the feature (RFC v1, v3, v4 and v1 tested the inode's flag instead); a file with the flag is encrypted whatever the feature says, so it counts as blocked either way"),
            row("verity (fs-verity)", verity || c.verity > 0, true,
                if verity { c.files } else { c.verity },
                protected_detail(verity, "verity", c.verity, "have verity enabled"),
                "ext4 writes the Merkle tree past EOF through the page cache and verifies at read completion, with bh-path special cases; not wired to iomap for ext4; the gate refuses every file of a filesystem with the feature; a file with the flag is a verity file whatever the feature says, so it counts as blocked either way"),
            row("non-extent (indirect-mapped) files", c.non_extent > 0 || !sb.has_incompat(incompat::EXTENTS), true, c.non_extent,
                if sb.has_incompat(incompat::EXTENTS) { flagged(c.non_extent, "are indirect-mapped") } else { format!("no extent feature (ext2/ext3 format); {}", flagged(c.non_extent, "are indirect-mapped")) },
                "block maps have no unwritten state, so iomap's allocate-unwritten-then-convert cannot avoid exposing stale data"),
            row("EA inodes (ea_inode)", sb.has_incompat(incompat::EA_INODE) || c.ea_inodes > 0, false, c.ea_inodes,
                flagged(c.ea_inodes, "are EA inodes (counted here, not as regular files)"),
                "no gap for user files: the gate refuses EA inodes, but they are internal inodes holding large xattr values, written by xattr code and never through the buffered path; the feature keeps no regular file off iomap"),
            row("DAX inode flag", c.dax > 0, false, c.dax, flagged(c.dax, "carry the flag (counted eligible)"),
                "not a gap: a DAX inode (dax=always, or dax=inode with this flag, on a DAX device) gets ext4_dax_aops and never uses the page cache, whatever the gate says; without DAX at mount the flag does nothing and the file is an ordinary candidate"),
            row("bigalloc", sb.has_ro_compat(ro_compat::BIGALLOC), false, 0,
                format!("clusters of {} bytes", sb.cluster_size),
                "supported since RFC v4 (April 2024): the cluster-granular reservation is in the shared ext4 mapping code; RFC v1 and RFC v3 refused it"),
        ];
        let eligible = if fs_wide { 0 } else { c.eligible_by_inode };
        Ok(GapReport {
            device: fs.device().describe(),
            block_size: sb.block_size,
            regular_files: c.files,
            iomap_eligible_files: eligible,
            iomap_on_default_mount: if md.buffered_iomap { eligible } else { 0 },
            mount_defaults: md,
            features,
            bufwrite_write_blockers: fs.write_blockers(),
            internal_inodes: sb
                .internal_inodes()
                .into_iter()
                .map(|(ino, role)| InternalInode {
                    ino,
                    role: role.into(),
                })
                .collect(),
        })
    }

    /// The rows whose feature is present and keeps files off iomap.
    pub fn blocking(&self) -> impl Iterator<Item = &Gap> {
        self.features.iter().filter(|g| g.present && g.blocks_iomap)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

impl fmt::Display for GapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ext4 iomap feature gaps: {} (block size {})",
            self.device, self.block_size
        )?;
        writeln!(
            f,
            "{} regular files, {} eligible for the iomap buffered path once mounted with buffered_iomap",
            self.regular_files, self.iomap_eligible_files
        )?;
        let md = &self.mount_defaults;
        writeln!(
            f,
            "default mount options: {} (s_default_mount_opts {:#x}, s_mount_opts {:?})",
            md.summary(),
            md.default_mount_opts,
            md.mount_opts
        )?;
        if md.buffered_iomap {
            writeln!(
                f,
                "  a mount without options puts {} files on iomap: buffered_iomap is a stored default",
                self.iomap_on_default_mount
            )?;
        } else {
            writeln!(
                f,
                "  a mount without options keeps every file on buffer heads: upstream's iomap \
                 path is off unless mounted with buffered_iomap"
            )?;
        }
        for n in &md.notes {
            writeln!(f, "  note: {n}")?;
        }
        writeln!(f)?;
        let w = self
            .features
            .iter()
            .map(|g| g.name.len())
            .max()
            .unwrap_or(7)
            .max(7);
        writeln!(
            f,
            "{:<w$}  {:<7}  {:<6}  {:>6}  why",
            "feature", "present", "blocks", "files"
        )?;
        for g in &self.features {
            let yes = |b: bool| if b { "yes" } else { "no" };
            writeln!(
                f,
                "{:<w$}  {:<7}  {:<6}  {:>6}  {}",
                g.name,
                yes(g.present),
                yes(g.blocks_iomap),
                g.files_affected,
                g.why
            )?;
            if g.present && !g.detail.is_empty() {
                writeln!(
                    f,
                    "{:<w$}  {:<7}  {:<6}  {:>6}  ({})",
                    "", "", "", "", g.detail
                )?;
            }
            if g.present {
                writeln!(
                    f,
                    "{:<w$}  {:<7}  {:<6}  {:>6}  (upstream: {})",
                    "", "", "", "", g.upstream
                )?;
            }
        }
        if !self.internal_inodes.is_empty() {
            let list: Vec<String> = self
                .internal_inodes
                .iter()
                .map(|i| format!("{} ({})", i.ino, i.role))
                .collect();
            writeln!(
                f,
                "\ninternal inodes, not counted as files: {}",
                list.join(", ")
            )?;
        }
        if !self.bufwrite_write_blockers.is_empty() {
            writeln!(
                f,
                "\nbufwrite refuses to write this image: {}",
                self.bufwrite_write_blockers.join("; ")
            )?;
        }
        Ok(())
    }
}
