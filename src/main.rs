fn main() -> std::process::ExitCode {
    malloc_tunables();
    cbuild::cli::main()
}

/// Two glibc malloc tunables, for peak RSS (issue 23; measured on a cold 100,000-file layer).
///
/// One arena: glibc gives each thread that allocates its own arena (up to 8 per core) and keeps
/// what a thread freed for that arena: the file lists built while loading, the keys made on
/// tokio's workers and the tar entries on the blocking pool each left their high-water mark in a
/// separate arena, ≈ 70 MiB of peak RSS for a layer of 100,000 files. cbuild's threads spend
/// their time in syscalls, compression and subprocesses, not in malloc, so one shared arena costs
/// no measurable time (a 100,000-file layer built faster with it).
///
/// A fixed mmap threshold of 256 KiB: by default glibc raises the threshold to the largest block
/// freed so far, after which the compressor's 2 MiB chunk buffers came from the heap, between the
/// small allocations of the file lists, and the heap's resident size grew by ≈ 25 MiB over the
/// layer's compression (fragmentation). Blocks of 256 KiB or more are now mapped and unmapped on
/// their own; the compressor reuses its chunk buffers (`oci::compress`), so few are mapped and
/// the system time of a 400 MB layer stays as it was.
fn malloc_tunables() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
