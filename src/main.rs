//! `registrar [--config FILE] [COMMAND]`: thin; every command is a call into the library.

use clap::{Parser, Subcommand};
use registrar::settings::Settings;
use registrar::startup::Application;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// OAuth 2.0 / OpenID Connect Dynamic Client Registration server (RFC 7591, RFC 7592).
/// Settings come from the embedded config/default.toml, then FILE, then REGISTRAR_*
/// environment variables (see README).
#[derive(Parser)]
#[command(name = "registrar", version)]
struct Cli {
    /// Configuration file layered over the defaults.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the registration server (the default).
    Serve,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registrar: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.server.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let result = match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => registrar::commands::migrate(&settings).await,
            Command::Export => registrar::commands::export(&settings).await,
            Command::Import { replace, file } => {
                registrar::commands::import(&settings, file.as_deref(), replace).await
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("registrar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve(settings: Settings) -> Result<(), String> {
    let app = Application::build(settings)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    tracing::info!(
        "registrar listening; registration endpoint: {}",
        app.registration_endpoint()
    );
    app.run_until_stopped().await.map_err(|e| e.to_string())
}
