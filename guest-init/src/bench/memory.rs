//! Memory benchmarks: `mem_linear`, `mem_random`, `cow_fault`, `pte_update`.
//!
//! Buffers are anonymous mappings written in full before timing (so no
//! first-touch fault, guest or host, is timed) and kept to small pages
//! (`MADV_NOHUGEPAGE`) so that one page is one TLB entry, as the per-page
//! figures assume.
//!
//! `mem_linear` and `mem_random` chase a chain of links, one per page, that
//! visits every page once (in order, or in a random order): each touch
//! needs the link read by the one before, so the CPU cannot overlap the
//! misses and a touch costs what one page's first access costs (a TLB miss
//! and its page walk, a cache miss), as virtbench's walks meant.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{
    madvise, mmap_anonymous, mremap, munmap, MRemapFlags, MapFlags, MmapAdvise, ProtFlags,
};

use super::timing::{time_fallible, time_loop};
use super::{Env, SetupError, Workload};

const PAGE_BYTES: usize = 4096;

/// The chases' buffer at least: larger than most last-level caches.
const MIN_TOUCH_BYTES: usize = 64 << 20;
/// And at most, however large the cache the CPU claims.
const MAX_TOUCH_BYTES: usize = 1 << 30;

/// The chases' buffer: twice the largest cache the CPU reports (so that
/// the pages do not stay cached), at least [`MIN_TOUCH_BYTES`], at most
/// [`MAX_TOUCH_BYTES`] and half the memory available. Also returns the
/// cache size it went by (0: none reported).
fn touch_bytes() -> (usize, u64) {
    let cache_bytes =
        largest_cache_bytes(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"));
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_available_bytes(&m))
        .unwrap_or(u64::MAX);
    let wanted = usize::try_from(cache_bytes.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .clamp(MIN_TOUCH_BYTES, MAX_TOUCH_BYTES);
    let room = usize::try_from(available / 2).unwrap_or(usize::MAX);
    let bytes = wanted.min(room.max(MIN_TOUCH_BYTES / 4)) & !((1 << 20) - 1);
    (bytes, cache_bytes)
}

/// The size of the largest cache (the highest level) under a sysfs cache
/// directory (`index*/level`, `index*/size` as `491520K`); 0 if none.
fn largest_cache_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| {
            let level: u32 = read(e.path().join("level")).trim().parse().ok()?;
            let size = read(e.path().join("size"));
            let size = size.trim();
            let bytes = match size.strip_suffix('K') {
                Some(kib) => kib.parse::<u64>().ok()? << 10,
                None => match size.strip_suffix('M') {
                    Some(mib) => mib.parse::<u64>().ok()? << 20,
                    None => size.parse().ok()?,
                },
            };
            Some((level, bytes))
        })
        .max()
        .map_or(0, |(_, bytes)| bytes)
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Pages `cow_fault` can fault per run (16 MiB).
const COW_PAGES: usize = 4096;

/// An anonymous private read-write mapping, page-aligned (as O_DIRECT
/// wants: the block benchmarks' buffers are these too), unmapped on drop.
pub(super) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `len` bytes, as the kernel gives them.
    pub(super) fn new(len: usize) -> Result<Mapping, SetupError> {
        let size =
            NonZeroUsize::new(len).ok_or_else(|| SetupError::Failed("empty buffer".into()))?;
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // overlaps nothing of ours.
        let base = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| SetupError::Failed(format!("mmap of {len} bytes: {}", e.desc())))?;
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }

    /// `len` bytes, every page written once.
    fn populated(len: usize) -> Result<Mapping, SetupError> {
        let mapping = Mapping::new(len)?;
        let base = mapping.base.cast();
        // Not every kernel has transparent huge pages: advice it refuses
        // changes nothing.
        // SAFETY: advice on our own mapping, whole.
        let _ = unsafe { madvise(base, len, MmapAdvise::MADV_NOHUGEPAGE) };
        for page in 0..len / PAGE_BYTES {
            mapping.touch(page);
        }
        Ok(mapping)
    }

    /// Stores in `page` the page the chase goes to next.
    fn set_link(&self, page: usize, next: u32) {
        assert!(page < self.pages() && (next as usize) < self.pages());
        // SAFETY: the page is inside the mapping (checked), whose pages are
        // aligned: its first 4 bytes hold a u32.
        unsafe {
            self.base
                .as_ptr()
                .add(page * PAGE_BYTES)
                .cast::<u32>()
                .write_volatile(next)
        };
    }

    /// Reads `page`'s link, writes a byte of the same cache line, and
    /// returns the link.
    #[inline(always)]
    fn step(&self, page: usize) -> u32 {
        debug_assert!(page < self.pages());
        // SAFETY: links are only ever set to pages of the mapping, so
        // `page` is inside it; bytes 0–3 hold the link, byte 8 is a counter.
        unsafe {
            let start = self.base.as_ptr().add(page * PAGE_BYTES);
            let next = start.cast::<u32>().read_volatile();
            let counter = start.add(8);
            counter.write_volatile(counter.read_volatile().wrapping_add(1));
            next
        }
    }

    fn pages(&self) -> usize {
        self.len / PAGE_BYTES
    }

    /// Writes the first byte of `page` (read, add one, write back).
    #[inline(always)]
    fn touch(&self, page: usize) {
        debug_assert!(page < self.pages());
        // SAFETY: page < pages(), so the byte is inside the mapping, which
        // is readable and writable and lives as long as self.
        unsafe {
            let byte = self.base.as_ptr().add(page * PAGE_BYTES);
            byte.write_volatile(byte.read_volatile().wrapping_add(1));
        }
    }
}

