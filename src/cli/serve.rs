//! `registrar serve`: load settings, start the server, stop on SIGINT/SIGTERM.

use crate::settings::Settings;
use crate::startup::Application;
use std::path::Path;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Run the server until it is stopped.
pub fn run(config: Option<&Path>) -> ExitCode {
    let settings = match Settings::load(config) {
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
