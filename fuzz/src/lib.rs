//! The budget every fuzz input must keep (issue 13 point 6: no input over 100 ms or
//! 64 MiB): [`check`] runs a target of `relaybox::fuzzing` on one input and panics — a
//! finding with the input saved by libFuzzer — when it used more CPU time or held more
//! heap at once than allowed. CPU time of the thread, not wall time, so that a busy
//! machine does not make findings; heap as counted by the allocator below, so that the
//! limit holds per input and for every allocation, not only at libFuzzer's once-a-second
//! RSS check.
//!
//! `RELAYBOX_FUZZ_SLOW_MS` (default 100) and `RELAYBOX_FUZZ_MEM_MB` (default 64) set the
//! limits; 0 turns a check off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from this allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn limit(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (CPU milliseconds, heap MiB) allowed per input; 0 = unchecked.
fn limits() -> (u64, u64) {
    static L: OnceLock<(u64, u64)> = OnceLock::new();
    *L.get_or_init(|| {
        (
            limit("RELAYBOX_FUZZ_SLOW_MS", 100),
            limit("RELAYBOX_FUZZ_MEM_MB", 64),
        )
    })
}

/// Runs `target` on `data` within the limits.
pub fn check(data: &[u8], target: fn(&[u8])) {
    let (slow_ms, mem_mb) = limits();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = thread_cpu_ns();
    target(data);
    let cpu_ms = (thread_cpu_ns() - start) / 1_000_000;
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    if slow_ms > 0 && cpu_ms > u128::from(slow_ms) {
        panic!("slow input: {cpu_ms} ms of CPU time (limit {slow_ms} ms)");
    }
    if mem_mb > 0 && held as u64 > mem_mb * 1024 * 1024 {
        panic!(
            "memory: the input held {} MiB of heap at once (limit {mem_mb} MiB)",
            held / (1024 * 1024)
        );
    }
}
