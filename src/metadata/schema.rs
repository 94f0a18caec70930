//! THE table of client metadata fields, and the table of cross-field rules.
//!
//! Adding a field is one row here (plus a test block and a conformance case). The engine in
//! `validate.rs` runs the rows in order: drop unknown members, check each known member against
//! its type, apply defaults, then run the cross-field rules. Modelled on node-oidc-provider's
//! `lib/consts/client_attributes.js` + `lib/helpers/client_schema.js`.

use super::rules;
use super::uri::UriRule;
use crate::error::Result;
use crate::settings::MetadataSettings;
use serde_json::{Map, Value};

/// A list in the configuration (and so in discovery) that a value must come from.
pub type Supported = fn(&MetadataSettings) -> &Vec<String>;

/// The JSON type and per-value check of a field.
#[derive(Clone, Copy)]
pub enum Ty {
    /// A non-empty string.
    Text,
    /// A name shown to users: a non-empty string that is not only whitespace.
    Name,
    /// Any string, possibly empty.
    AnyText,
    /// `true` or `false`.
    Bool,
    /// `true`, `false` or `null`.
    NullableBool,
    /// A non-negative integer that fits a JSON safe integer.
    Seconds,
    /// An array of non-empty strings.
    TextList,
    /// An array of non-empty strings without whitespace (Hydra `audience`).
    TokenList,
    /// An array of e-mail addresses (RFC 7591 §2 `contacts`).
    Contacts,
    /// One e-mail address (RFC 8705 §2.1.2 `tls_client_auth_san_email`).
    Email,
    /// One IPv4 or IPv6 address (RFC 8705 §2.1.2 `tls_client_auth_san_ip`).
    Ip,
    /// A URI under the given rule.
    Uri(UriRule),
    /// An array of URIs under the given rule.
    UriList(UriRule),
    /// One value from a configured list.
    OneOf(Supported),
    /// One value from a fixed list.
    Enum(&'static [&'static str]),
    /// An array of values, each from a configured list.
    ListOf(Supported),
    /// An array of non-empty strings, each from a configured list when that list is non-empty
    /// (`default_acr_values` against `acr_values_supported`).
    ListOfIfListed(Supported),
    /// An array of response types, each (as a set of words) in `response_types_supported`.
    ResponseTypes,
    /// A space-separated scope string (RFC 6749 §3.3), each token in `scopes_supported` when
    /// that list is non-empty.
    Scope,
    /// A public JWK Set (RFC 7517 §5).
    Jwks,
    /// Any JSON object.
    Object,
    /// A Go-style duration (`1h30m`, Hydra `*_token_lifespan`), or null.
    Duration,
}

/// The default applied when a member is absent.
#[derive(Clone, Copy)]
pub enum DefaultRule {
    /// No default: the member stays absent.
    None,
    /// A boolean.
    Bool(bool),
    /// A string.
    Text(&'static str),
    /// An array of strings.
    List(&'static [&'static str]),
    /// An empty JSON object.
    EmptyObject,
    /// The first value of a configured list.
    FirstOf(Supported),
    /// The configured `default_scope`, when non-empty.
    ConfiguredScope,
    /// Computed by a cross-field rule (the rule names the spec).
    Derived,
}

/// The error code a field's violations carry (RFC 7591 §3.2.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Code {
    /// `invalid_redirect_uri`.
    RedirectUri,
    /// `invalid_client_metadata`.
    ClientMetadata,
}

/// One client metadata field.
#[derive(Clone, Copy)]
pub struct Field {
    /// The member name.
    pub name: &'static str,
    /// Type and per-value check.
    pub ty: Ty,
    /// Default when absent.
    pub default: DefaultRule,
    /// Error code of violations.
    pub code: Code,
    /// Accepts `name#bcp47-tag` variants (RFC 7591 §2.2).
    pub localizable: bool,
    /// A Hydra extension that grants privileges: an anonymous registrant may not set it to a
    /// non-default value unless configuration allows it.
    pub privileged: bool,
    /// Where the field is defined.
    pub spec: &'static str,
}

const fn f(name: &'static str, ty: Ty, default: DefaultRule, spec: &'static str) -> Field {
    Field {
        name,
        ty,
        default,
        code: Code::ClientMetadata,
        localizable: false,
        privileged: false,
        spec,
    }
}

const fn localized(field: Field) -> Field {
    Field {
        localizable: true,
        ..field
    }
}

const fn privileged(field: Field) -> Field {
    Field {
        privileged: true,
        ..field
    }
}

const fn redirect(field: Field) -> Field {
    Field {
        code: Code::RedirectUri,
        ..field
    }
}

use DefaultRule as D;
use Ty as T;

