//! `registrar serve`: load settings, start the server, stop on SIGINT/SIGTERM.

use crate::settings::Settings;
use crate::startup::Application;
use std::path::Path;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Load the settings and start logging, or say why not.
pub(crate) fn load(config: Option<&Path>) -> Result<Settings, ExitCode> {
    let settings = Settings::load(config).map_err(|e| {
        eprintln!("registrar: {e}");
        ExitCode::FAILURE
    })?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.server.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    Ok(settings)
}

/// A command on the configured store (`migrate`, `export`, `import`): run to completion, its
/// error as one line on stderr and a non-zero exit.
pub fn store_command(
    config: Option<&Path>,
    command: impl FnOnce(
        Settings,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>,
) -> ExitCode {
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    actix_web::rt::System::new().block_on(async move {
        match command(settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("registrar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Run the server until it is stopped.
pub fn run(config: Option<&Path>) -> ExitCode {
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
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
