//! Handing freed heap back to the kernel after bursts of allocation.

/// Return the allocator's free memory to the kernel. Start-up (config
/// parsing, reading back every credential's files) and a reload leave
/// megabytes of freed blocks that glibc keeps in its arenas for reuse; an
/// idle daemon never reuses them, so they only inflate its resident size
/// (10,000 credentials: several MiB). A no-op off glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers from us; it only walks glibc's
    // own arenas under their locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
