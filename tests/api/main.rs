//! Black-box API tests: each starts the registrar on port 0 with its own data directory.

mod discovery;
mod fetch;
mod helpers;
mod hygiene;
mod management;
mod metadata;
mod persistence;
mod policy;
mod registration;
