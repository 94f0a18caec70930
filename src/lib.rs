//! registrar: an OAuth 2.0 Dynamic Client Registration server (RFC 7591), with client
//! registration management (RFC 7592) and OpenID Connect Dynamic Client Registration 1.0
//! metadata, on an embedded sled store or a PostgreSQL-wire database shared by replicas.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config_check;
pub mod conformance;
pub mod credentials;
pub mod directory;
pub mod error;
pub mod events;
pub mod fetch;
pub mod http;
pub mod lifecycle;
pub mod logsafe;
pub mod metadata;
pub mod openapi;
pub mod policy;
pub mod registration;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