/// Every client metadata field the registrar understands, in the order responses list them.
pub static FIELDS: &[Field] = &[
    // RFC 7591 §2
    redirect(f(
        "redirect_uris",
        T::UriList(UriRule::Redirect),
        D::None,
        "RFC 7591 §2",
    )),
    f(
        "token_endpoint_auth_method",
        T::OneOf(|s| &s.token_endpoint_auth_methods_supported),
        D::Text("client_secret_basic"),
        "RFC 7591 §2",
    ),
    f(
        "grant_types",
        T::ListOf(|s| &s.grant_types_supported),
        D::Derived,
        "RFC 7591 §2, §2.1",
    ),
    f(
        "response_types",
        T::ResponseTypes,
        D::Derived,
        "RFC 7591 §2, §2.1",
    ),
    localized(f("client_name", T::Name, D::None, "RFC 7591 §2")),
    localized(f(
        "client_uri",
        T::Uri(UriRule::Web),
        D::None,
        "RFC 7591 §2",
    )),
    localized(f("logo_uri", T::Uri(UriRule::Web), D::None, "RFC 7591 §2")),
    f("scope", T::Scope, D::ConfiguredScope, "RFC 7591 §2"),
    f("contacts", T::Contacts, D::None, "RFC 7591 §2"),
    localized(f("tos_uri", T::Uri(UriRule::Web), D::None, "RFC 7591 §2")),
    localized(f(
        "policy_uri",
        T::Uri(UriRule::Web),
        D::None,
        "RFC 7591 §2",
    )),
    f("jwks_uri", T::Uri(UriRule::Https), D::None, "RFC 7591 §2"),
    f("jwks", T::Jwks, D::None, "RFC 7591 §2"),
    f("software_id", T::Text, D::None, "RFC 7591 §2"),
    f("software_version", T::Text, D::None, "RFC 7591 §2"),
    // OpenID Connect Dynamic Client Registration 1.0 §2
    f(
        "application_type",
        T::Enum(&["web", "native"]),
        D::Text("web"),
        "OIDC Registration §2",
    ),
    f(
        "sector_identifier_uri",
        T::Uri(UriRule::Https),
        D::None,
        "OIDC Registration §2, §5",
    ),
    f(
        "subject_type",
        T::OneOf(|s| &s.subject_types_supported),
        D::FirstOf(|s| &s.subject_types_supported),
        "OIDC Registration §2",
    ),
    f(
        "id_token_signed_response_alg",
        T::OneOf(|s| &s.id_token_signing_alg_values_supported),
        D::Text("RS256"),
        "OIDC Registration §2",
    ),
    f(
        "id_token_encrypted_response_alg",
        T::OneOf(|s| &s.id_token_encryption_alg_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "id_token_encrypted_response_enc",
        T::OneOf(|s| &s.id_token_encryption_enc_values_supported),
        D::Derived,
        "OIDC Registration §2",
    ),
    f(
        "userinfo_signed_response_alg",
        T::OneOf(|s| &s.userinfo_signing_alg_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "userinfo_encrypted_response_alg",
        T::OneOf(|s| &s.userinfo_encryption_alg_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "userinfo_encrypted_response_enc",
        T::OneOf(|s| &s.userinfo_encryption_enc_values_supported),
        D::Derived,
        "OIDC Registration §2",
    ),
    f(
        "request_object_signing_alg",
        T::OneOf(|s| &s.request_object_signing_alg_values_supported),
        D::None,
        "OIDC Registration §2; RFC 9101",
    ),
    f(
        "request_object_encryption_alg",
        T::OneOf(|s| &s.request_object_encryption_alg_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "request_object_encryption_enc",
        T::OneOf(|s| &s.request_object_encryption_enc_values_supported),
        D::Derived,
        "OIDC Registration §2",
    ),
    f(
        "token_endpoint_auth_signing_alg",
        T::OneOf(|s| &s.token_endpoint_auth_signing_alg_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "default_max_age",
        T::Seconds,
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "require_auth_time",
        T::Bool,
        D::Bool(false),
        "OIDC Registration §2",
    ),
    f(
        "default_acr_values",
        T::ListOfIfListed(|s| &s.acr_values_supported),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "initiate_login_uri",
        T::Uri(UriRule::Https),
        D::None,
        "OIDC Registration §2",
    ),
    f(
        "request_uris",
        T::UriList(UriRule::HttpsWithFragment),
        D::None,
        "OIDC Registration §2",
    ),
    // Logout
    f(
        "post_logout_redirect_uris",
        T::UriList(UriRule::Redirect),
        D::List(&[]),
        "OIDC RP-Initiated Logout §3.1",
    ),
    f(
        "frontchannel_logout_uri",
        T::Uri(UriRule::Web),
        D::None,
        "OIDC Front-Channel Logout §2",
    ),
    f(
        "frontchannel_logout_session_required",
        T::Bool,
        D::Bool(false),
        "OIDC Front-Channel Logout §2",
    ),
    f(
        "backchannel_logout_uri",
        // https only: the AS posts logout tokens there (Back-Channel Logout §2.2 allows http for
        // confidential clients; issue #12 item 4 does not).
        T::Uri(UriRule::Https),
        D::None,
        "OIDC Back-Channel Logout §2.2",
    ),
    f(
        "backchannel_logout_session_required",
        T::Bool,
        D::Bool(false),
        "OIDC Back-Channel Logout §2.2",
    ),
    // RFC 8705 (mTLS)
    f(
        "tls_client_auth_subject_dn",
        T::Text,
        D::None,
        "RFC 8705 §2.1.2",
    ),
    f(
        "tls_client_auth_san_dns",
        T::Text,
        D::None,
        "RFC 8705 §2.1.2",
    ),
    f(
        "tls_client_auth_san_uri",
        T::Text,
        D::None,
        "RFC 8705 §2.1.2",
    ),
    f("tls_client_auth_san_ip", T::Ip, D::None, "RFC 8705 §2.1.2"),
    f(
        "tls_client_auth_san_email",
        T::Email,
        D::None,
        "RFC 8705 §2.1.2",
    ),
    f(
        "tls_client_certificate_bound_access_tokens",
        T::Bool,
        D::Bool(false),
        "RFC 8705 §3.4",
    ),
    f(
        "use_mtls_endpoint_aliases",
        T::Bool,
        D::Bool(false),
        "RFC 8705 §5 (client switch)",
    ),
    // DPoP, PAR, JAR, RAR
    f(
        "dpop_bound_access_tokens",
        T::Bool,
        D::Bool(false),
        "RFC 9449 §5.2",
    ),
    f(
        "require_pushed_authorization_requests",
        T::Bool,
        D::Bool(false),
        "RFC 9126 §6",
    ),
    f(
        "require_signed_request_object",
        T::Bool,
        D::Bool(false),
        "RFC 9101 §10.5",
    ),
    f(
        "authorization_details_types",
        T::ListOf(|s| &s.authorization_details_types_supported),
        D::List(&[]),
        "RFC 9396 §10",
    ),
    // JARM
    f(
        "authorization_signed_response_alg",
        T::OneOf(|s| &s.authorization_signing_alg_values_supported),
        D::Text("RS256"),
        "JARM §3",
    ),
    f(
        "authorization_encrypted_response_alg",
        T::OneOf(|s| &s.authorization_encryption_alg_values_supported),
        D::None,
        "JARM §3",
    ),
    f(
        "authorization_encrypted_response_enc",
        T::OneOf(|s| &s.authorization_encryption_enc_values_supported),
        D::Derived,
        "JARM §3",
    ),
    // RFC 9701 (JWT introspection responses)
    f(
        "introspection_signed_response_alg",
        T::OneOf(|s| &s.introspection_signing_alg_values_supported),
        D::Text("RS256"),
        "RFC 9701 §6",
    ),
    f(
        "introspection_encrypted_response_alg",
        T::OneOf(|s| &s.introspection_encryption_alg_values_supported),
        D::None,
        "RFC 9701 §6",
    ),
    f(
        "introspection_encrypted_response_enc",
        T::OneOf(|s| &s.introspection_encryption_enc_values_supported),
        D::Derived,
        "RFC 9701 §6",
    ),
    // CIBA
    f(
        "backchannel_token_delivery_mode",
        T::OneOf(|s| &s.backchannel_token_delivery_modes_supported),
        D::None,
        "CIBA Core §4",
    ),
    f(
        "backchannel_client_notification_endpoint",
        T::Uri(UriRule::Https),
        D::None,
        "CIBA Core §4",
    ),
    f(
        "backchannel_authentication_request_signing_alg",
        T::OneOf(|s| &s.backchannel_authentication_request_signing_alg_values_supported),
        D::None,
        "CIBA Core §4",
    ),
    f(
        "backchannel_user_code_parameter",
        T::Bool,
        D::Bool(false),
        "CIBA Core §4",
    ),
    // Per-client response mode allow-list (node-oidc-provider)
    f(
        "response_modes",
        T::ListOf(|s| &s.response_modes_supported),
        D::None,
        "node-oidc-provider extension",
    ),
    // Ory Hydra extensions (OAuth2Client); privileged: see `Field::privileged`.
    privileged(f(
        "allowed_cors_origins",
        T::UriList(UriRule::Origin),
        D::List(&[]),
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "audience",
        T::TokenList,
        D::List(&[]),
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "owner",
        T::AnyText,
        D::Text(""),
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "metadata",
        T::Object,
        D::EmptyObject,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "skip_consent",
        T::Bool,
        D::Bool(false),
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "skip_logout_consent",
        T::NullableBool,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "access_token_strategy",
        T::Enum(&["jwt", "opaque"]),
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "authorization_code_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "authorization_code_grant_id_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "authorization_code_grant_refresh_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "client_credentials_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "device_authorization_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "device_authorization_grant_id_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "device_authorization_grant_refresh_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "implicit_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "implicit_grant_id_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "jwt_bearer_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "refresh_token_grant_access_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "refresh_token_grant_id_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
    privileged(f(
        "refresh_token_grant_refresh_token_lifespan",
        T::Duration,
        D::None,
        "Ory Hydra OAuth2Client",
    )),
];

/// Members only the server sets (RFC 7591 §3.2.1, RFC 7592 §3). They are never taken from a
/// registration request; on update they must equal the current values.
pub const SERVER_MANAGED: &[&str] = &[
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
];

/// Token endpoint authentication methods that use a `client_secret` the server issues.
pub const SECRET_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
];

/// Whether `method` needs an issued `client_secret`.
pub fn uses_client_secret(method: &str) -> bool {
    SECRET_METHODS.contains(&method)
}

/// Whether a token endpoint auth method or JOSE algorithm needs the plaintext `client_secret`:
/// `client_secret_jwt` and HS* (HMAC keyed with the secret, OIDC Core §9, §10.1), and the JWE
/// algorithms whose key is derived from it (`dir`, `A*KW`, `A*GCMKW`, `PBES2-*`, OIDC Core
/// §10.2). The registrar stores secrets only as argon2id hashes unless recoverable secrets are
/// enabled (`credentials.client_secret_derivation_key`), so these values are refused otherwise.
pub fn is_secret_keyed(value: &str) -> bool {
    value == "client_secret_jwt"
        || value.starts_with("HS")
        || value == "dir"
        || value.starts_with("PBES2-")
        || (value.starts_with('A') && (value.ends_with("KW")))
}

/// A rule over several fields, run after per-field checks and defaults.
pub struct CrossRule {
    /// Short name used in tests and docs.
    pub name: &'static str,
    /// Where the rule comes from.
    pub spec: &'static str,
    /// Check (and where the spec says so, complete) the metadata.
    pub apply: fn(&mut Map<String, Value>, &MetadataSettings) -> Result<()>,
}

/// The cross-field rules, in the order they run.
pub static RULES: &[CrossRule] = &[
    CrossRule {
        name: "grant_and_response_types",
        spec: "RFC 7591 §2.1",
        apply: rules::grant_and_response_types,
    },
    CrossRule {
        name: "redirect_uris_required",
        spec: "RFC 7591 §2; OIDC Registration §2",
        apply: rules::redirect_uris_required,
    },
    CrossRule {
        name: "redirect_uris_by_application_type",
        spec: "OIDC Registration §2; RFC 8252 §7",
        apply: rules::redirect_uris_by_application_type,
    },
    CrossRule {
        name: "jwks_xor_jwks_uri",
        spec: "RFC 7591 §2",
        apply: rules::jwks_xor_jwks_uri,
    },
    CrossRule {
        name: "encryption_enc_needs_alg",
        spec: "OIDC Registration §2; JARM §3; RFC 9701 §6",
        apply: rules::encryption_enc_needs_alg,
    },
    CrossRule {
        name: "jarm_encryption_needs_signing",
        spec: "JARM §3",
        apply: rules::jarm_encryption_needs_signing,
    },
    CrossRule {
        name: "tls_client_auth_subject",
        spec: "RFC 8705 §2.1.2",
        apply: rules::tls_client_auth_subject,
    },
    CrossRule {
        name: "keys_required",
        spec: "OIDC Registration §2; RFC 8705 §2.2",
        apply: rules::keys_required,
    },
    CrossRule {
        name: "token_endpoint_auth_signing_alg",
        spec: "OIDC Registration §2",
        apply: rules::token_endpoint_auth_signing_alg,
    },
    CrossRule {
        name: "symmetric_algs_need_secret",
        spec: "OIDC Core §10.1, §10.2",
        apply: rules::symmetric_algs_need_secret,
    },
    CrossRule {
        name: "id_token_alg_none",
        spec: "OIDC Registration §2",
        apply: rules::id_token_alg_none,
    },
    CrossRule {
        name: "one_proof_of_possession",
        spec: "RFC 8705 §3.4; RFC 9449 §5.2",
        apply: rules::one_proof_of_possession,
    },
    CrossRule {
        name: "pairwise_sector_identifier",
        spec: "OIDC Core §8.1; OIDC Registration §5",
        apply: rules::pairwise_sector_identifier,
    },
    CrossRule {
        name: "ciba",
        spec: "CIBA Core §4",
        apply: rules::ciba,
    },
];

/// The field called `name`.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}
