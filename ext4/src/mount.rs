//! What the mount defaults stored in the superblock imply for a mount that
//! names no options of its own: the journalling mode, delayed allocation
//! and whether the iomap buffered path is on.
//!
//! Two places hold defaults. `s_default_mount_opts` is a bit field
//! (`tune2fs -o journal_data`, `-o nodelalloc`, ...); `s_mount_opts` is a
//! 64-byte option string (`tune2fs -E mount_opts=...`) that the kernel
//! parses like mount options, after the bits and before the options given
//! to mount (`ext4_set_def_opts` and `parse_apply_sb_mount_options`, called
//! in that order from `__ext4_fill_super` in fs/ext4/super.c). Within the
//! string the last of two contradicting options wins.

use crate::superblock::{compat, Superblock};
use serde::Serialize;
use std::fmt;

/// `s_default_mount_opts` bits (fs/ext4/ext4.h, `EXT4_DEFM_*`).
pub mod defm {
    /// Mask of the two journalling-mode bits.
    pub const JMODE: u32 = 0x0060;
    /// data=journal.
    pub const JMODE_DATA: u32 = 0x0020;
    /// data=ordered.
    pub const JMODE_ORDERED: u32 = 0x0040;
    /// data=writeback.
    pub const JMODE_WBACK: u32 = 0x0060;
    /// No delayed allocation.
    pub const NODELALLOC: u32 = 0x0800;
}

/// A data journalling mode (`data=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// File data goes through the journal.
    Journal,
    /// File data is written before the metadata that points at it commits.
    Ordered,
    /// No ordering of file data against metadata.
    Writeback,
}

impl fmt::Display for DataMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataMode::Journal => "journal",
            DataMode::Ordered => "ordered",
            DataMode::Writeback => "writeback",
        })
    }
}

/// Where a default came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `s_default_mount_opts` bits.
    DefaultMountOpts,
    /// The `s_mount_opts` string.
    MountOpts,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::DefaultMountOpts => "s_default_mount_opts",
            Source::MountOpts => "s_mount_opts",
        })
    }
}

/// What a mount with no options of its own gets from the superblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountDefaults {
    /// The raw `s_default_mount_opts` bits.
    pub default_mount_opts: u32,
    /// The raw `s_mount_opts` string.
    pub mount_opts: String,
    /// The data mode the defaults ask for, and where from (`None`: they
    /// name none, and the kernel picks ordered when there is a journal).
    pub data_mode: Option<DataMode>,
    /// Where `data_mode` was set.
    pub data_mode_source: Option<Source>,
    /// A journal is loaded at mount: `has_journal` is set and the defaults
    /// do not say `noload` / `norecovery`.
    pub journal: bool,
    /// data=journal takes effect: asked for and a journal is loaded.
    pub data_journal: bool,
    /// Delayed allocation is on.
    pub delalloc: bool,
    /// The iomap buffered path is on (`buffered_iomap` in `s_mount_opts`,
    /// not undone by a later `nobuffered_iomap`).
    pub buffered_iomap: bool,
    /// Options in `s_mount_opts` the report does not interpret.
    pub other_options: Vec<String>,
    /// What follows from the combination, in words.
    pub notes: Vec<String>,
}

impl MountDefaults {
    /// Reads the defaults of `sb` the way the kernel applies them.
    pub fn of(sb: &Superblock) -> MountDefaults {
        let bits = sb.default_mount_opts;
        let mut data_mode = match bits & defm::JMODE {
            defm::JMODE_DATA => Some(DataMode::Journal),
            defm::JMODE_ORDERED => Some(DataMode::Ordered),
            defm::JMODE_WBACK => Some(DataMode::Writeback),
            _ => None,
        };
        let mut data_mode_source = data_mode.map(|_| Source::DefaultMountOpts);
        let mut delalloc = bits & defm::NODELALLOC == 0;
        let mut explicit_delalloc = false;
        let mut buffered_iomap = false;
        let mut noload = false;
        let mut dax = None;
        let mut other_options = Vec::new();
        for opt in sb.mount_opts.split(',').map(str::trim) {
            match opt {
                "" => {}
                "data=journal" | "data=ordered" | "data=writeback" => {
                    data_mode = Some(match opt {
                        "data=journal" => DataMode::Journal,
                        "data=ordered" => DataMode::Ordered,
                        _ => DataMode::Writeback,
                    });
                    data_mode_source = Some(Source::MountOpts);
                }
                "delalloc" => {
                    delalloc = true;
                    explicit_delalloc = true;
                }
                // Like the kernel's option table, nodelalloc clears the
                // mode but not the record that delalloc was asked for.
                "nodelalloc" => delalloc = false,
                "buffered_iomap" => buffered_iomap = true,
                "nobuffered_iomap" => buffered_iomap = false,
                "noload" | "norecovery" => noload = true,
                "dax" | "dax=always" | "dax=inode" | "dax=never" => dax = Some(opt.to_string()),
                other => other_options.push(other.to_string()),
            }
        }
        let has_journal = sb.feature_compat & compat::HAS_JOURNAL != 0;
        let journal = has_journal && !noload;
        let wants_dj = data_mode == Some(DataMode::Journal);
        let mut notes = Vec::new();
        if wants_dj {
            // ext4_journal_data_mode_check runs before the journal is
            // loaded and turns delalloc off for data=journal whether or
            // not a journal turns up.
            delalloc = false;
            if explicit_delalloc {
                notes.push(
                    "data=journal together with an explicit delalloc: the kernel refuses \
                     the combination (\"can't mount with both data=journal and delalloc\")"
                        .into(),
                );
            }
            if !journal {
                let why = if has_journal {
                    "noload/norecovery keeps the journal from being loaded"
                } else {
                    "the filesystem has no journal (has_journal is off)"
                };
                notes.push(format!(
                    "data=journal in {} is ignored: {why}, and the kernel drops a default \
                     data mode when it mounts without a journal (nojournal branch of \
                     __ext4_fill_super, fs/ext4/super.c); delalloc stays off, as the \
                     data=journal check had already cleared it",
                    data_mode_source.unwrap_or(Source::DefaultMountOpts)
                ));
            }
        }
        if let Some(d) = &dax {
            notes.push(format!(
                "{d} in s_mount_opts: files of a DAX mount use the DAX aops, not the page \
                 cache; an image file is no DAX device, so this matters only on pmem"
            ));
        }
        if buffered_iomap {
            notes.push(
                "buffered_iomap in s_mount_opts: only kernels with the option (ext4 dev for \
                 7.4, commit 35aefefd7aba) know it; an older kernel fails to parse the \
                 string and ignores every option in it (parse_apply_sb_mount_options)"
                    .into(),
            );
        }
        if !other_options.is_empty() {
            notes.push(format!(
                "not interpreted here: {}; the kernel applies s_mount_opts only when it \
                 parses whole, so one option it does not know voids the others",
                other_options.join(",")
            ));
        }
        MountDefaults {
            default_mount_opts: bits,
            mount_opts: sb.mount_opts.clone(),
            data_mode,
            data_mode_source,
            journal,
            data_journal: wants_dj && journal,
            delalloc,
            buffered_iomap,
            other_options,
            notes,
        }
    }

