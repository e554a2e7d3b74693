//! A bump allocator for `alloc` (the samples' vectors): memory is handed
//! out from one region in order and never given back, which suits a guest
//! that runs a fixed suite once. A vector growing at the top of the region
//! grows in place, so the samples' doubling vector wastes nothing.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The allocator; empty (every allocation fails) until [`Bump::init`].
pub struct Bump {
    end: AtomicUsize,
    next: AtomicUsize,
}

impl Bump {
    pub const fn empty() -> Bump {
        Bump {
            end: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }

    /// Hands `len` bytes at `start` to the allocator.
    ///
    /// # Safety
    /// The region must be writable, unused by anything else for as long as
    /// the allocator is, and `init` called once, before any allocation.
    pub unsafe fn init(&self, start: *mut u8, len: usize) {
        self.next.store(start as usize, Ordering::SeqCst);
        self.end.store(start as usize + len, Ordering::SeqCst);
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> usize {
        self.end.load(Ordering::SeqCst) - self.next.load(Ordering::SeqCst)
    }
}

// SAFETY: every block handed out lies in the region init() was given, is
// aligned as its layout asks and is never handed out twice (the compare and
// swap moves `next` past it before it is returned).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let end = self.end.load(Ordering::SeqCst);
        let mut next = self.next.load(Ordering::SeqCst);
        loop {
            let Some(start) = next.checked_next_multiple_of(layout.align()) else {
                return null_mut();
            };
            let Some(stop) = start.checked_add(layout.size()).filter(|&s| s <= end) else {
                return null_mut();
            };
            match self
                .next
                .compare_exchange(next, stop, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return start as *mut u8,
                Err(moved) => next = moved,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let top = ptr as usize + layout.size();
        let end = self.end.load(Ordering::SeqCst);
        if let Some(stop) = (ptr as usize).checked_add(new_size).filter(|&s| s <= end) {
            // The last block handed out grows (or shrinks) where it is.
            if self
                .next
                .compare_exchange(top, stop, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return ptr;
            }
        }
        // SAFETY: the caller's layout is valid and new_size fits it, as
        // GlobalAlloc::realloc requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block from this allocator.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are ours and distinct; the old holds
            // layout.size() bytes, the new at least the smaller of the two.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(bytes: usize) -> (Bump, Vec<u64>) {
        let mut memory = vec![0u64; bytes / 8];
        let bump = Bump::empty();
        // SAFETY: the vector outlives every use of the allocator below.
        unsafe { bump.init(memory.as_mut_ptr().cast(), bytes) };
        (bump, memory)
    }

    #[test]
    fn empty_until_given_memory() {
        let bump = Bump::empty();
        // SAFETY: a valid layout.
        let p = unsafe { bump.alloc(Layout::new::<u64>()) };
        assert!(p.is_null());
    }

    #[test]
    fn blocks_are_aligned_distinct_and_bounded() {
        let (bump, _memory) = arena(256);
        // SAFETY: valid layouts; the blocks are only compared.
        let (a, b) = unsafe {
            (
                bump.alloc(Layout::from_size_align(3, 1).unwrap()),
                bump.alloc(Layout::from_size_align(16, 16).unwrap()),
            )
        };
        assert!(!a.is_null() && !b.is_null());
        assert_eq!(b as usize % 16, 0);
        assert!(b as usize >= a as usize + 3);
        // SAFETY: as above.
        let too_big = unsafe { bump.alloc(Layout::from_size_align(512, 8).unwrap()) };
        assert!(too_big.is_null());
        assert!(bump.free_bytes() < 256 - 19);
    }

    #[test]
    fn the_top_block_grows_in_place_others_move_with_their_bytes() {
        let (bump, _memory) = arena(1024);
        let layout = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: blocks from this allocator, sizes within the arena, and
        // written only within their sizes.
        unsafe {
            let a = bump.alloc(layout);
            a.write_bytes(7, 16);
            let grown = bump.realloc(a, layout, 64);
            assert_eq!(grown, a, "in place");
            let b = bump.alloc(layout);
            let moved = bump.realloc(grown, Layout::from_size_align(64, 8).unwrap(), 128);
            assert!(moved as usize >= b as usize + 16);
            assert_eq!(core::slice::from_raw_parts(moved, 16), [7; 16]);
        }
    }
}
