//! The guest's command line: space-separated `key=value` words.
//!
//! - `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` (as
//!   `freestanding::cmdline` parses it);
//! - `vsockguest.connect=<port>`, `vsockguest.listen=<port>` (decimal u32),
//!   `vsockguest.message=<token>` (any bytes but spaces),
//!   `vsockguest.wait_ticks=<ticks>` (how long one wait may last, in TSC
//!   ticks; decimal or `0x` hex, not 0).
//!
//! Other words are ignored; a bad value for one of ours is an error.

use freestanding::cmdline::{parse_device, parse_number, parse_u32, words};
pub use freestanding::cmdline::{MmioDevice, Printable};

use crate::{Error, Result};

pub const MAX_DEVICES: usize = 8;
/// The message and its newline must fit in one packet.
pub const MAX_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Config<'a> {
    devices: [MmioDevice; MAX_DEVICES],
    device_count: usize,
    pub connect: Option<u32>,
    pub listen: Option<u32>,
    pub message: Option<&'a [u8]>,
    pub wait_ticks: Option<u64>,
}

impl Config<'_> {
    /// The virtio-mmio devices, in command-line order.
    pub fn devices(&self) -> &[MmioDevice] {
        &self.devices[..self.device_count]
    }
}

pub fn parse(cmdline: &[u8]) -> Result<Config<'_>> {
    let mut config = Config::default();
    for (key, value) in words(cmdline) {
        match key {
            b"virtio_mmio.device" => {
                let device = parse_device(value).ok_or(Error::BadParam {
                    name: "virtio_mmio.device",
                })?;
                let slot = config
                    .devices
                    .get_mut(config.device_count)
                    .ok_or(Error::TooManyDevices)?;
                *slot = device;
                config.device_count += 1;
            }
            b"vsockguest.connect" => {
                let port = parse_u32(value).ok_or(Error::BadParam {
                    name: "vsockguest.connect",
                })?;
                config.connect = Some(port);
            }
            b"vsockguest.listen" => {
                let port = parse_u32(value).ok_or(Error::BadParam {
                    name: "vsockguest.listen",
                })?;
                config.listen = Some(port);
            }
            b"vsockguest.message" => {
                if value.is_empty() || value.len() > MAX_MESSAGE_BYTES {
                    return Err(Error::BadParam {
                        name: "vsockguest.message",
                    });
                }
                config.message = Some(value);
            }
            b"vsockguest.wait_ticks" => {
                let ticks = parse_number(value).filter(|&t| t > 0);
                config.wait_ticks = Some(ticks.ok_or(Error::BadParam {
                    name: "vsockguest.wait_ticks",
                })?);
            }
            _ => {}
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_microvm_line() {
        let line = b"vsockguest.connect=5000 vsockguest.message=tok-123  \
                     virtio_mmio.device=512@0xfeb00e00:12";
        let config = parse(line).unwrap();
        assert_eq!(
            config.devices(),
            [MmioDevice {
                base: 0xfeb0_0e00,
                size: 512,
                irq: 12
            }]
        );
        assert_eq!(config.connect, Some(5000));
        assert_eq!(config.listen, None);
        assert_eq!(config.message, Some(&b"tok-123"[..]));
        assert_eq!(config.wait_ticks, None);
    }

    #[test]
    fn wait_ticks() {
        let config = parse(b"vsockguest.wait_ticks=3000000000").unwrap();
        assert_eq!(config.wait_ticks, Some(3_000_000_000));
        let config = parse(b"vsockguest.wait_ticks=0x10").unwrap();
        assert_eq!(config.wait_ticks, Some(16));
        for bad in [
            &b"vsockguest.wait_ticks=0"[..],
            b"vsockguest.wait_ticks=",
            b"vsockguest.wait_ticks=1s",
        ] {
            assert_eq!(
                parse(bad),
                Err(Error::BadParam {
                    name: "vsockguest.wait_ticks"
                })
            );
        }
    }

    #[test]
    fn vmbench_vmm_line_with_several_devices() {
        let line = b"console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
                     virtio_mmio.device=4K@0xd0001000:6:3\tvsockguest.listen=6000\n";
        let config = parse(line).unwrap();
        assert_eq!(
            config.devices(),
            [
                MmioDevice {
                    base: 0xd000_0000,
                    size: 4096,
                    irq: 5
                },
                MmioDevice {
                    base: 0xd000_1000,
                    size: 4096,
                    irq: 6
                }
            ]
        );
        assert_eq!(config.listen, Some(6000));
        assert_eq!(config.connect, None);
        assert_eq!(config.message, None);
    }

    #[test]
    fn bad_devices_are_errors() {
        for bad in [
            &b"virtio_mmio.device=512"[..],
            b"virtio_mmio.device=512@0xfeb00000",
            b"virtio_mmio.device=512@0xfeb00000:",
            b"virtio_mmio.device=512@:5",
            b"virtio_mmio.device=0@0x1000:5",
            b"virtio_mmio.device=512@0xzz:5",
            b"virtio_mmio.device=512@0x1000:5:1:2",
            b"virtio_mmio.device=2@0xffffffffffffffff:5",
            b"virtio_mmio.device=",
        ] {
            assert_eq!(
                parse(bad),
                Err(Error::BadParam {
                    name: "virtio_mmio.device"
                }),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bad_ports_and_messages_are_errors() {
        for (line, name) in [
            (&b"vsockguest.connect="[..], "vsockguest.connect"),
            (b"vsockguest.connect=abc", "vsockguest.connect"),
            (b"vsockguest.connect=4294967296", "vsockguest.connect"),
            (b"vsockguest.listen=-1", "vsockguest.listen"),
            (b"vsockguest.listen=0x10", "vsockguest.listen"),
            (b"vsockguest.message=", "vsockguest.message"),
        ] {
            assert_eq!(parse(line), Err(Error::BadParam { name }));
        }
        let long = [
            b"vsockguest.message=".as_slice(),
            &[b'a'; MAX_MESSAGE_BYTES + 1],
        ]
        .concat();
        assert_eq!(
            parse(&long),
            Err(Error::BadParam {
                name: "vsockguest.message"
            })
        );
    }

    #[test]
    fn too_many_devices() {
        let one = b"virtio_mmio.device=512@0x1000:5 ";
        let line = one.repeat(MAX_DEVICES);
        assert_eq!(parse(&line).unwrap().devices().len(), MAX_DEVICES);
        let line = one.repeat(MAX_DEVICES + 1);
        assert_eq!(parse(&line), Err(Error::TooManyDevices));
    }

    #[test]
    fn other_words_are_ignored_and_last_value_wins() {
        let config = parse(b"quiet x= =y vsockguest.listen=1 vsockguest.listen=2").unwrap();
        assert_eq!(config.listen, Some(2));
        assert!(config.devices().is_empty());
        assert_eq!(parse(b"").unwrap(), Config::default());
    }
}
