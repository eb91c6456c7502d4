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

/// Use one malloc arena. glibc gives each thread that allocates its own
/// arena (up to 8 per core); rekey's threads mostly sleep, so the extra
/// arenas buy no speed, and memory freed in one cannot serve another: the
/// start-up's freed buffers stay resident in every arena that had some.
/// With 10,000 credentials (release build, idle) the default left 60-69
/// MiB resident depending on which threads ran the start-up; two arenas
/// 64.3-64.7 MiB; one 63.5-63.9 MiB with the same start -> ready (0.76 s).
/// Call before any thread starts. A no-op off glibc; `MALLOC_ARENA_MAX` in
/// the environment wins.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; called first thing in
        // main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
