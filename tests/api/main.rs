//! Black-box API tests: each starts the registrar on port 0 with its own data directory, on
//! the embedded sled store (`tests/api_postgres` runs the same modules on PostgreSQL).

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[path = "../support/postgres.rs"]
mod pg;
#[path = "../support/python.rs"]
mod python;

mod admin;
mod audit;
mod cimd;
mod cli;
mod concurrency;
mod discovery;
mod disk_full;
mod fetch;
mod hardening;
mod helpers;
mod hostile;
mod hygiene;
mod lifecycle;
mod management;
mod metadata;
mod openapi;
mod operability;
mod persistence;
mod policy;
mod properties;
mod registration;
mod tls;
mod webhooks;
