//! Black-box API tests: each starts the registrar on port 0 with its own data directory.

mod audit;
mod concurrency;
mod discovery;
mod disk_full;
mod fetch;
mod hardening;
mod helpers;
mod hostile;
mod hygiene;
mod management;
mod metadata;
mod persistence;
mod policy;
mod properties;
mod registration;
mod tls;
mod webhooks;
