//! The command line: `registrar [serve]` runs the server; `check-config` checks a configuration;
//! `migrate`, `export` and `import` work on the configured store (`crate::commands`);
//! `registrar clients ...` are the operator commands (an HTTP client of the admin API). main.rs
//! only calls [`main`].

mod clients;
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// OAuth 2.0 / OpenID Connect Dynamic Client Registration server (RFC 7591, RFC 7592).
#[derive(Debug, Parser)]
#[command(name = "registrar", version, about, long_about = None)]
pub struct Cli {
    /// Settings file; its keys override the embedded config/default.toml, and REGISTRAR_*
    /// environment variables override both.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registration server (the default); SIGHUP reloads the TLS certificates.
    Serve,
    /// Load the configuration as `serve` would, print it with secrets redacted, and list every
    /// problem; exit status 1 if there is any.
    CheckConfig,
    /// Apply pending database migrations (storage.backend = "postgres"); idempotent.
    Migrate,
    /// Write every client, counter and the server key to stdout as JSON lines.
    Export,
    /// Read an export (from FILE, or stdin) into the configured store.
    Import {
        /// Overwrite clients that exist with other content (refused otherwise).
        #[arg(long)]
        replace: bool,
        /// The export to read; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Operator commands on the registered clients, through the admin API.
    Clients(Box<clients::ClientsArgs>),
    /// The audit trail, offline against the configured store: `audit verify` checks the hash
    /// chain (or, with `--admin-url`, a running server's through its admin API), `audit list`
    /// prints records (`registrar audit --help`).
    #[command(disable_help_flag = true)]
    Audit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Parse the arguments and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve) => serve::run(cli.config.as_deref()),
        Some(Command::CheckConfig) => crate::config_check::run(cli.config.as_deref()),
        Some(Command::Migrate) => serve::store_command(cli.config.as_deref(), |s| {
            Box::pin(async move { crate::commands::migrate(&s).await })
        }),
        Some(Command::Export) => {
            end_quietly_on_a_closed_pipe();
            serve::store_command(cli.config.as_deref(), |s| {
                Box::pin(async move { crate::commands::export(&s).await })
            })
        }
        Some(Command::Import { replace, file }) => {
            serve::store_command(cli.config.as_deref(), move |s| {
                Box::pin(async move { crate::commands::import(&s, file.as_deref(), replace).await })
            })
        }
        Some(Command::Clients(args)) => {
            end_quietly_on_a_closed_pipe();
            clients::run(*args)
        }
        Some(Command::Audit { args }) => {
            end_quietly_on_a_closed_pipe();
            audit(cli.config.as_deref(), &args)
        }
    }
}

/// For the commands that only read and print (`clients`, `audit`, `export`): end quietly when
/// the reader goes away (`registrar clients list | head`), as Unix tools do. Rust ignores
/// SIGPIPE at start, so `println!` would panic on the closed pipe instead. Not for `serve`, whose
/// sockets must not kill the process.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `registrar audit ...` (`crate::events::cli`).
fn audit(config: Option<&std::path::Path>, args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", crate::events::cli::USAGE);
        return ExitCode::SUCCESS;
    }
    let command = match crate::events::cli::parse(args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("registrar: {e}\n{}", crate::events::cli::USAGE);
            return ExitCode::from(2);
        }
    };
    if let crate::events::cli::AuditCommand::VerifyOnline {
        admin_url,
        admin_token,
    } = command
    {
        return actix_web::rt::System::new()
            .block_on(crate::events::cli::verify_online(&admin_url, admin_token));
    }
    let settings = match serve::load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    actix_web::rt::System::new().block_on(crate::events::cli::run(&settings, command))
}
