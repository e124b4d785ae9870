//! How the process's allocator treats freed memory.
//!
//! Frames of up to 1 MiB come and go by the thousand per second while a
//! command streams or a file is copied. glibc serves blocks that large
//! from `mmap` at first, then (its thresholds moving) from a heap it trims
//! back to the kernel whenever the free space at its top passes 128 KiB:
//! either way the next frame's buffer is faulted in again a page at a
//! time. Measured on the server streaming 1 GiB over TLS: 45,000-68,000
//! page faults, and 78,000 receiving a 1 GiB file; a `get` of 1 GiB took
//! 1.56-1.80 s against 1.07-1.11 s with the thresholds below (set through
//! `GLIBC_TUNABLES`, alternating runs). Keeping a few MiB of freed memory
//! for the next frame is the better trade for this program.

/// Blocks at least this large still come from `mmap` (and go back at once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_FROM: i32 = 4 << 20;

/// Free memory a heap keeps at its top before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_FROM: i32 = 16 << 20;

/// Sets the allocator's thresholds (glibc only; elsewhere nothing to do).
/// Called first thing in `main`, before any thread is started.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only changes the allocator's parameters, and is
    // called before any other thread exists. No crate wraps it.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_FROM);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_FROM);
    }
}

/// What gives the memory freed by a burst of connections back to the
/// system (`ServerConfig::release_memory`): glibc keeps it in fragmented
/// heaps, where `M_TRIM_THRESHOLD` cannot reach it; `malloc_trim` walks
/// every heap and returns whole free pages (after 10,000 idle connections
/// closed the server held 268 MiB; with it, 16 MiB).
pub fn memory_release() -> Option<fn()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return Some(|| {
        // SAFETY: malloc_trim(3) is thread-safe (it takes each heap's lock
        // in turn) and only releases free pages. No crate wraps it.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    });
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}
