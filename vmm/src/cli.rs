//! The VMM's command line, `vmbench vmm` (and its own program,
//! `vmbench-vmm`, built with `vmbench` and installed beside it, which `vmbench
//! vmm` becomes where it is there): arguments into a [`MachineConfig`], the VM run to its end,
//! one line on how it ended and the exit status that goes with it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;

use crate::boot_tables::mptable;
use crate::command;
use crate::machine::{DiskConfig, EntryChoice, MachineConfig};
use crate::seccomp::{self, ThreadKind};

/// `--mem-mib`'s range: the least a tiny guest runs in, and 256 GiB, whose
/// guest-physical space with the MMIO gap fits the 39 address bits of the
/// smallest current x86-64 hosts.
const MIN_MEM_MIB: i64 = 16;
const MAX_MEM_MIB: i64 = 256 * 1024;
/// `--vsock-cid`'s range (see the option).
const MIN_CID: u64 = 3;
const MAX_CID: u64 = u32::MAX as u64 - 1;

/// `vmbench vmm`'s (and `vmbench-vmm`'s) arguments.
#[derive(clap::Args, Debug)]
pub struct VmmArgs {
    /// Guest kernel: ELF vmlinux or bzImage.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initramfs to load at the top of guest RAM.
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 panic=-1 reboot=t")]
    pub cmdline: String,
    /// Guest memory in MiB (16 to 262144).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(MIN_MEM_MIB..=MAX_MEM_MIB))]
    pub mem_mib: u32,
    /// vCPUs (an MP table describes them; application processors wait for
    /// the kernel's INIT/SIPI), 1 to 254.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(mptable::MAX_CPUS)))]
    pub vcpus: u32,
    /// The VM's directory: serial.log, vmm.json and the vsock sockets go here.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Kernel entry: PVH when the kernel has the note (auto), or force one.
    #[arg(long, value_enum, default_value_t = EntryArg::Auto)]
    pub entry: EntryArg,
    /// Give the guest a virtio-vsock device with this CID: its connections to
    /// host port P arrive on `<dir>/vsock.sock_P`; host programs reach it through
    /// `<dir>/vsock.sock` with `CONNECT <port>\n` (Firecracker's convention).
    /// 3 to 4294967294: 0 to 2 are the hypervisor's, the loopback's and the
    /// host's, 0xffffffff is VMADDR_CID_ANY, and virtio-vsock reserves the
    /// upper 32 bits.
    #[arg(long, value_parser = clap::value_parser!(u64).range(MIN_CID..=MAX_CID))]
    pub vsock_cid: Option<u64>,
    /// Give the guest a virtio-blk disk (repeatable; the first is its /dev/vda,
    /// e.g. with --cmdline "... root=/dev/vda"): a raw or qcow2 image, opened
    /// read-write; `,ro` makes it read-only for the guest. A writable disk's
    /// format must be stated (`,format=raw` or `,format=qcow2`): probing the
    /// bytes a guest writes would let it forge a qcow2 header naming any host
    /// file; a read-only one without it is probed. A qcow2 image's backing
    /// files are only ever read: the guest's writes stay in the image.
    #[arg(long = "disk", value_name = "PATH[,format=raw|qcow2][,ro]")]
    pub disks: Vec<DiskConfig>,
    /// A test aid for hosts whose KVM emulates guest code (nested KVM
    /// without hardware support): complete the few instructions KVM's
    /// emulator refuses (INT3, UD2, CLAC, STAC, register POPCNT) so Linux
    /// gets as far as it can. Timings are then the emulator's. `vmbench boot
    /// --backend kvm` turns it on where its KVM calibration finds KVM emulating.
    #[arg(long)]
    pub emulated_kvm: bool,
    /// Run without the seccomp filters (for debugging: strace, a debugger,
    /// RUST_BACKTRACE). By default each VMM thread (vCPU, device, main)
    /// allows only the system calls it needs once the VM is set up, and a
    /// forbidden one ends the VMM with a line naming it (exit status 159).
    #[arg(long)]
    pub no_seccomp: bool,
    /// A test aid: once its filter is on, a thread of this kind makes a
    /// system call no filter allows (`execve`; the vCPU thread at the
    /// guest's first exit), so a test sees the filter catch and report it.
    #[arg(long, value_enum, value_name = "THREAD")]
    pub forbidden_syscall_in: Option<ThreadKind>,
}

/// The kernel entry to use.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EntryArg {
    Auto,
    Pvh,
    Linux64,
}

