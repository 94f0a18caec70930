//! Reliability tests against the real `registrar` binary: SIGKILL during write load, and many
//! idle connections. Each test starts its own process on its own temporary data directory.

mod audit_cli;
mod connections;
mod corruption;
mod crash;
mod process;
mod webhooks;

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[path = "../support/postgres.rs"]
mod pg;

// The HTTPS receiver of the API tests (and the helpers it builds on).
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/tls.rs"]
mod tls;
