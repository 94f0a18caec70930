//! `registrar [--config FILE] [audit verify|list ...]`: load settings, then start the server
//! (stop on SIGINT/SIGTERM), or run an audit command (`registrar::events::cli`).

use registrar::settings::Settings;
use registrar::startup::Application;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: registrar [--config FILE] [audit verify|list ...]\n\
  Starts the registration server (see `registrar audit --help` for the audit commands). Settings come from the embedded config/default.toml,\n\
  then FILE, then REGISTRAR_* environment variables (see README).";

fn main() -> ExitCode {
    let mut config: Option<PathBuf> = None;
    let mut audit: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "audit" => {
                let rest: Vec<String> = args.by_ref().collect();
                if rest.iter().any(|a| a == "--help" || a == "-h") {
                    println!("{}", registrar::events::cli::USAGE);
                    return ExitCode::SUCCESS;
                }
                // `--config FILE` may also follow the command.
                let mut words = Vec::new();
                let mut rest = rest.into_iter();
                while let Some(word) = rest.next() {
                    if word == "--config" || word == "-c" {
                        match rest.next() {
                            Some(path) => config = Some(PathBuf::from(path)),
                            None => return usage_error("--config needs a file"),
                        }
                    } else {
                        words.push(word);
                    }
                }
                audit = Some(words);
            }
            "--config" | "-c" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a file"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("registrar {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let settings = match Settings::load(config.as_deref()) {
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

    if let Some(words) = audit {
        let command = match registrar::events::cli::parse(&words) {
            Ok(command) => command,
            Err(e) => {
                eprintln!("registrar: {e}\n{}", registrar::events::cli::USAGE);
                return ExitCode::from(2);
            }
        };
        let system = actix_web::rt::System::new();
        return system.block_on(registrar::events::cli::run(&settings, command));
    }

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

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("registrar: {msg}\n{USAGE}");
    ExitCode::from(2)
}
