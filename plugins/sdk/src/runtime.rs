//! What a `#![no_std]` component needs besides the panic handler (which [`crate::export_plugin!`]
//! installs): a global allocator, the canonical ABI's `cabi_realloc` over it, and the few libc
//! memory routines core's code calls. Built only for wasm32 with the `runtime` feature.
//!
//! With `std`, Rust's allocator on wasm32-wasip2 is wasi-libc's `malloc`, and wasi-libc's
//! `cabi_realloc` allocates with it. Here the allocator is `dlmalloc` (what std uses on
//! wasm32-unknown-unknown), so `cabi_realloc` must allocate through Rust's allocator too: the
//! host writes hook arguments into memory it got from `cabi_realloc`, and the plugin frees
//! them as `Vec`s and `String`s.

#![allow(unsafe_code)]

use alloc::alloc::{alloc, handle_alloc_error, realloc, Layout};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

// Without std nothing links wasi-libc, whose `memcmp` & co. core's code calls. The linker takes
// only the objects it needs from the archive: string routines that call no WASI function.
#[link(name = "c", kind = "static", modifiers = "-bundle")]
extern "C" {}

/// The canonical ABI's allocation function: the host calls it to place arguments (strings,
/// lists) in the plugin's memory.
///
/// # Safety
///
/// Called by the host per the canonical ABI: `old_ptr`/`old_len`/`align` describe a block this
/// function returned before (or `old_len` is 0), and `align` is a power of two.
#[no_mangle]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    let layout;
    // SAFETY: per this function's contract.
    let ptr = unsafe {
        if old_len == 0 {
            if new_len == 0 {
                // A dangling, aligned, non-null pointer for a zero-sized block.
                return align as *mut u8;
            }
            layout = Layout::from_size_align_unchecked(new_len, align);
            alloc(layout)
        } else {
            debug_assert_ne!(new_len, 0, "non-zero old_len requires non-zero new_len");
            layout = Layout::from_size_align_unchecked(old_len, align);
            realloc(old_ptr, layout, new_len)
        }
    };
    if ptr.is_null() {
        handle_alloc_error(layout);
    }
    ptr
}
