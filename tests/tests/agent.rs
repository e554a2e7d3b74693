//! The guest agent must be a static executable: the initramfs has no libc.

use std::path::PathBuf;
use std::process::Command;

use vmbench_e2e::{agent_bin, skip_unless_ci, workspace};

/// The built agent, or `None` (after printing why, or failing under CI)
/// when it is not built.
fn built_agent(test: &str) -> Option<PathBuf> {
    let agent = agent_bin();
    if agent.is_file() {
        return Some(agent);
    }
    let reason = format!("{} is not built (scripts/build-agent.sh)", agent.display());
    skip_unless_ci(test, &reason);
    None
}

#[test]
fn agent_is_statically_linked() {
    let Some(agent) = built_agent("agent_is_statically_linked") else {
        return;
    };
    let bytes = std::fs::read(&agent).unwrap();
    // ELF64, executable (ET_EXEC: not PIE), no PT_INTERP or PT_DYNAMIC segment.
    assert_eq!(&bytes[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    assert_eq!(e_type, 2, "ET_EXEC expected, got e_type {e_type}");
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(bytes[phoff + i * phentsize..][..4].try_into().unwrap());
        assert_ne!(p_type, 3, "PT_INTERP present: dynamically linked");
        assert_ne!(p_type, 2, "PT_DYNAMIC present: not fully static");
    }
    let ldd = Command::new("ldd").arg(&agent).output().expect("run ldd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        text.contains("not a dynamic executable"),
        "ldd says: {text}"
    );
}

#[test]
fn agent_refuses_to_run_outside_a_guest() {
    // Run as an ordinary process it must not mount or reboot anything.
    let Some(agent) = built_agent("agent_refuses_to_run_outside_a_guest") else {
        return;
    };
    let out = Command::new(&agent)
        .current_dir(workspace())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error=not_pid1"));
}
