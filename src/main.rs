//! `registrar`: see `registrar --help`. Everything lives in the library (`registrar::cli`).

/// mimalloc instead of glibc malloc. Once a large population had passed through the record
/// cache, glibc's heap was fragmented and its bin searches (`_int_malloc`,
/// `malloc_consolidate`) took 10-15% of a read's CPU; mimalloc's per-page free lists do not
/// degrade that way (BENCHMARKS.md, issue #19). Built with `no_thp`: mimalloc would otherwise
/// ask for transparent huge pages, and an idle server with 1,000 clients sat at 65 MB resident
/// (40 MB of it huge pages) instead of 19.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    registrar::cli::main()
}
