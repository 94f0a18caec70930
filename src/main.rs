//! `registrar`: see `registrar --help`. Everything lives in the library (`registrar::cli`).

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    registrar::cli::main()
}

/// glibc gives each thread that contends for malloc an arena of its own, up to eight per core,
/// and keeps the memory each one freed. The server's threads (HTTP workers, the blocking pool,
/// sled's) then hold about 20 MB more after a read run over a large population than with two
/// arenas, with no read throughput to show for it (README, "What the sled store keeps per
/// client"). So two arenas, unless `MALLOC_ARENA_MAX` says otherwise; set before any thread
/// starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc tunable; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
