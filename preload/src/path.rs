//! Lexical path normalisation and the "is it under the mount?" test.
//!
//! The kernel never sees mount paths, so they are resolved here, by text:
//! `.` and empty components are dropped and `..` removes the previous
//! component (at `/` it stays at `/`, as the kernel does). Symlinks outside
//! the mount that point into it are not followed (the kernel resolves
//! those, and then reports ENOENT).

/// Joins `path` to `cwd` when it is relative and collapses `.`, `..` and
/// repeated slashes. The result is absolute, has no trailing slash (except
/// `/` itself), and never climbs above `/`. `None` when `path` is relative
/// and `cwd` is not absolute (no base to resolve it against).
pub fn normalise(cwd: &[u8], path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    if path.first() != Some(&b'/') {
        if cwd.first() != Some(&b'/') {
            return None;
        }
        push_components(&mut parts, cwd);
    }
    push_components(&mut parts, path);
    let mut out = Vec::with_capacity(path.len() + cwd.len() + 1);
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

fn push_components<'a>(parts: &mut Vec<&'a [u8]>, path: &'a [u8]) {
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
}

/// The path inside the mount (`/` for the mount point itself, `/a/b` for
/// `PREFIX/a/b`) when the normalised absolute `path` is `prefix` or below
/// it; `None` otherwise. `prefix` is normalised too (no trailing slash);
/// a prefix of `/` would claim every path and is refused by the caller.
pub fn under_mount(prefix: &[u8], path: &[u8]) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    if !rest.is_empty() && rest[0] != b'/' {
        // `/bufwritex` is not under `/bufwrite`.
        return None;
    }
    let inner = if rest.is_empty() {
        b"/".as_slice()
    } else {
        rest
    };
    String::from_utf8(inner.to_vec()).ok()
}

/// Quick test on an absolute path's raw bytes, before any normalisation:
/// can it be under `prefix` at all? Lexically collapsed paths keep their
/// first component unless it is followed by `..`, so anything that does
/// not start with the prefix's first component and holds no `..` or `.`
/// component cannot be under it. Used to keep the pass-through path free
/// of allocation for the common case.
pub fn may_be_under(prefix: &[u8], path: &[u8]) -> bool {
    if path.starts_with(prefix) {
        return true;
    }
    // `//bufwrite`, `/./bufwrite`, `/x/../bufwrite`: only with a doubled
    // slash or a dot component can a path that does not start with the
    // prefix normalise to it.
    path.windows(2).any(|w| w == b"//" || w == b"/.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(cwd: &str, p: &str) -> String {
        String::from_utf8(normalise(cwd.as_bytes(), p.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn collapses_dots_and_slashes() {
        assert_eq!(n("/", "/bufwrite/a"), "/bufwrite/a");
        assert_eq!(n("/", "//bufwrite///a/"), "/bufwrite/a");
        assert_eq!(n("/", "/bufwrite/./a/."), "/bufwrite/a");
        assert_eq!(n("/", "/bufwrite/x/../a"), "/bufwrite/a");
        assert_eq!(n("/", "/"), "/");
        assert_eq!(n("/", "/.."), "/");
        assert_eq!(n("/", "/../../bufwrite/a"), "/bufwrite/a");
    }

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(n("/bufwrite", "a"), "/bufwrite/a");
        assert_eq!(n("/bufwrite/d", "../a"), "/bufwrite/a");
        assert_eq!(n("/tmp", "../bufwrite/a"), "/bufwrite/a");
        assert_eq!(n("/bufwrite", ".."), "/");
        assert_eq!(n("/bufwrite", "."), "/bufwrite");
        assert!(normalise(b"", b"a").is_none());
        assert!(normalise(b"rel", b"a").is_none());
    }

    #[test]
    fn mount_membership() {
        let p = b"/bufwrite";
        assert_eq!(under_mount(p, b"/bufwrite").as_deref(), Some("/"));
        assert_eq!(under_mount(p, b"/bufwrite/a").as_deref(), Some("/a"));
        assert_eq!(under_mount(p, b"/bufwrite/a/b").as_deref(), Some("/a/b"));
        assert_eq!(under_mount(p, b"/bufwritex/a"), None);
        assert_eq!(under_mount(p, b"/bufwrit"), None);
        assert_eq!(under_mount(p, b"/tmp/bufwrite/a"), None);
    }

    #[test]
    fn dotdot_cannot_escape_or_sneak_in() {
        let p = b"/bufwrite";
        // Out of the mount: no longer ours.
        let esc = normalise(b"/", b"/bufwrite/../etc/passwd").unwrap();
        assert_eq!(under_mount(p, &esc), None);
        let esc = normalise(b"/bufwrite", b"../../etc").unwrap();
        assert_eq!(esc, b"/etc");
        assert_eq!(under_mount(p, &esc), None);
        // Back in through `..`: ours, at the right place.
        let back = normalise(b"/", b"/bufwrite/a/../../bufwrite/b").unwrap();
        assert_eq!(under_mount(p, &back).as_deref(), Some("/b"));
        // `..` inside the mount never goes above its root within it.
        let inner = normalise(b"/", b"/bufwrite/a/../b").unwrap();
        assert_eq!(under_mount(p, &inner).as_deref(), Some("/b"));
    }

    #[test]
    fn quick_test_never_misses_a_mount_path() {
        let p = b"/bufwrite";
        for path in [
            "/bufwrite/a",
            "//bufwrite/a",
            "/./bufwrite/a",
            "/x/../bufwrite/a",
            "/bufwrite",
        ] {
            assert!(may_be_under(p, path.as_bytes()), "{path}");
            let norm = normalise(b"/", path.as_bytes()).unwrap();
            assert!(under_mount(p, &norm).is_some(), "{path}");
        }
        assert!(!may_be_under(p, b"/tmp/x"));
        assert!(!may_be_under(p, b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