impl Mapping {
    pub(super) fn len_bytes(&self) -> usize {
        self.len
    }

    /// The whole mapping, to read into.
    pub(super) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is len bytes, ours, readable and writable, and
        // only reachable through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// `mem_linear`: one page after another.
pub fn mem_linear(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let (bytes, cache_bytes) = touch_bytes();
    let buffer = Mapping::populated(bytes)?;
    let order: Vec<u32> = (0..buffer.pages() as u32).collect();
    Ok(Box::new(Chase::new(buffer, &order, cache_bytes)))
}

/// `mem_random`: the pages in a random order (the same every time: a fixed
/// seed).
pub fn mem_random(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    let (bytes, cache_bytes) = touch_bytes();
    let buffer = Mapping::populated(bytes)?;
    let mut order: Vec<u32> = (0..buffer.pages() as u32).collect();
    shuffle(&mut order, 0x9E37_79B9_7F4A_7C15);
    Ok(Box::new(Chase::new(buffer, &order, cache_bytes)))
}

/// Fisher–Yates with xorshift64*: any order with no locality will do.
fn shuffle(items: &mut [u32], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let j = (r % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Follows the chain of pages, round and round; both orders run the same
/// code, so the difference between them is the memory system's.
struct Chase {
    buffer: Mapping,
    /// The page the chase is at.
    at: u32,
    /// The largest cache the CPU reported.
    cache_bytes: u64,
}

impl Chase {
    /// Links each page of `order` to the next, the last to the first.
    fn new(buffer: Mapping, order: &[u32], cache_bytes: u64) -> Chase {
        for (i, &page) in order.iter().enumerate() {
            let next = order[(i + 1) % order.len()];
            buffer.set_link(page as usize, next);
        }
        Chase {
            at: order.first().copied().unwrap_or(0),
            buffer,
            cache_bytes,
        }
    }
}

impl Workload for Chase {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let buffer = &self.buffer;
        let mut at = self.at;
        let ns = time_loop(iterations, || at = buffer.step(at as usize));
        self.at = at;
        Ok(ns)
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![
            ("buffer_bytes".to_string(), self.buffer.len as u64),
            ("cache_bytes".to_string(), self.cache_bytes),
        ]
    }
}

/// `cow_fault`: per run, fork a child that only waits, then write one byte
/// to each of `n` pages the two now share: each write is a copy-on-write
/// fault. The fork is outside the timed part.
pub fn cow_fault(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(CowFault {
        buffer: Mapping::populated(COW_PAGES * PAGE_BYTES)?,
    }))
}

struct CowFault {
    buffer: Mapping,
}

impl Workload for CowFault {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let pages = usize::try_from(iterations)
            .ok()
            .filter(|&n| n <= self.buffer.pages())
            .ok_or_else(|| {
                format!(
                    "{iterations} pages asked, the buffer has {}",
                    self.buffer.pages()
                )
            })?;
        let (hold_read, hold_write) =
            nix::unistd::pipe().map_err(|e| format!("pipe: {}", e.desc()))?;
        let hold = std::os::fd::AsRawFd::as_raw_fd(&hold_read);
        let release = std::os::fd::AsRawFd::as_raw_fd(&hold_write);
        // SAFETY: the runner is single-threaded; the child only reads and exits.
        let child = match unsafe { libc::fork() } {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                // Its copy of the write end would keep the pipe open.
                // SAFETY: closes this process's copy of a descriptor it owns.
                unsafe { libc::close(release) };
                let mut byte = 0u8;
                // Holds the pages shared until the parent closes its end.
                // SAFETY: one byte into a local, from a pipe this process owns.
                unsafe { libc::read(hold, (&raw mut byte).cast(), 1) };
                // SAFETY: _exit ends only this process.
                unsafe { libc::_exit(0) }
            }
            pid => nix::unistd::Pid::from_raw(pid),
        };
        drop(hold_read);
        let buffer = &self.buffer;
        let mut page = 0;
        let ns = time_loop(pages as u64, || {
            buffer.touch(page);
            page += 1;
        });
        drop(hold_write);
        let _ = nix::sys::wait::waitpid(child, None);
        Ok(ns)
    }

    fn max_iterations(&self) -> u64 {
        self.buffer.pages() as u64
    }

    fn extra(&self) -> Vec<(String, u64)> {
        vec![("buffer_bytes".to_string(), self.buffer.len as u64)]
    }
}

