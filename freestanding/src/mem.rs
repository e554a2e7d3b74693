//! memcpy, memmove, memset, memcmp and bcmp: the compiler emits calls to
//! them, and without libc nothing else provides them (compiler_builtins
//! leaves them to libc on this target). A macro, expanded once in each
//! guest's binary: defined in this library they would also replace the C
//! library's own in every host-side test program that links it.
//!
//! The copies use `rep movsb`/`rep stosb` in assembly: a plain Rust loop here
//! could be turned back into a call to the very function being defined.

/// Defines memcpy, memmove, memset, memcmp and bcmp (`#[no_mangle]`) where
/// it is expanded: once, in a guest's `main.rs`.
#[macro_export]
macro_rules! mem_functions {
    () => {
        /// # Safety
        /// As C's memcpy: `n` bytes readable at `src`, writable at `dest`, no overlap.
        #[no_mangle]
        pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            // SAFETY: the caller guarantees both ranges; rep movsb touches exactly them.
            unsafe {
                ::core::arch::asm!("rep movsb", inout("rdi") dest => _, inout("rsi") src => _,
                     inout("rcx") n => _, options(nostack, preserves_flags));
            }
            dest
        }

        /// # Safety
        /// As C's memmove: `n` bytes readable at `src` and writable at `dest`.
        #[no_mangle]
        pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            if (dest as usize).wrapping_sub(src as usize) >= n {
                // dest is below src or past its end: a forward copy never reads a
                // byte it has already overwritten.
                // SAFETY: as memcpy's; the ranges may overlap only in the safe direction.
                return unsafe { memcpy(dest, src, n) };
            }
            // SAFETY: a backward copy (direction flag set, from the last byte down)
            // of the caller's ranges; the flag is cleared again as the ABI requires.
            unsafe {
                ::core::arch::asm!("std", "rep movsb", "cld",
                     inout("rdi") dest.wrapping_add(n).wrapping_sub(1) => _,
                     inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                     inout("rcx") n => _, options(nostack));
            }
            dest
        }

        /// # Safety
        /// As C's memset: `n` bytes writable at `dest`.
        #[no_mangle]
        pub unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
            // SAFETY: the caller guarantees the range; rep stosb writes exactly it.
            unsafe {
                ::core::arch::asm!("rep stosb", inout("rdi") dest => _, inout("rcx") n => _,
                     in("al") byte as u8, options(nostack, preserves_flags));
            }
            dest
        }

        /// # Safety
        /// As C's memcmp: `n` bytes readable at `a` and at `b`.
        #[no_mangle]
        pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            for i in 0..n {
                // SAFETY: i < n, and the caller guarantees n readable bytes at both.
                let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
                if x != y {
                    return i32::from(x) - i32::from(y);
                }
            }
            0
        }

        /// # Safety
        /// As memcmp.
        #[no_mangle]
        pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            // SAFETY: the same contract as memcmp's.
            unsafe { memcmp(a, b, n) }
        }
    };
}
