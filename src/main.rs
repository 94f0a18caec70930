//! `registrar`: see `registrar --help`. Everything lives in the library (`registrar::cli`).

fn main() -> std::process::ExitCode {
    registrar::cli::main()
}
