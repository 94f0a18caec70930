//! `registrar serve`: load settings, start the server, stop on SIGINT/SIGTERM, reload TLS
//! certificates on SIGHUP.

use crate::settings::Settings;
use crate::startup::Application;
use std::path::Path;
use std::process::ExitCode;

/// Run the server until it is stopped.
pub fn run(config: Option<&Path>) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registrar: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::logging::init(&settings.server);

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
