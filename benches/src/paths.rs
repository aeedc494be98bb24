//! The write paths a run can compare, by the names reports use.

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::{IomapPath, WritePath};

/// Every write path this build knows, in report order.
pub const PATHS: &[&str] = &["iomap", "bh-legacy", "bh-tailskip", "bh-seek"];

/// A fresh write path by name; an unknown name is an error that lists the
/// valid ones.
pub fn make_path(name: &str) -> anyhow::Result<Box<dyn WritePath>> {
    match name {
        "iomap" => Ok(Box::new(IomapPath::new())),
        "bh-legacy" => Ok(Box::new(BufferHeadPath::new(Mode::Legacy))),
        "bh-tailskip" => Ok(Box::new(BufferHeadPath::new(Mode::TailSkip))),
        "bh-seek" => Ok(Box::new(BufferHeadPath::new(Mode::SeekToFrom))),
        _ => anyhow::bail!(
            "unknown write path {name:?} (valid paths: {})",
            PATHS.join(", ")
        ),
    }
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

    #[test]
    fn every_listed_path_builds_under_its_name() {
        for name in PATHS {
            assert_eq!(make_path(name).unwrap().name(), *name);
        }
    }

    #[test]
    fn unknown_path_lists_the_valid_ones() {
        let err = make_path("ext2").err().unwrap().to_string();
        assert!(err.contains("\"ext2\"") && err.contains("iomap"), "{err}");
        assert!(check_paths(&["iomap".into(), "iomap".into()]).is_err());
    }
}
