//! The black-box API suite of `tests/api` again, on PostgreSQL: the same modules (through
//! `#[path]`), with `helpers` starting every app on its own database of one private cluster.
//! Left out: the modules about the embedded store's files (`persistence`, `disk_full`), whose
//! PostgreSQL counterparts are in `tests/postgres`, and `openapi`, which starts no server.

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = true;
#[path = "../support/postgres.rs"]
mod pg;
#[path = "../support/python.rs"]
mod python;

#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/audit.rs"]
mod audit;
#[path = "../api/cimd.rs"]
mod cimd;
#[path = "../api/cli.rs"]
mod cli;
#[path = "../api/concurrency.rs"]
mod concurrency;
#[path = "../api/discovery.rs"]
mod discovery;
#[path = "../api/fetch.rs"]
mod fetch;
#[path = "../api/hardening.rs"]
mod hardening;
#[allow(dead_code)] // helpers used only by the modules left out
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/hostile.rs"]
mod hostile;
#[path = "../api/hygiene.rs"]
mod hygiene;
#[path = "../api/lifecycle.rs"]
mod lifecycle;
#[path = "../api/management.rs"]
mod management;
#[path = "../api/metadata.rs"]
mod metadata;
#[path = "../api/operability.rs"]
mod operability;
#[path = "../api/policy.rs"]
mod policy;
#[path = "../api/properties.rs"]
mod properties;
#[path = "../api/registration.rs"]
mod registration;
#[path = "../api/tls.rs"]
mod tls;
#[path = "../api/webhooks.rs"]
mod webhooks;