impl VmmArgs {
    pub fn config(self) -> MachineConfig {
        MachineConfig {
            vsock: self
                .vsock_cid
                .map(|cid| command::vsock_in_dir(&self.dir, cid)),
            kernel: self.kernel,
            initramfs: self.initramfs,
            cmdline: self.cmdline,
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            dir: self.dir,
            entry: match self.entry {
                EntryArg::Auto => EntryChoice::Auto,
                EntryArg::Pvh => EntryChoice::Pvh,
                EntryArg::Linux64 => EntryChoice::Linux64,
            },
            disks: self.disks,
            emulated_kvm: self.emulated_kvm,
            seccomp: !self.no_seccomp,
            forbidden_syscall_in: self.forbidden_syscall_in,
        }
    }
}

/// Runs the VM to its end: a line on how it ended (stdout, or stderr for a
/// failure or a stop) and the status for it; an error before the VM ran is
/// one line and status 2.
pub fn run(args: VmmArgs) -> ExitCode {
    // Before the VMM opens anything of its own.
    seccomp::close_inherited_fds();
    if let Err(e) = seccomp::limit_resources() {
        eprintln!("vmbench: error: Cannot limit the VMM's resources: {e}");
        return ExitCode::from(2);
    }
    if !args.no_seccomp {
        seccomp::set_panic_hook();
    }
    match command::run(&args.config()) {
        Ok(ended) => {
            match ended.message() {
                (line, true) => eprintln!("{line}"),
                (line, false) => println!("{line}"),
            }
            ExitCode::from(ended.exit_code())
        }
        Err(error) => {
            eprintln!("vmbench: error: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, as vmbench shows every failure a
/// user can cause: never a backtrace, never a cause said twice (an error
/// that prints its source itself is not followed by it again).
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(text.as_str()) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// This process's arguments parsed as `P`. Help and version are printed as
/// clap prints them; a bad argument (a value out of its range, an unknown
/// option) is one line, `vmbench: error: …`, and exit status 2, as every
/// error a user can cause.
pub fn parse_or_exit<P: clap::Parser>() -> P {
    use clap::error::ErrorKind;
    P::try_parse().unwrap_or_else(|error| match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => {
            eprintln!("vmbench: error: {}", usage_error_line(&error.to_string()));
            std::process::exit(2)
        }
    })
}

/// clap's rendering of a usage error as one line: its first paragraph (the
/// error, and what it lists: missing options, possible values), without
/// the usage and the hint that follow.
pub fn usage_error_line(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    paragraph
        .join(" ")
        .trim_start_matches("error: ")
        .to_string()
}

/// Text a guest wrote (its console, its agent's messages, unit names),
/// made safe for the operator's terminal: every control character — C0
/// (newline and tab included), DEL, C1 — and every bidirectional-formatting
/// character becomes a visible escape (`\x1b`, `\n`, `\u{202e}`), so a
/// guest can neither move the cursor, recolour, retitle or clear the
/// terminal, nor start a line of its own or reorder what follows. Files
/// (results.json, vmm.json) keep the raw text.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// The VMM's own program's name, installed beside `vmbench`.
pub const PROGRAM: &str = "vmbench-vmm";

/// `vmbench-vmm` beside the executable `exe` (`vmbench`), if it is there.
pub fn program_beside(exe: &Path) -> Option<PathBuf> {
    exe.parent()
        .map(|dir| dir.join(PROGRAM))
        .filter(|program| program.is_file())
}

/// When this process is `vmbench vmm …` and `vmbench-vmm` is beside its
/// executable, replaces this process with it (same pid, same arguments):
/// the VMM then carries only the VMM's code. Returns only if it is not
/// `vmbench vmm`, or the program is not there or cannot be run (then the
/// same VMM runs in this process).
pub fn exec_beside_if_vmm() {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new("vmm")) {
        return;
    }
    let Some(program) = std::env::current_exe()
        .ok()
        .and_then(|exe| program_beside(&exe))
    else {
        return;
    };
    // exec returns only on failure.
    let _ = std::process::Command::new(program).args(args).exec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_cannot_drive_the_terminal() {
        assert_eq!(
            printable("plain text, ünïcode ok"),
            "plain text, ünïcode ok"
        );
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
        let hostile = "\x1b[2J\x1b]0;owned\x07red\nvm-9 ok\r\t\u{9b}31m\u{7f}\u{202e}txt";
        let safe = printable(hostile);
        assert_eq!(
            safe,
            "\\x1b[2J\\x1b]0;owned\\x07red\\nvm-9 ok\\r\\t\\x9b31m\\x7f\\u{202e}txt"
        );
        assert!(!safe.chars().any(needs_escape), "{safe}");
    }
}
