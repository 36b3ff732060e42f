//! Keeping resident memory close to what is in use.
//!
//! berth's large buffers are bounded per request (see `berth-blobstore`'s `io`), but glibc's
//! allocator by default gives every thread that allocates its own arena (up to 8 per core)
//! and keeps freed memory in them. Blocking I/O threads come and go, so after a burst of
//! pulls or uploads that memory stays resident though nothing uses it. Two measures, both
//! measured with `berth-bench` (docs/benchmarks.md): one arena per core, and a background
//! task that hands free pages back to the kernel, as Go's scavenger does for Distribution.

use std::time::Duration;

/// How often freed heap memory is handed back to the kernel.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// Caps glibc's malloc arenas at one per core. Call before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cores = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tuning parameter of glibc's allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores);
        }
    }
}

/// Hands freed heap memory back to the kernel once a second, forever.
pub async fn release_free_memory() {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
