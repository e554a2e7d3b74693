//! Path lookup inside a guest's root, following its symlinks the way the
//! guest will, with `/` meaning the guest's root and never the host's.
//!
//! A usr-merged tree has `/sbin -> usr/sbin` and `/lib -> usr/lib` (or the
//! absolute `/usr/lib`); checking `tree.join("sbin/init")` on the host would
//! follow an absolute link out of the tree into the host's own `/usr`. Here
//! every component is looked up with lstat semantics through a [`RootView`]
//! (a directory tree on the host, or an ext4 image read with debugfs), and
//! symlinks are expanded by hand, relative to the guest root.

use crate::{Error, Result};

/// Linux's limit on symlinks followed in one path lookup.
const MAX_SYMLINKS_FOLLOWED: usize = 40;

/// What a path names, without following it if it is a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Dir,
    File { executable: bool },
    Symlink { target: String },
    Other,
}

/// A guest root to look paths up in. `real` is a path from the root with
/// no symlink in it (every component a real directory, the last any node).
pub(crate) trait RootView {
    /// The node at `real`, not following a final symlink; `None` if absent.
    fn lstat(&self, real: &[String]) -> Result<Option<NodeKind>>;
    /// How to name the root in errors (the tree or image path).
    fn describe(&self) -> String;
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The path exists: its symlink-free path and what it is.
    Found { real: Vec<String>, kind: NodeKind },
    /// It does not: `dir` is the deepest existing directory reached (symlink
    /// free) and `rest` the components that would have to be created there.
    Missing { dir: Vec<String>, rest: Vec<String> },
}

/// Looks `path` (absolute or not: both start at the guest root) up in
/// `view`; `follow_final` decides whether a final symlink is followed, as
/// `stat` does, or returned, as `lstat` does.
pub(crate) fn lookup(view: &dyn RootView, path: &str, follow_final: bool) -> Result<Lookup> {
    let mut pending: Vec<String> = components(path).rev().collect();
    let mut real: Vec<String> = Vec::new();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            real.pop();
            continue;
        }
        real.push(part);
        let is_last = pending.is_empty();
        match view.lstat(&real)? {
            None => {
                let missing = real.pop().expect("just pushed");
                let mut rest = vec![missing];
                rest.extend(pending.into_iter().rev());
                return Ok(Lookup::Missing { dir: real, rest });
            }
            Some(NodeKind::Symlink { target }) if !is_last || follow_final => {
                followed += 1;
                if followed > MAX_SYMLINKS_FOLLOWED {
                    return Err(Error::SymlinkLoop {
                        root: view.describe(),
                        path: path.to_string(),
                    });
                }
                real.pop();
                if target.starts_with('/') {
                    real.clear();
                }
                pending.extend(components(&target).rev());
            }
            Some(kind) if is_last => return Ok(Lookup::Found { real, kind }),
            Some(NodeKind::Dir) => {}
            Some(_) => {
                return Err(Error::NotADirectory {
                    root: view.describe(),
                    path: format!("/{}", real.join("/")),
                })
            }
        }
    }
    // The path named the root itself (or only "..").
    Ok(Lookup::Found {
        real,
        kind: NodeKind::Dir,
    })
}

/// Components other than "" and ".", which lookup skips.
fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .map(str::to_string)
}

/// `real` as an absolute guest path.
pub(crate) fn absolute(real: &[String]) -> String {
    format!("/{}", real.join("/"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A root described by a map from absolute path to node.
    pub(crate) struct MapView(pub BTreeMap<String, NodeKind>);

    impl RootView for MapView {
        fn lstat(&self, real: &[String]) -> Result<Option<NodeKind>> {
            Ok(self.0.get(&absolute(real)).cloned())
        }
        fn describe(&self) -> String {
            "map".to_string()
        }
    }

    fn usr_merged() -> MapView {
        let mut map = BTreeMap::new();
        for dir in ["/usr", "/usr/sbin", "/usr/lib", "/usr/lib/systemd", "/etc"] {
            map.insert(dir.to_string(), NodeKind::Dir);
        }
        let link = |t: &str| NodeKind::Symlink {
            target: t.to_string(),
        };
        map.insert("/sbin".into(), link("usr/sbin"));
        // Absolute, as some distributions make it: relative to the guest root.
        map.insert("/lib".into(), link("/usr/lib"));
        map.insert(
            "/usr/lib/systemd/systemd".into(),
            NodeKind::File { executable: true },
        );
        map.insert("/usr/sbin/init".into(), link("../lib/systemd/systemd"));
        map.insert("/loop".into(), link("/loop"));
        map.insert("/etc/passwd".into(), NodeKind::File { executable: false });
        MapView(map)
    }

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn usr_merge_symlinks_are_followed_inside_the_root() {
        let view = usr_merged();
        assert_eq!(
            lookup(&view, "/lib/systemd/systemd", true).unwrap(),
            Lookup::Found {
                real: strings(&["usr", "lib", "systemd", "systemd"]),
                kind: NodeKind::File { executable: true }
            }
        );
        assert_eq!(
            lookup(&view, "/sbin/init", false).unwrap(),
            Lookup::Found {
                real: strings(&["usr", "sbin", "init"]),
                kind: NodeKind::Symlink {
                    target: "../lib/systemd/systemd".into()
                }
            }
        );
        assert_eq!(
            lookup(&view, "/sbin/init", true).unwrap(),
            lookup(&view, "/usr/lib/systemd/systemd", true).unwrap()
        );
    }

    #[test]
    fn a_missing_path_says_where_creation_would_start() {
        let view = usr_merged();
        assert_eq!(
            lookup(&view, "/sbin/vmbench/x", false).unwrap(),
            Lookup::Missing {
                dir: strings(&["usr", "sbin"]),
                rest: strings(&["vmbench", "x"])
            }
        );
        assert_eq!(
            lookup(&view, "/", true).unwrap(),
            Lookup::Found {
                real: vec![],
                kind: NodeKind::Dir
            }
        );
        // ".." never climbs above the guest root.
        assert_eq!(
            lookup(&view, "/../../etc/passwd", true).unwrap(),
            Lookup::Found {
                real: strings(&["etc", "passwd"]),
                kind: NodeKind::File { executable: false }
            }
        );
    }

    #[test]
    fn loops_and_files_used_as_directories_are_errors() {
        let view = usr_merged();
        assert!(matches!(
            lookup(&view, "/loop/x", true),
            Err(Error::SymlinkLoop { .. })
        ));
        let err = lookup(&view, "/etc/passwd/x", true).unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}
