//! The guest's allocator for `alloc` (the samples' vectors, the report's
//! texts): blocks in power-of-two size classes carved from one region,
//! each freed block kept on its class's list for the next request of that
//! class. A pure bump allocator would not do: the sampler sorts a copy of
//! the values after every sample, so 1000 samples would leak 4 MB.
//!
//! One CPU allocates (the boot CPU; vCPU 1 and the interrupt handlers never
//! do), so there is no lock. A benchmark may be left at any instruction (a
//! fault, the watchdog), also in the middle of an allocation: every change
//! is a single store made last, so such a leave loses at most the one block
//! in hand and never breaks a list.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Classes of 16 B, 32 B, ... 2^(4 + CLASSES - 1) B (8 MiB).
const CLASSES: usize = 20;
const MIN_BLOCK: usize = 16;
/// Blocks are aligned to their size up to this; larger alignments are
/// not asked for here.
const MAX_ALIGN: usize = 4096;

/// The allocator; empty (every allocation fails) until [`Heap::init`].
pub struct Heap {
    next: AtomicUsize,
    end: AtomicUsize,
    /// Per class, the first free block (0: none); each free block's first
    /// word is the next one's address.
    free: [AtomicUsize; CLASSES],
}

/// The class holding `layout`, if any.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > MAX_ALIGN {
        return None;
    }
    let size = layout.size().max(layout.align()).max(MIN_BLOCK);
    let class =
        size.next_power_of_two().trailing_zeros() as usize - MIN_BLOCK.trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

fn block_size(class: usize) -> usize {
    MIN_BLOCK << class
}

impl Heap {
    pub const fn empty() -> Heap {
        Heap {
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            free: [const { AtomicUsize::new(0) }; CLASSES],
        }
    }

    /// Hands `len` bytes at `start` to the allocator.
    ///
    /// # Safety
    /// The region must be writable, used by nothing else for as long as the
    /// allocator is, and `init` called once, before any allocation.
    pub unsafe fn init(&self, start: *mut u8, len: usize) {
        self.next.store(start as usize, Ordering::SeqCst);
        self.end.store(start as usize + len, Ordering::SeqCst);
    }

    /// Bytes never handed out yet (freed blocks not counted).
    pub fn untouched_bytes(&self) -> usize {
        self.end.load(Ordering::SeqCst) - self.next.load(Ordering::SeqCst)
    }
}

// SAFETY: a block is handed out once (taken off its list or carved past
// `next`) until it is freed; it lies in the region init() was given, holds
// its class's size and is aligned to it (up to MAX_ALIGN), which covers the
// layout's size and alignment (class_of). Only one CPU allocates.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // No indexing that could panic: nothing here may unwind (the
        // build has no unwinder, and alloc's formatting would call one).
        let Some((class, free)) = class_of(layout).and_then(|c| Some((c, self.free.get(c)?)))
        else {
            return null_mut();
        };
        let head = free.load(Ordering::SeqCst);
        if head != 0 {
            // SAFETY: a free block of ours starts with the next one's address.
            let next = unsafe { (head as *const usize).read() };
            free.store(next, Ordering::SeqCst);
            return head as *mut u8;
        }
        let size = block_size(class);
        let Some(start) = self
            .next
            .load(Ordering::SeqCst)
            .checked_next_multiple_of(size.min(MAX_ALIGN))
        else {
            return null_mut();
        };
        match start.checked_add(size) {
            Some(stop) if stop <= self.end.load(Ordering::SeqCst) => {
                self.next.store(stop, Ordering::SeqCst);
                start as *mut u8
            }
            _ => null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(free) = class_of(layout).and_then(|c| self.free.get(c)) else {
            return;
        };
        // SAFETY: the block is ours (GlobalAlloc's contract) and at least
        // MIN_BLOCK bytes, aligned: its first word may hold the list's link.
        unsafe { (ptr as *mut usize).write(free.load(Ordering::SeqCst)) };
        free.store(ptr as usize, Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's layout is valid and new_size fits it, as
        // GlobalAlloc::realloc requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class_of(layout).is_some() && class_of(layout) == class_of(new_layout) {
            return ptr;
        }
        // SAFETY: a fresh block from this allocator.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are ours and distinct; the old holds
            // layout.size() bytes, the new at least the smaller of the two.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: the old block, no longer used.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(bytes: usize) -> (Heap, Vec<u64>) {
        let mut memory = vec![0u64; bytes / 8];
        let heap = Heap::empty();
        // SAFETY: the vector outlives every use of the allocator below.
        unsafe { heap.init(memory.as_mut_ptr().cast(), bytes) };
        (heap, memory)
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 8)), Some(1));
        assert_eq!(class_of(layout(8, 64)), Some(2));
        assert_eq!(class_of(layout(8 << 20, 8)), Some(CLASSES - 1));
        assert_eq!(class_of(layout((8 << 20) + 1, 8)), None);
        assert_eq!(class_of(layout(16, 8192)), None);
    }

    #[test]
    fn empty_until_given_memory() {
        let heap = Heap::empty();
        // SAFETY: a valid layout.
        assert!(unsafe { heap.alloc(layout(8, 8)) }.is_null());
    }

    #[test]
    fn blocks_are_aligned_distinct_and_bounded() {
        let (heap, _memory) = arena(4096);
        // SAFETY: valid layouts; the blocks are only compared.
        let (a, b) = unsafe { (heap.alloc(layout(3, 1)), heap.alloc(layout(40, 16))) };
        assert!(!a.is_null() && !b.is_null());
        assert_eq!(b as usize % 64, 0, "a 64-byte block, aligned to 64");
        assert!(b as usize >= a as usize + 16 || a as usize >= b as usize + 64);
        // SAFETY: as above.
        assert!(unsafe { heap.alloc(layout(8192, 8)) }.is_null());
    }

    #[test]
    fn freed_blocks_come_back_so_a_sort_per_sample_does_not_grow_the_heap() {
        let (heap, _memory) = arena(64 * 1024);
        let mut last_untouched = None;
        for n in 1..=1000usize {
            let copy = layout(8 * n.min(500), 8);
            // SAFETY: blocks of this allocator, freed with their layouts.
            unsafe {
                let block = heap.alloc(copy);
                assert!(!block.is_null(), "sample {n}");
                block.write_bytes(0xa5, copy.size());
                heap.dealloc(block, copy);
            }
            last_untouched = Some(heap.untouched_bytes());
        }
        assert!(last_untouched.unwrap() > 32 * 1024, "{last_untouched:?}");
    }

    #[test]
    fn realloc_keeps_the_bytes_and_stays_within_a_class() {
        let (heap, _memory) = arena(4096);
        // SAFETY: blocks of this allocator, used within their sizes.
        unsafe {
            let a = heap.alloc(layout(20, 8));
            a.write_bytes(7, 20);
            assert_eq!(heap.realloc(a, layout(20, 8), 32), a, "same 32-byte class");
            let grown = heap.realloc(a, layout(32, 8), 100);
            assert_ne!(grown, a);
            assert_eq!(core::slice::from_raw_parts(grown, 20), [7; 20]);
            assert_eq!(heap.alloc(layout(30, 8)), a, "the old block was freed");
        }
    }
}
