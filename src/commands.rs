//! The operator commands behind `registrar migrate|export|import` (main.rs only parses).

use crate::clock::{Clock, SystemClock};
use crate::settings::Settings;
use crate::store::{self, transfer};
use crate::tokens::OsTokens;
use std::io::BufRead;
use std::path::Path;

/// `registrar migrate`: bring the database schema to this build's version.
pub async fn migrate(settings: &Settings) -> Result<(), String> {
    let applied = store::migrate(&settings.storage, SystemClock.now())
        .await
        .map_err(|e| e.to_string())?;
    if applied.is_empty() {
        eprintln!("registrar: schema already current");
    } else {
        eprintln!("registrar: applied {}", applied.join(", "));
    }
    Ok(())
}

/// `registrar export`: JSON lines to stdout.
pub async fn export(settings: &Settings) -> Result<(), String> {
    let store = store::open(&settings.storage, SystemClock.now())
        .await
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = transfer::export(settings, store.as_ref(), &OsTokens, &mut out).await?;
    eprintln!(
        "registrar: exported {} clients and {} counters",
        summary.clients, summary.counters
    );
    Ok(())
}

/// `registrar import [--replace] [FILE]`: JSON lines from FILE or stdin.
pub async fn import(settings: &Settings, file: Option<&Path>, replace: bool) -> Result<(), String> {
    let store = store::open(&settings.storage, SystemClock.now())
        .await
        .map_err(|e| e.to_string())?;
    let mut input: Box<dyn BufRead> = match file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let summary = transfer::import(settings, store.as_ref(), &mut input, replace).await?;
    eprintln!(
        "registrar: imported {} clients ({} unchanged) and {} counters",
        summary.clients, summary.unchanged, summary.counters
    );
    if !summary.refused.is_empty() {
        return Err(format!(
            "{} clients exist with other content and were not replaced (use --replace): {}",
            summary.refused.len(),
            summary.refused.join(", ")
        ));
    }
    Ok(())
}
