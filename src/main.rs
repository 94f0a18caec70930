//! `registrar [serve] [--config FILE]`, `registrar check-config [--config FILE]`,
//! `registrar --version`. Each subcommand is a few lines calling the library.

use clap::{Parser, Subcommand};
use registrar::settings::Settings;
use registrar::startup::Application;
use std::path::PathBuf;
use std::process::ExitCode;

/// OAuth 2.0 / OpenID Connect Dynamic Client Registration server (RFC 7591, RFC 7592).
///
/// Settings come from the embedded config/default.toml, then FILE, then REGISTRAR_* environment
/// variables (see README).
#[derive(Parser)]
#[command(name = "registrar", version, about, long_about = None)]
struct Cli {
    /// Configuration file whose keys override the embedded defaults.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default); stops on SIGINT/SIGTERM, reloads TLS certificates on SIGHUP.
    Serve,
    /// Load the configuration as `serve` would, print it with secrets redacted, and list every
    /// problem; exit status 1 if there is any.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config),
        Command::CheckConfig => registrar::config_check::run(cli.config.as_deref()),
    }
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registrar: {e}");
            return ExitCode::FAILURE;
        }
    };
    registrar::telemetry::logging::init(&settings.server);
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!("registrar cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            "registrar listening; registration endpoint: {}",
            app.registration_endpoint()
        );
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("registrar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
