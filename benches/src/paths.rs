//! The write paths a run can compare, by the names reports use, and the
//! untimed counting pass that reports how many buffer heads they walk.
//!
//! Timed runs always get [`make_path`]: its buffer-head paths are
//! `BufferHeadPath<NoCount>`, which has no counter code compiled in, so the
//! timed loop pays nothing iomap does not. The heads a call walks come from
//! [`count_walks`], a separate pass over a counting path
//! ([`make_counting_path`]) that repeats the measured call a few times on a
//! file prepared the same way, outside any timed region.

use anyhow::Context;
use bufwrite_compat::{BufferHeadPath, Mode, NoCount, WalkCounter};
use bufwrite_engine::{File, IomapPath, WritePath};
use std::sync::Arc;

/// The buffer-head path as every timed run builds it (no counters).
pub type TimedBufferHeadPath = BufferHeadPath<NoCount>;

/// Calls the counting pass averages over (walk counts are deterministic;
/// more than one guards against a first call that differs).
pub const COUNTING_CALLS: u64 = 4;

/// The iomap path's name (what `IomapPath::name` returns).
pub const IOMAP: &str = "iomap";

/// Every write path this build knows, in report order: iomap, then the
/// buffer-head modes under the names `bufwrite_compat::Mode` gives them
/// (the one list of names; nothing else spells them out).
pub fn names() -> impl Iterator<Item = &'static str> {
    std::iter::once(IOMAP).chain(Mode::ALL.map(Mode::name))
}

/// The paths `--paths` names, checked ([`check_paths`]), or every path
/// when it names none.
pub fn select_paths(names: &[String]) -> anyhow::Result<Vec<String>> {
    if names.is_empty() {
        return Ok(self::names().map(str::to_string).collect());
    }
    check_paths(names)?;
    Ok(names.to_vec())
}

/// A fresh write path by name; an unknown name is an error that lists the
/// valid ones.
pub fn make_path(name: &str) -> anyhow::Result<Box<dyn WritePath>> {
    match name {
        IOMAP => Ok(Box::new(IomapPath::new())),
        _ => Ok(Box::new(TimedBufferHeadPath::new(mode(name)?))),
    }
}

fn mode(name: &str) -> anyhow::Result<Mode> {
    Mode::from_name(name).with_context(|| {
        format!(
            "unknown write path {name:?} (valid paths: {})",
            names().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The path `name` built to count the heads it walks into `walks`, for the
/// untimed counting pass (iomap walks no heads and is built as usual).
pub fn make_counting_path(
    name: &str,
    walks: &Arc<WalkCounter>,
) -> anyhow::Result<Box<dyn WritePath>> {
    match name {
        IOMAP => Ok(Box::new(IomapPath::new())),
        _ => Ok(Box::new(BufferHeadPath::counting(
            mode(name)?,
            Arc::clone(walks),
        ))),
    }
}

/// The counting pass: opens a file on path `name` built to count (`open`
/// gets the path and returns the file, set up as the timed file is), runs
/// `call` once to settle, then [`COUNTING_CALLS`] times counted, and returns
/// the heads walked per call (write_begin plus commit). Nothing here is
/// timed; the file is dropped at the end.
pub fn count_walks(
    name: &str,
    open: impl FnOnce(Box<dyn WritePath>) -> anyhow::Result<File>,
    mut call: impl FnMut(&File) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let walks = WalkCounter::new();
    let file = open(make_counting_path(name, &walks)?)
        .with_context(|| format!("counting pass for {name}"))?;
    call(&file).with_context(|| format!("counting pass for {name}"))?;
    walks.reset();
    for _ in 0..COUNTING_CALLS {
        call(&file).with_context(|| format!("counting pass for {name}"))?;
    }
    Ok(walks.stats().total() / COUNTING_CALLS)
}

/// Checks a list of path names (for `--paths`): every name known, none twice.
pub fn check_paths(names: &[String]) -> anyhow::Result<()> {
    for (i, name) in names.iter().enumerate() {
        make_path(name)?;
        if names[..i].contains(name) {
            anyhow::bail!("write path {name:?} is listed twice");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bufwrite_engine::device::mem::Mem;
    use bufwrite_engine::{FileOptions, Flat, OrderPolicy};

    #[test]
    fn timed_paths_have_no_counters_compiled_in() {
        // The type every timed buffer-head run uses counts nothing and holds
        // no counter: its only field is the mode.
        const { assert!(!TimedBufferHeadPath::COUNTS_WALKS) };
        assert_eq!(size_of::<TimedBufferHeadPath>(), size_of::<Mode>());
        const { assert!(BufferHeadPath::<Arc<WalkCounter>>::COUNTS_WALKS) };
    }

    /// Heads per 1 KiB overwrite at offset 0 of an uptodate order-9 folio
    /// (4 KiB blocks), from the counting pass.
    fn heads_at_head_of_order9(name: &str) -> u64 {
        let size = 2u64 << 20;
        let open = |path: Box<dyn WritePath>| -> anyhow::Result<File> {
            let flat = Arc::new(Flat::new(0, size, 4096, 0)?);
            let opts = FileOptions {
                order: OrderPolicy::Fixed(9),
            };
            let file = File::open(Arc::new(Mem::new(size)), flat, path, opts)?;
            file.pwrite(0, &vec![7u8; size as usize])?;
            Ok(file)
        };
        count_walks(name, open, |f| {
            f.pwrite(0, &[1u8; 1024])?;
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn counting_pass_reports_the_heads_walked() {
        // 512 heads in each of write_begin and commit.
        assert_eq!(heads_at_head_of_order9("bh-legacy"), 1024);
        // The fix: one head each.
        assert_eq!(heads_at_head_of_order9("bh-tailskip"), 2);
        assert_eq!(heads_at_head_of_order9("bh-seek"), 2);
        assert_eq!(heads_at_head_of_order9("iomap"), 0);
    }

    #[test]
    fn every_listed_path_builds_under_its_name() {
        assert_eq!(
            names().collect::<Vec<_>>(),
            ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"]
        );
        for name in names() {
            assert_eq!(make_path(name).unwrap().name(), name);
        }
    }

    #[test]
    fn unknown_path_lists_the_valid_ones() {
        let err = make_path("ext2").err().unwrap().to_string();
        assert!(err.contains("\"ext2\"") && err.contains("iomap"), "{err}");
        assert!(check_paths(&["iomap".into(), "iomap".into()]).is_err());
        assert_eq!(select_paths(&[]).unwrap().len(), 4);
        assert_eq!(select_paths(&["bh-seek".into()]).unwrap(), ["bh-seek"]);
        assert!(select_paths(&["bh-seek".into(), "x".into()]).is_err());
    }
}
