//! The wasm component's allocator: a bump arena that starts over whenever nothing is live.
//!
//! A decision call allocates a lot of small strings and frees them all at the end (the host
//! lifts the results, then calls the post-return functions that free them). A general-purpose
//! allocator spends most of its time and ~10 KB of code on reuse this pattern never needs.
//! Here an allocation is a pointer bump; the arena resets to its base when the last live
//! allocation is freed, so a host that keeps one instance for many calls (jco, say) does not
//! see memory grow from call to call. Memory is still bounded by the host's limits.

// SAFETY (for the whole module): wasm32 without the atomics feature is single-threaded, so
// the `static mut`-like state behind `Cell` is never accessed concurrently (`Sync` is
// asserted for that reason only). `alloc` returns fresh, suitably aligned, in-bounds memory
// (or null when the memory cannot grow); `dealloc` never reuses memory that is still live,
// because the arena only resets when the live count reaches zero.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 65_536;

struct Arena {
    base: Cell<usize>,
    next: Cell<usize>,
    end: Cell<usize>,
    live: Cell<usize>,
}

// SAFETY: see the module comment (single-threaded target).
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena {
    base: Cell::new(0),
    next: Cell::new(0),
    end: Cell::new(0),
    live: Cell::new(0),
};

impl Arena {
    /// Makes `[next, next + size)` available, growing linear memory if needed.
    fn reserve(&self, start: usize, size: usize) -> bool {
        let Some(want) = start.checked_add(size) else {
            return false;
        };
        if want <= self.end.get() {
            return true;
        }
        let pages = (want - self.end.get()).div_ceil(PAGE);
        if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end.set(self.end.get() + pages * PAGE);
        true
    }
}

// SAFETY: see the module comment.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.base.get() == 0 {
            // The heap starts where the module's initial memory (data and stack) ends.
            let end = core::arch::wasm32::memory_size(0) * PAGE;
            self.base.set(end);
            self.next.set(end);
            self.end.set(end);
        }
        let align = layout.align();
        let start = (self.next.get() + align - 1) & !(align - 1);
        if !self.reserve(start, layout.size()) {
            return core::ptr::null_mut();
        }
        self.next.set(start + layout.size());
        self.live.set(self.live.get() + 1);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let live = self.live.get().saturating_sub(1);
        self.live.set(live);
        if live == 0 {
            self.next.set(self.base.get());
        } else if ptr as usize + layout.size() == self.next.get() {
            // The most recent allocation: give its space back at once.
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Grow or shrink the most recent allocation in place.
        if ptr as usize + layout.size() == self.next.get() && self.reserve(ptr as usize, new_size) {
            self.next.set(ptr as usize + new_size);
            return ptr;
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (GlobalAlloc contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: delegating to our own alloc/dealloc; the copy covers the smaller of both sizes.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
