//! Heap allocation counters for the bench build (`--features alloc-count`):
//! a global allocator that wraps another one (mimalloc, or the system's
//! malloc with `alloc-system`) and counts allocations, reallocations, frees
//! and bytes, so that `bench/run.py --allocations` can report them per
//! request (issue 12, the allocation diet). Not in the default build: it
//! costs nothing there. Knows nothing of requests; `GET /status` shows the
//! totals under `"allocations"`.
//!
//! Counters are per thread, not one shared set: a shared atomic would put
//! one cache line in play between the worker, the control thread and the
//! blocking pool on every allocation. Each thread takes a slot of its own
//! (its own 128-byte block, two cache lines because of the adjacent-line
//! prefetcher) on its first allocation and, being its only writer, bumps it
//! with a relaxed load and store: no locked instruction, and a reader on
//! another thread sees each counter whole, at worst a few allocations late.
//! Threads beyond the table, and a thread whose thread-local storage is
//! already gone, share slot 0 with `fetch_add`. Slots are never reused, so
//! the totals keep what exited threads counted.
//!
//! Only what goes through Rust's global allocator is counted: C libraries
//! that call `malloc` themselves (LuaJIT keeps its own heap) are not.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde::Serialize;

/// Slots in the table; moongate runs a handful of threads per worker.
const SLOTS: usize = 64;
/// The shared slot: overflow threads, and threads past their TLS teardown.
const SHARED: usize = 0;
/// A thread that has not taken a slot yet.
const UNSET: usize = usize::MAX;

/// One thread's counters, alone on its pair of cache lines.
#[repr(align(128))]
struct Slot {
    allocs: AtomicU64,
    reallocs: AtomicU64,
    frees: AtomicU64,
    bytes: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            allocs: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// The next slot to hand out (1, 2, ...; past the table: `SHARED`).
static NEXT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    // `const` and without a destructor: a plain TLS access that never
    // allocates, which an allocator needs.
    static MY_SLOT: Cell<usize> = const { Cell::new(UNSET) };
}

/// The calling thread's slot index (taken on first use).
fn my_slot() -> usize {
    MY_SLOT
        .try_with(|slot| {
            if slot.get() == UNSET {
                let next = NEXT.fetch_add(1, Relaxed);
                slot.set(if next < SLOTS { next } else { SHARED });
            }
            slot.get()
        })
        .unwrap_or(SHARED)
}

/// Adds `n` to a counter of slot `index`: load and store for a slot's own
/// thread (its only writer), `fetch_add` on the shared slot.
fn bump(index: usize, counter: fn(&Slot) -> &AtomicU64, n: u64) {
    let c = counter(&TABLE[index]);
    if index == SHARED {
        c.fetch_add(n, Relaxed);
    } else {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// The process's totals since it started, over every thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `alloc` and `alloc_zeroed` calls.
    pub allocs: u64,
    /// `realloc` calls (a `Vec` or `String` that grows in place or moves).
    pub reallocs: u64,
    /// `dealloc` calls.
    pub frees: u64,
    /// Bytes asked for by allocations, plus the growth asked for by
    /// reallocations (new size − old size, when larger).
    pub bytes: u64,
}

/// The totals now. Another thread's latest allocations may be missing (its
/// counters are read without synchronising with it).
pub fn totals() -> Counts {
    let mut t = Counts::default();
    for slot in &TABLE {
        t.allocs += slot.allocs.load(Relaxed);
        t.reallocs += slot.reallocs.load(Relaxed);
        t.frees += slot.frees.load(Relaxed);
        t.bytes += slot.bytes.load(Relaxed);
    }
    t
}

/// A global allocator that counts what it passes on to `A`.
pub struct Counting<A>(pub A);

// SAFETY (for the four methods): every call is passed on unchanged to `A`,
// a sound allocator, with the caller's own guarantees; counting touches
// only atomics and a const thread-local, and never allocates.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let slot = my_slot();
        bump(slot, |s| &s.allocs, 1);
        bump(slot, |s| &s.bytes, layout.size() as u64);
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let slot = my_slot();
        bump(slot, |s| &s.allocs, 1);
        bump(slot, |s| &s.bytes, layout.size() as u64);
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(my_slot(), |s| &s.frees, 1);
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let slot = my_slot();
        bump(slot, |s| &s.reallocs, 1);
        bump(
            slot,
            |s| &s.bytes,
            new_size.saturating_sub(layout.size()) as u64,
        );
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test binary's global allocator is not `Counting`: drive one by hand.
    #[test]
    #[allow(unsafe_code)]
    fn counts_what_it_passes_on() {
        let a = Counting(std::alloc::System);
        let before = totals();
        let layout = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: a non-zero layout; the pointer is reallocated with the
        // layout it has and freed once with its current layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            let p = a.realloc(p, layout, 100);
            assert!(!p.is_null());
            a.dealloc(p, Layout::from_size_align(100, 8).unwrap());
        }
        let after = totals();
        // Other tests' threads do not count (their allocator is the default).
        assert_eq!(after.allocs - before.allocs, 1);
        assert_eq!(after.reallocs - before.reallocs, 1);
        assert_eq!(after.frees - before.frees, 1);
        assert_eq!(after.bytes - before.bytes, 24 + 76);
    }

    #[test]
    fn threads_take_their_own_slots() {
        let mine = my_slot();
        let other = std::thread::spawn(my_slot).join().unwrap_or(SHARED);
        assert_ne!(mine, other);
        assert_eq!(my_slot(), mine);
    }
}
