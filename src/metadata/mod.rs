//! Client metadata: one declarative table of fields (`schema`), the engine that runs it
//! (`validate`), cross-field rules (`rules`), URI and JWK Set checks.

pub mod jwks;
pub mod rules;
pub mod schema;
pub mod unicode;
pub mod uri;
pub mod validate;

pub use rules::needs_recoverable_secret;
pub use schema::{is_secret_keyed, uses_client_secret, FIELDS, RULES, SERVER_MANAGED};
pub use validate::validate;