/// `pte_update`: mremap moves one populated page between two addresses,
/// back and forth: each move rewrites its page-table entry and flushes the
/// old translation.
pub fn pte_update(_env: &Env) -> Result<Box<dyn Workload>, SetupError> {
    Ok(Box::new(Remap::new()?))
}

impl Remap {
    fn new() -> Result<Remap, SetupError> {
        let two_pages = Mapping::populated(2 * PAGE_BYTES)?;
        let base = two_pages.base;
        std::mem::forget(two_pages);
        // SAFETY: base + PAGE_BYTES is the second page of the mapping just made.
        let second = unsafe { NonNull::new_unchecked(base.as_ptr().add(PAGE_BYTES)) };
        // The target must be free, or each move would first unmap what is there.
        // SAFETY: the second page is ours and unused.
        unsafe { munmap(second.cast(), PAGE_BYTES) }
            .map_err(|e| SetupError::Failed(format!("munmap: {}", e.desc())))?;
        Ok(Remap {
            spots: [base, second],
            at: 0,
        })
    }
}

struct Remap {
    /// The two addresses the page moves between; it is at `spots[at]`.
    spots: [NonNull<u8>; 2],
    at: usize,
}

impl Workload for Remap {
    fn run(&mut self, iterations: u64) -> Result<u64, String> {
        let spots = self.spots;
        let mut at = self.at;
        let result = time_fallible(iterations, || {
            let (from, to) = (spots[at], spots[1 - at]);
            // SAFETY: `from` holds our one-page mapping and `to` is a page
            // of our own address space left free for it.
            let moved = unsafe {
                mremap(
                    from.cast(),
                    PAGE_BYTES,
                    PAGE_BYTES,
                    MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED,
                    Some(to.cast()),
                )
            };
            match moved {
                Ok(at_new) if at_new.cast() == to => {
                    at = 1 - at;
                    Ok(())
                }
                Ok(elsewhere) => Err(format!(
                    "mremap moved the page to {elsewhere:p}, not {to:p}"
                )),
                Err(e) => Err(format!("mremap: {}", e.desc())),
            }
        });
        self.at = at;
        result
    }
}

impl Drop for Remap {
    fn drop(&mut self) {
        // SAFETY: the page is ours, at spots[at].
        let _ = unsafe { munmap(self.spots[self.at].cast(), PAGE_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            in_vm: false,
            settings: crate::settings::Settings::default(),
        }
    }

    #[test]
    fn the_chase_visits_every_page_once_per_round() {
        let buffer = Mapping::populated(64 * PAGE_BYTES).unwrap();
        let mut order: Vec<u32> = (0..64).collect();
        shuffle(&mut order, 7);
        let chase = Chase::new(buffer, &order, 0);
        let mut at = chase.at;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            assert!(seen.insert(at), "page {at} twice");
            at = chase.buffer.step(at as usize);
        }
        assert_eq!(at, chase.at);
    }

    #[test]
    fn caches_and_memory_are_read() {
        let dir = tempfile_dir();
        for (index, level, size) in [(0, "1", "48K"), (2, "2", "2048K"), (3, "3", "32M")] {
            let sub = dir.join(format!("index{index}"));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(sub.join("size"), format!("{size}\n")).unwrap();
        }
        assert_eq!(largest_cache_bytes(&dir), 32 << 20);
        assert_eq!(largest_cache_bytes(&dir.join("nowhere")), 0);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            mem_available_bytes("MemTotal: 9 kB\nMemAvailable:     1024 kB\n"),
            Some(1 << 20)
        );
        let (bytes, _) = touch_bytes();
        assert!((MIN_TOUCH_BYTES / 4..=MAX_TOUCH_BYTES).contains(&bytes));
        assert_eq!(bytes % (1 << 20), 0);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmbench-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_shuffle_is_a_permutation_without_order() {
        let mut items: Vec<u32> = (0..1000).collect();
        shuffle(&mut items, 42);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        let in_place = items
            .iter()
            .enumerate()
            .filter(|(i, &v)| *i as u32 == v)
            .count();
        assert!(in_place < 20, "{in_place} items did not move");
    }

    #[test]
    fn pte_update_moves_the_page_and_keeps_its_contents() {
        let mut remap = Remap::new().unwrap();
        assert!(pte_update(&env()).is_ok());
        remap.run(3).unwrap();
        assert_eq!(remap.at, 1);
        // The page was written once when it was populated.
        // SAFETY: the page is at spots[1] now.
        assert_eq!(unsafe { remap.spots[1].as_ptr().read_volatile() }, 1);
        remap.run(1).unwrap();
        assert_eq!(remap.at, 0);
    }

    #[test]
    fn cow_fault_refuses_more_pages_than_it_has() {
        let _alone = crate::bench::test_fork_lock();
        let mut cow = cow_fault(&env()).unwrap();
        assert_eq!(cow.max_iterations(), COW_PAGES as u64);
        cow.run(16).unwrap();
        assert!(cow.run(COW_PAGES as u64 + 1).is_err());
    }
}
