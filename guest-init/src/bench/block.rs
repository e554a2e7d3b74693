//! Block benchmarks on the scratch disk `vmbench bench` attaches (a raw
//! file, the virtio-blk disk with serial `vmbench-scratch`): `blk_read_bw`
//! (1 MiB sequential reads) and `blk_read_lat` (4 KiB reads at random
//! offsets), both O_DIRECT so the guest's page cache is not what is timed.
//! Reads only: the disk is never written.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::memory::Mapping;
use super::timing::time_fallible;
use super::{require_vm, Env, SetupError, Workload};

/// The serial `vmbench bench` gives the scratch disk.
pub const SCRATCH_SERIAL: &str = "vmbench-scratch";

const BW_BLOCK_BYTES: usize = 1 << 20;
const LAT_BLOCK_BYTES: usize = 4096;

/// A virtio-blk disk the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `vdb`
    pub name: String,
    /// Its serial, if it has one.
    pub serial: String,
    pub size_bytes: u64,
    /// Mounted, or the root disk the agent was told of.
    pub in_use: bool,
}

/// The scratch disk among `disks`: the one with the scratch serial, else
/// the last `vd*` not in use; never one in use.
pub fn pick_scratch(disks: &[Disk]) -> Option<&Disk> {
    let free = || disks.iter().filter(|d| !d.in_use);
    free()
        .find(|d| d.serial == SCRATCH_SERIAL)
        // vdz comes before vdaa: the kernel names disks in that order.
        .or_else(|| free().max_by_key(|d| (d.name.len(), d.name.as_str())))
}

/// The guest's virtio-blk disks, from sysfs.
fn disks(env: &Env) -> Vec<Disk> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut disks = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("vd") {
            continue;
        }
        let sys = entry.path();
        let read = |file: &str| std::fs::read_to_string(sys.join(file)).unwrap_or_default();
        let sectors: u64 = read("size").trim().parse().unwrap_or(0);
        let dev = format!("/dev/{name}");
        let mounted = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|source| {
                source == dev
                    || source
                        .strip_prefix(&dev)
                        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
            });
        let is_root = env.settings.root.as_deref() == Some(dev.as_str());
        disks.push(Disk {
            name,
            serial: read("serial").trim().to_string(),
            size_bytes: sectors * 512,
            in_use: mounted || is_root,
        });
    }
    disks
}

fn open_scratch(env: &Env, block_bytes: usize) -> Result<(File, PathBuf, u64), SetupError> {
    require_vm(env, "the scratch disk is the VM's")?;
    let disks = disks(env);
    let disk = pick_scratch(&disks).ok_or_else(|| {
        SetupError::Unavailable(format!(
            "no scratch disk: no virtio-blk disk with serial {SCRATCH_SERIAL}, and no /dev/vd* that is neither mounted nor the root disk"
        ))
    })?;
    if disk.size_bytes < block_bytes as u64 {
        return Err(SetupError::Unavailable(format!(
            "the scratch disk /dev/{} holds {} bytes, less than one {block_bytes}-byte block",
            disk.name, disk.size_bytes
        )));
    }
    let path = Path::new("/dev").join(&disk.name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| SetupError::Failed(format!("open {} with O_DIRECT: {e}", path.display())))?;
    Ok((file, path, disk.size_bytes))
}

/// `blk_read_bw`: 1 MiB O_DIRECT reads, in order, round the disk.
pub fn read_bw(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let (file, path, size_bytes) = open_scratch(env, BW_BLOCK_BYTES)?;
    Ok(Box::new(DiskRead {
        file,
        path,
        buffer: Mapping::new(BW_BLOCK_BYTES)?,
        blocks: size_bytes / BW_BLOCK_BYTES as u64,
        next: Next::Sequential(0),
        size_bytes,
    }))
}

/// `blk_read_lat`: 4 KiB O_DIRECT reads at random block offsets.
pub fn read_lat(env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let (file, path, size_bytes) = open_scratch(env, LAT_BLOCK_BYTES)?;
    Ok(Box::new(DiskRead {
        file,
        path,
        buffer: Mapping::new(LAT_BLOCK_BYTES)?,
        blocks: size_bytes / LAT_BLOCK_BYTES as u64,
        next: Next::Random(0x2545_F491_4F6C_DD1D),
        size_bytes,
    }))
}

/// Which block comes next.
enum Next {
    Sequential(u64),
    /// xorshift64 state.
    Random(u64),
}

impl Next {
    fn block(&mut self, blocks: u64) -> u64 {
        match self {
            Next::Sequential(next) => {
                let block = *next;
                *next = (*next + 1) % blocks;
                block
            }
            Next::Random(state) => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *state % blocks
            }
        }
    }
}

struct DiskRead {
    file: File,
    path: PathBuf,
    buffer: Mapping,
    blocks: u64,
    next: Next,
    size_bytes: u64,
}

impl Workload for DiskRead {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let block_bytes = self.buffer.len_bytes();
        let (file, path, blocks) = (&self.file, &self.path, self.blocks);
        let (buffer, next) = (&mut self.buffer, &mut self.next);
        time_fallible(iterations, || {
            let offset = next.block(blocks) * block_bytes as u64;
            match file.read_at(buffer.bytes(), offset) {
                Ok(n) if n == block_bytes => Ok(()),
                Ok(n) => Err(format!(
                    "{} at {offset}: read {n} of {block_bytes} bytes",
                    path.display()
                )),
                Err(e) => Err(format!("{} at {offset}: {e}", path.display())),
            }
        })
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            ("block_bytes".to_string(), self.buffer.len_bytes() as u64),
            ("disk_bytes".to_string(), self.size_bytes),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, serial: &str, in_use: bool) -> Disk {
        Disk {
            name: name.into(),
            serial: serial.into(),
            size_bytes: 64 << 20,
            in_use,
        }
    }

    #[test]
    fn the_serial_wins_and_a_disk_in_use_never_does() {
        let disks = [
            disk("vda", "", true),
            disk("vdb", SCRATCH_SERIAL, false),
            disk("vdc", "", false),
        ];
        assert_eq!(pick_scratch(&disks).unwrap().name, "vdb");
        let disks = [disk("vda", SCRATCH_SERIAL, true)];
        assert_eq!(pick_scratch(&disks), None);
    }

    #[test]
    fn else_the_last_free_disk() {
        let disks = [
            disk("vdz", "", false),
            disk("vda", "", true),
            disk("vdaa", "", false),
            disk("vdb", "", false),
        ];
        assert_eq!(pick_scratch(&disks).unwrap().name, "vdaa");
        assert_eq!(pick_scratch(&[disk("vda", "", true)]), None);
        assert_eq!(pick_scratch(&[]), None);
    }

    #[test]
    fn blocks_stay_on_the_disk() {
        let mut next = Next::Sequential(0);
        let got: Vec<u64> = (0..5).map(|_| next.block(3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1]);
        let mut random = Next::Random(12345);
        let got: Vec<u64> = (0..1000).map(|_| random.block(16384)).collect();
        assert!(got.iter().all(|&b| b < 16384));
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert!(distinct.len() > 900, "{}", distinct.len());
    }
}
