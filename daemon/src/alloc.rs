//! Giving freed memory back to the system (issue 13 point 6). glibc's malloc (the
//! x86_64 build) keeps nearly all the memory thousands of closed sessions freed: the
//! free chunks lie between live ones in its arenas, so only `malloc_trim(0)`, which
//! returns every free page inside them, gives it back (measured: 10 000 idle TLS IMAP
//! sessions raised RSS from 22 to 228 MiB; 30 s after they closed it was still 228 MiB).
//! So the relay trims every [`TRIM_EVERY`], on a blocking thread; when nothing was
//! freed, that is a short walk of the free lists. Large buffers (message bodies,
//! literals) are always mmapped ([`MMAP_THRESHOLD`], instead of glibc's threshold that
//! grows with the largest buffer freed), so they go back the moment they are freed.
//!
//! The appliance's static musl build uses musl's allocator, which unmaps freed memory
//! itself: nothing to do there (every glibc call is `cfg(target_env = "gnu")`).

use std::time::Duration;

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Allocations from this size on get pages of their own (glibc `M_MMAP_THRESHOLD`).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Set the allocator up; call once at start, before other threads exist.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Give free memory inside the allocator's heaps back to the system now.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trim every [`TRIM_EVERY`] for as long as the relay runs.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let start = std::time::Instant::now();
        let before = resident_bytes();
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
        let after = resident_bytes();
        tracing::trace!("malloc_trim: {:?}", start.elapsed());
        if before.saturating_sub(after) >= 1 << 20 {
            tracing::debug!(
                "gave back {} MiB of freed memory in {:?} (resident now {} MiB)",
                (before - after) >> 20,
                start.elapsed(),
                after >> 20
            );
        }
    }
}

/// This process's resident memory in bytes (0 if unknown).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn freed_small_blocks_go_back_when_trimmed() {
        // On a thread of its own (an arena of its own): 64 MiB in 2 KiB blocks, then
        // all but every 64th freed, so no free run reaches the heap's top.
        let (freed, trimmed) = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..32 * 1024).map(|i| vec![i as u8; 2048]).collect();
            let full = resident_bytes();
            let mut kept = Vec::new();
            for (i, b) in blocks.drain(..).enumerate() {
                if i % 64 == 0 {
                    kept.push(b);
                }
            }
            let freed = resident_bytes();
            trim();
            let trimmed = resident_bytes();
            drop(kept);
            (full.saturating_sub(freed), freed.saturating_sub(trimmed))
        })
        .join()
        .unwrap();
        assert!(freed < 16 << 20, "without a trim little goes back: {freed}");
        assert!(trimmed > 32 << 20, "the trim gave back {trimmed} bytes");
    }
}
