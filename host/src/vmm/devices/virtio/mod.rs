//! virtio devices and their MMIO transport.

pub mod mmio;
