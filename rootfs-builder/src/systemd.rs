//! The agent in a systemd guest: the unit that starts it once the system
//! is up, and how to tell that a root file system boots with systemd.

use crate::lookup::{lookup, Lookup, NodeKind, RootView};
use crate::Result;

/// The agent's unit. `Type=simple`: the agent waits for the boot to finish
/// and then reports; as a oneshot wanted by multi-user.target it would be
/// part of the boot it waits for, and the boot would never finish.
pub const AGENT_UNIT: &str = "\
[Unit]
Description=vmbench agent: reports this boot to the host once it has finished
# Type=simple, never oneshot: a oneshot unit wanted by multi-user.target that
# waits for the boot to finish would be waiting for itself.

[Service]
Type=simple
ExecStart=/usr/local/sbin/vmbench-init --systemd-service
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// Where the agent is installed in every image.
pub const AGENT_PATH: &str = "/usr/local/sbin/vmbench-init";
/// Where [`AGENT_UNIT`] is installed.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/vmbench-agent.service";
/// The symlink that enables it (what `systemctl enable` would make).
pub const AGENT_UNIT_WANTS_PATH: &str =
    "/etc/systemd/system/multi-user.target.wants/vmbench-agent.service";
/// The image's provenance, inside the image.
pub const IMAGE_JSON_PATH: &str = "/etc/vmbench/image.json";

/// Where distributions put systemd itself (Debian before the usr merge
/// `/lib`, after it both, through the `/lib -> usr/lib` symlink).
const SYSTEMD_PATHS: [&str; 2] = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"];

/// The symlink-free path of the systemd binary in `root`, if it has one:
/// an executable file at one of the usual places, symlinks followed inside
/// the root.
pub(crate) fn find_systemd(root: &dyn RootView) -> Result<Option<String>> {
    for path in SYSTEMD_PATHS {
        match lookup(root, path, true) {
            Ok(Lookup::Found {
                real,
                kind: NodeKind::File { executable: true },
            }) => return Ok(Some(crate::lookup::absolute(&real))),
            Ok(_) => {}
            // A broken path (a file where a directory should be, a symlink
            // loop) means no systemd there, not a failed build.
            Err(crate::Error::NotADirectory { .. } | crate::Error::SymlinkLoop { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lookup::tests::MapView;

    #[test]
    fn the_unit_is_simple_and_enabled_for_multi_user() {
        assert!(AGENT_UNIT.contains("\nType=simple\n"));
        assert!(AGENT_UNIT.contains(&format!("ExecStart={AGENT_PATH} --systemd-service")));
        assert!(AGENT_UNIT.contains("WantedBy=multi-user.target"));
        assert!(AGENT_UNIT_WANTS_PATH.contains("multi-user.target.wants"));
    }

    #[test]
    fn systemd_is_found_through_usr_merge_links() {
        let mut map = BTreeMap::new();
        for dir in ["/usr", "/usr/lib", "/usr/lib/systemd"] {
            map.insert(dir.to_string(), NodeKind::Dir);
        }
        map.insert(
            "/lib".into(),
            NodeKind::Symlink {
                target: "usr/lib".into(),
            },
        );
        map.insert(
            "/usr/lib/systemd/systemd".into(),
            NodeKind::File { executable: true },
        );
        let view = MapView(map);
        assert_eq!(
            find_systemd(&view).unwrap().as_deref(),
            Some("/usr/lib/systemd/systemd")
        );
        let mut no_exec = view.0.clone();
        no_exec.insert(
            "/usr/lib/systemd/systemd".into(),
            NodeKind::File { executable: false },
        );
        assert_eq!(find_systemd(&MapView(no_exec)).unwrap(), None);
        assert_eq!(find_systemd(&MapView(BTreeMap::new())).unwrap(), None);
    }
}
