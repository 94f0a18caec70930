//! Reliability tests against the real `registrar` binary: SIGKILL during write load, and many
//! idle connections. Each test starts its own process on its own temporary data directory.

mod connections;
mod corruption;
mod crash;
mod process;
