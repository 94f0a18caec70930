//! `registrar serve`: load settings, start the server, stop on SIGINT/SIGTERM, reload TLS
//! certificates on SIGHUP.

use crate::settings::Settings;
use crate::startup::Application;
use std::path::Path;
use std::process::ExitCode;

/// Load the settings and start logging (`server.log_format`), or say why not.
pub(crate) fn load(config: Option<&Path>) -> Result<Settings, ExitCode> {
    let settings = Settings::load(config).map_err(|e| {
        eprintln!("registrar: {e}");
        ExitCode::FAILURE
    })?;
    crate::telemetry::logging::init(&settings.server);
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
