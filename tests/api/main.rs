//! Black-box API tests: each starts the registrar on port 0 with its own data directory.

mod discovery;
mod disk_full;
mod helpers;
mod hygiene;
mod management;
mod persistence;
mod registration;
