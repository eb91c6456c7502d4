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

/// Hand back the resident pages of rekey's own program file. Start-up runs
/// code an idle daemon never runs again (config parsing, the TLS and crypto
/// set-up, recovery), and the kernel maps the neighbours of each page it
/// faults in: an idle rekey with ten credentials kept about 7 MiB of its
/// 7 MB binary resident. `MADV_PAGEOUT` asks the kernel to take those pages
/// back now; the ones still used fault in again from the file, as they
/// would after any memory pressure. Like [`release_free_memory`], called
/// once ready and after each reload. A no-op off Linux, and before 5.4 (the
/// kernel refuses the advice and nothing changes).
pub fn page_out_program() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        for (start, len) in program_mappings(&maps, &exe) {
            // SAFETY: madvise only advises the kernel about our own
            // read-only mappings of the program file; their pages fault
            // back in from the file when they are used, so no memory the
            // program holds changes.
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// The read-only mappings of `exe` in a `/proc/self/maps` text, as (start,
/// length). Writable ones (data, relocated pointers) are left alone.
fn program_mappings(maps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    let exe = exe.as_os_str().to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode path (the path may hold spaces)
            let mut f = line.splitn(6, ' ');
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?.trim_start();
            if path != exe || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (b > a).then_some((a, b - a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_programs_read_only_mappings_are_paged_out() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 123 /usr/bin/re key
55d0a0100000-55d0a0600000 r-xp 00100000 fd:01 123 /usr/bin/re key
55d0a0600000-55d0a0700000 rw-p 00600000 fd:01 123 /usr/bin/re key
55d0a0700000-55d0a0800000 r-xp 00000000 fd:01 124 /usr/lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        let got = program_mappings(maps, std::path::Path::new("/usr/bin/re key"));
        assert_eq!(
            got,
            vec![(0x55d0a0000000, 0x100000), (0x55d0a0100000, 0x500000)]
        );
    }

    #[test]
    fn the_running_programs_own_maps_are_found() {
        // The real format: the path after a run of padding spaces.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!program_mappings(&maps, &exe).is_empty(), "{maps}");
        // Paged out, the program keeps running (its code faults back in)
        // and keeps every mapping: the advice unmaps nothing.
        page_out_program();
        let after = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert_eq!(
            program_mappings(&after, &exe),
            program_mappings(&maps, &exe)
        );
    }
}
