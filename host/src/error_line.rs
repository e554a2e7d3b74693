//! An error and its causes on one line, as vmbench shows every failure a
//! user can cause: never a backtrace, never a cause said twice.

/// `error: cause: cause …`; a cause whose text the line already holds (an
/// error that prints its source itself) is not repeated. One rule for every
/// vmbench program: the VMM's (`vmbench-vmm` has it without the orchestrator).
pub use vmbench_vmm::cli::one_line;

/// Guest text made safe for a terminal: control and bidi characters escaped
/// (the VMM's rule, which `vmbench-vmm` prints by too). Every renderer and
/// progress line passes guest-written text through it; JSON keeps it raw.
pub use vmbench_vmm::cli::printable;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot start {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot read it: {0}")]
    struct SaysItsSource(#[source] std::io::Error);

    #[test]
    fn causes_follow_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            one_line(&Outer("qemu", io())),
            "Cannot start qemu: no such file"
        );
        assert_eq!(
            one_line(&SaysItsSource(io())),
            "Cannot read it: no such file"
        );
    }
}
