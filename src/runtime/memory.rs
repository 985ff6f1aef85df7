//! Giving heap memory back to the OS after a burst.
//!
//! glibc's malloc keeps what the process frees: after 10,000 keep-alive connections close, about
//! 34 MiB stays resident (bench/results/2026-11-24-rss-idle.md). It trims only the top of the
//! main heap by itself; the workers allocate from their own arenas, and free pages between live
//! chunks stay mapped until `malloc_trim`, which walks every arena and gives each whole free page
//! back (`madvise(MADV_DONTNEED)`). HAProxy does the same after it releases its pools.
//!
//! Both calls hold each arena's lock while they walk it (a trim took 1.7-7 ms with 90 MiB free
//! on this machine), so a worker that allocates meanwhile waits. So nothing is asked of malloc
//! until a burst is over: every `CHECK_EVERY` the control thread looks at how many client
//! connections have closed (`connection_closed`, one relaxed add per connection). Once at least
//! `BURST` have closed since the last look at malloc, and fewer than `QUIET` in the last
//! interval, it asks malloc how much free memory it holds (`mallinfo2`) and trims when that grew
//! by `TRIM_AFTER_GROWTH` since the last trim. Comparing with what the last trim left, rather
//! than with zero, keeps a heap whose free memory cannot be returned (pages a live chunk shares)
//! from being walked again and again.
//!
//! Other C libraries (musl) and other systems: nothing to do, `run` returns at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the free memory held by malloc is looked at.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);
/// New free memory, in bytes, worth a trim.
pub(crate) const TRIM_AFTER_GROWTH: usize = 8 << 20;
/// Closed connections that make a burst worth a look at malloc.
pub(crate) const BURST: u64 = 256;
/// Fewer closes than this in one `CHECK_EVERY`: the burst is over.
pub(crate) const QUIET: u64 = 64;

static CLOSED: AtomicU64 = AtomicU64::new(0);

/// Counts a client connection that has ended (src/runtime/server.rs).
pub(crate) fn connection_closed() {
    CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// Trims as described above until the task is dropped.
pub async fn run() {
    if !imp::SUPPORTED {
        return;
    }
    let mut interval = tokio::time::interval(CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut left_free = imp::free_bytes();
    let mut seen_closed = CLOSED.load(Ordering::Relaxed);
    let mut burst = 0;
    loop {
        interval.tick().await;
        let closed = CLOSED.load(Ordering::Relaxed);
        let recent = closed.wrapping_sub(seen_closed);
        seen_closed = closed;
        burst += recent;
        if burst < BURST || recent >= QUIET {
            continue;
        }
        burst = 0;
        let free = imp::free_bytes();
        if free < left_free.saturating_add(TRIM_AFTER_GROWTH) {
            // Less free memory than the last trim left means it was reused: measure from there.
            left_free = left_free.min(free);
            continue;
        }
        let started = std::time::Instant::now();
        imp::trim();
        // Pages given back still count as free chunks, so this is about `free` again.
        left_free = imp::free_bytes();
        tracing::debug!(
            free_bytes = free,
            took_us = started.elapsed().as_micros() as u64,
            "returned freed heap memory to the OS"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    pub(crate) const SUPPORTED: bool = true;

    /// Bytes malloc holds free: in its bins and at the top of each arena.
    pub(crate) fn free_bytes() -> usize {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value. glibc has it
        // since 2.33; the binary needs 2.34 anyway (Rust's std), so it narrows nothing.
        unsafe { libc::mallinfo2() }.fordblks
    }

    pub(crate) fn trim() {
        // SAFETY: malloc_trim takes a byte count (0: keep no slack at the top) and only gives free
        // pages back; it is thread-safe (each arena is walked under its lock).
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(crate) const SUPPORTED: bool = false;

    pub(crate) fn free_bytes() -> usize {
        0
    }

    pub(crate) fn trim() {}
}
