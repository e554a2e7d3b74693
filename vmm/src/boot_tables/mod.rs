//! Structures the guest finds in memory at its first instruction.

pub mod gdt;
pub mod mptable;
pub mod paging;
pub mod params;
pub mod pvh;

/// Writing a boot structure into guest memory failed: the guest is too small.
#[derive(Debug, thiserror::Error)]
#[error("Guest memory has no room for the {what} at {addr:#x}: {source}")]
pub struct WriteError {
    pub what: &'static str,
    pub addr: u64,
    #[source]
    pub source: vm_memory::GuestMemoryError,
}