    /// True when the defaults ask for data=journal, whether or not it
    /// takes effect.
    pub fn wants_data_journal(&self) -> bool {
        self.data_mode == Some(DataMode::Journal)
    }

    /// One line: what a mount without options gets.
    pub fn summary(&self) -> String {
        let data = if self.data_journal {
            "data=journal".to_string()
        } else if !self.journal {
            "no journal".to_string()
        } else {
            format!("data={}", self.data_mode.unwrap_or(DataMode::Ordered))
        };
        format!(
            "{data}, {}, {}",
            if self.delalloc {
                "delalloc"
            } else {
                "nodelalloc"
            },
            if self.buffered_iomap {
                "buffered_iomap"
            } else {
                "no buffered_iomap"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock with only the fields `MountDefaults::of` reads set.
    fn sb(bits: u32, opts: &str, journal: bool) -> Superblock {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        let put32 =
            |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0x0, 16);
        put32(&mut b, 0x4, 8192);
        put32(&mut b, 0x14, 1);
        put32(&mut b, 0x20, 8192);
        put32(&mut b, 0x28, 16);
        put32(&mut b, 0x4C, 1);
        put32(&mut b, 0x54, 11);
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        put32(&mut b, 0x5C, if journal { compat::HAS_JOURNAL } else { 0 });
        put32(&mut b, 0x100, bits);
        b[0x200..0x200 + opts.len()].copy_from_slice(opts.as_bytes());
        Superblock::parse_bytes(&b).unwrap()
    }

    #[test]
    fn plain_defaults() {
        let m = MountDefaults::of(&sb(0x0c, "", true));
        assert_eq!(m.data_mode, None);
        assert!(m.journal && m.delalloc && !m.data_journal && !m.buffered_iomap);
        assert_eq!(m.summary(), "data=ordered, delalloc, no buffered_iomap");
        assert!(m.notes.is_empty());
    }

    #[test]
    fn data_journal_takes_effect_only_with_a_journal() {
        let with = MountDefaults::of(&sb(defm::JMODE_DATA, "", true));
        assert!(with.data_journal && !with.delalloc);
        assert_eq!(with.data_mode_source, Some(Source::DefaultMountOpts));
        let without = MountDefaults::of(&sb(defm::JMODE_DATA, "", false));
        assert!(without.wants_data_journal() && !without.data_journal);
        assert!(
            !without.delalloc,
            "the data=journal check clears delalloc first"
        );
        assert!(without.notes[0].contains("ignored"), "{:?}", without.notes);
        let noload = MountDefaults::of(&sb(0, "data=journal,noload", true));
        assert!(!noload.journal && !noload.data_journal);
        assert_eq!(noload.data_mode_source, Some(Source::MountOpts));
    }

    #[test]
    fn the_string_overrides_the_bits_and_the_last_option_wins() {
        let m = MountDefaults::of(&sb(defm::JMODE_DATA, "data=ordered", true));
        assert_eq!(m.data_mode, Some(DataMode::Ordered));
        assert!(!m.data_journal && m.delalloc);
        let m = MountDefaults::of(&sb(defm::NODELALLOC, "delalloc", true));
        assert!(m.delalloc);
        let m = MountDefaults::of(&sb(0, "buffered_iomap,nodelalloc,nobuffered_iomap", true));
        assert!(!m.buffered_iomap && !m.delalloc);
        let m = MountDefaults::of(&sb(0, "nobuffered_iomap, buffered_iomap,noatime", true));
        assert!(m.buffered_iomap);
        assert_eq!(m.other_options, ["noatime"]);
        assert_eq!(m.notes.len(), 2, "{:?}", m.notes);
        let m = MountDefaults::of(&sb(0, "delalloc,nodelalloc,data=journal", true));
        assert!(m.notes[0].contains("refuses"), "{:?}", m.notes);
    }
}
