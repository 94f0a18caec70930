//! Client metadata through the HTTP API: one row per field of `registrar::metadata::FIELDS`
//! (what it defaults to, a value it accepts and echoes, a value it rejects and with which code),
//! one test per cross-field rule of `RULES`, localized fields, privileged fields, the
//! `client_secret_jwt` mode, and round trips of the three client libraries' models.

use crate::helpers::*;
use crate::tls::{Reply, TlsServer};
use registrar::metadata::schema::Ty;
use registrar::metadata::{FIELDS, RULES};
use registrar::settings::Settings;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// One row per field
// ---------------------------------------------------------------------------------------------

/// What one field does: registered without it (in `default_ctx`), it is echoed as `default`
/// (`None` = absent); with `accept` (in `ctx`) it echoes `echo`; with `reject` (in `ctx`) the
/// registration fails with `code` and a description naming the field.
struct Case {
    field: &'static str,
    ctx: Value,
    default_ctx: Option<Value>,
    default: Option<Value>,
    accept: Value,
    echo: Value,
    reject: Value,
    code: &'static str,
}

fn case(field: &'static str, accept: Value, reject: Value) -> Case {
    Case {
        field,
        ctx: json!({}),
        default_ctx: None,
        default: None,
        echo: accept.clone(),
        accept,
        reject,
        code: "invalid_client_metadata",
    }
}

impl Case {
    fn default(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }
    fn ctx(mut self, v: Value) -> Self {
        self.ctx = v;
        self
    }
    fn default_ctx(mut self, v: Value) -> Self {
        self.default_ctx = Some(v);
        self
    }
    fn echo(mut self, v: Value) -> Self {
        self.echo = v;
        self
    }
    fn code(mut self, c: &'static str) -> Self {
        self.code = c;
        self
    }
}

fn ec_jwks() -> Value {
    json!({"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
}

const LIFESPANS: &[&str] = &[
    "authorization_code_grant_access_token_lifespan",
    "authorization_code_grant_id_token_lifespan",
    "authorization_code_grant_refresh_token_lifespan",
    "client_credentials_grant_access_token_lifespan",
    "device_authorization_grant_access_token_lifespan",
    "device_authorization_grant_id_token_lifespan",
    "device_authorization_grant_refresh_token_lifespan",
    "implicit_grant_access_token_lifespan",
    "implicit_grant_id_token_lifespan",
    "jwt_bearer_grant_access_token_lifespan",
    "refresh_token_grant_access_token_lifespan",
    "refresh_token_grant_id_token_lifespan",
    "refresh_token_grant_refresh_token_lifespan",
];

fn cases() -> Vec<Case> {
    let keys = json!({"jwks_uri": "https://client.example.org/jwks"});
    let enc = |alg_field: &str, alg: &str| {
        let mut ctx = json!({"jwks_uri": "https://client.example.org/jwks"});
        ctx[alg_field] = json!(alg);
        ctx
    };
    let mut v = vec![
        // RFC 7591 §2
        case(
            "redirect_uris",
            json!([
                "https://client.example.org/cb",
                "https://client.example.org/cb2"
            ]),
            json!(["http://client.example.org/cb"]),
        )
        .ctx(json!({"grant_types": ["client_credentials"]}))
        .code("invalid_redirect_uri"),
        case(
            "token_endpoint_auth_method",
            json!("none"),
            json!("client_secret_jwt"),
        )
        .default(json!("client_secret_basic")),
        case(
            "grant_types",
            json!(["authorization_code", "refresh_token", "refresh_token"]),
            json!(["password"]),
        )
        .echo(json!(["authorization_code", "refresh_token"]))
        .default(json!(["authorization_code"])),
        case(
            "response_types",
            json!(["id_token code", "code id_token", "code"]),
            json!(["code banana"]),
        )
        .echo(json!(["code id_token", "code"]))
        .default(json!(["code"])),
        case("client_name", json!("Café ☕"), json!("")),
        case(
            "client_uri",
            json!("https://client.example.org/"),
            json!("javascript:alert(1)"),
        ),
        case(
            "logo_uri",
            json!("https://client.example.org/logo.png"),
            json!("ftp://client.example.org/l.png"),
        ),
        case(
            "scope",
            json!("openid  email openid"),
            json!("openid \"quoted\""),
        )
        .echo(json!("openid email")),
        case(
            "contacts",
            json!(["ops@client.example.org"]),
            json!(["not an address"]),
        ),
        case(
            "tos_uri",
            json!("https://client.example.org/tos"),
            json!("https://client.example.org/tos#x"),
        ),
        case(
            "policy_uri",
            json!("https://client.example.org/p"),
            json!("https://me@client.example.org/p"),
        ),
        case(
            "jwks_uri",
            json!("https://client.example.org/jwks"),
            json!("http://client.example.org/jwks"),
        ),
        case(
            "jwks",
            ec_jwks(),
            json!({"keys":[{"kty":"oct","k":"c2VjcmV0"}]}),
        ),
        case("software_id", json!("4NRB1-0XZABZI9E6-5SM3R"), json!(123)),
        case("software_version", json!("2.1"), json!(["2.1"])),
        // OpenID Connect Dynamic Client Registration 1.0 §2
        case("application_type", json!("native"), json!("desktop")).default(json!("web")),
        case(
            "sector_identifier_uri",
            json!("https://client.example.org/sector.json"),
            json!("http://client.example.org/sector.json"),
        ),
        case("subject_type", json!("pairwise"), json!("anonymous")).default(json!("public")),
        case("id_token_signed_response_alg", json!("ES256"), json!("RS1")).default(json!("RS256")),
        case(
            "id_token_encrypted_response_alg",
            json!("RSA-OAEP"),
            json!("RSA1_5"),
        )
        .ctx(keys.clone()),
        case(
            "id_token_encrypted_response_enc",
            json!("A256GCM"),
            json!("A1GCM"),
        )
        .ctx(enc("id_token_encrypted_response_alg", "RSA-OAEP"))
        .default(json!("A128CBC-HS256")),
        case("userinfo_signed_response_alg", json!("PS256"), json!("RS1")),
        case(
            "userinfo_encrypted_response_alg",
            json!("ECDH-ES"),
            json!("RSA1_5"),
        )
        .ctx(keys.clone()),
        case(
            "userinfo_encrypted_response_enc",
            json!("A192GCM"),
            json!("A1GCM"),
        )
        .ctx(enc("userinfo_encrypted_response_alg", "ECDH-ES+A256KW"))
        .default(json!("A128CBC-HS256")),
        case("request_object_signing_alg", json!("ES256"), json!("none")).ctx(keys.clone()),
        case(
            "request_object_encryption_alg",
            json!("RSA-OAEP-256"),
            json!("RSA1_5"),
        ),
        case(
            "request_object_encryption_enc",
            json!("A256CBC-HS512"),
            json!("A1GCM"),
        )
        .ctx(json!({"request_object_encryption_alg": "RSA-OAEP"}))
        .default(json!("A128CBC-HS256")),
        case(
            "token_endpoint_auth_signing_alg",
            json!("ES256"),
            json!("none"),
        )
        .ctx(json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": ec_jwks()})),
        case("default_max_age", json!(3600), json!(-1)),
        case("require_auth_time", json!(true), json!("yes")).default(json!(false)),
        case(
            "default_acr_values",
            json!(["urn:mace:incommon:iap:silver"]),
            json!([""]),
        ),
        case(
            "initiate_login_uri",
            json!("https://client.example.org/login"),
            json!("http://client.example.org/login"),
        ),
        case(
            "request_uris",
            json!(["https://client.example.org/r#sha256"]),
            json!(["http://client.example.org/r"]),
        ),
        // Logout
        case(
            "post_logout_redirect_uris",
            json!(["https://client.example.org/bye"]),
            json!(["javascript:alert(1)"]),
        )
        .default(json!([])),
        case(
            "frontchannel_logout_uri",
            json!("https://client.example.org/fc"),
            json!("data:text/html,x"),
        ),
        case(
            "frontchannel_logout_session_required",
            json!(true),
            json!(1),
        )
        .default(json!(false)),
        case(
            "backchannel_logout_uri",
            json!("https://client.example.org/bc"),
            json!("https://client.example.org/bc#"),
        ),
        case(
            "backchannel_logout_session_required",
            json!(true),
            json!("true"),
        )
        .default(json!(false)),
        // RFC 8705
        case(
            "tls_client_auth_subject_dn",
            json!("CN=client,O=Example"),
            json!(""),
        )
        .ctx(json!({"token_endpoint_auth_method": "tls_client_auth"}))
        .default_ctx(json!({})),
        case(
            "tls_client_auth_san_dns",
            json!("client.example.org"),
            json!(5),
        )
        .ctx(json!({"token_endpoint_auth_method": "tls_client_auth"}))
        .default_ctx(json!({})),
        case(
            "tls_client_auth_san_uri",
            json!("spiffe://example.org/client"),
            json!(["x"]),
        )
        .ctx(json!({"token_endpoint_auth_method": "tls_client_auth"}))
        .default_ctx(json!({})),
        case(
            "tls_client_auth_san_ip",
            json!("2001:db8::1"),
            json!("300.1.1.1"),
        )
        .ctx(json!({"token_endpoint_auth_method": "tls_client_auth"}))
        .default_ctx(json!({})),
        case(
            "tls_client_auth_san_email",
            json!("client@example.org"),
            json!("client"),
        )
        .ctx(json!({"token_endpoint_auth_method": "tls_client_auth"}))
        .default_ctx(json!({})),
        case(
            "tls_client_certificate_bound_access_tokens",
            json!(true),
            json!("true"),
        )
        .default(json!(false)),
        case("use_mtls_endpoint_aliases", json!(true), json!("false")).default(json!(false)),
        // DPoP, PAR, JAR, RAR
        case("dpop_bound_access_tokens", json!(true), json!(0)).default(json!(false)),
        case(
            "require_pushed_authorization_requests",
            json!(true),
            json!("no"),
        )
        .default(json!(false)),
        case("require_signed_request_object", json!(true), json!([])).default(json!(false)),
        case(
            "authorization_details_types",
            json!(["payment_initiation"]),
            json!(["account_information"]),
        )
        .default(json!([])),
        // JARM
        case(
            "authorization_signed_response_alg",
            json!("ES256"),
            json!("none"),
        )
        .default(json!("RS256")),
        case(
            "authorization_encrypted_response_alg",
            json!("RSA-OAEP"),
            json!("RSA1_5"),
        )
        .ctx(keys.clone()),
        case(
            "authorization_encrypted_response_enc",
            json!("A128GCM"),
            json!("A1GCM"),
        )
        .ctx(enc("authorization_encrypted_response_alg", "RSA-OAEP"))
        .default(json!("A128CBC-HS256")),
        // RFC 9701
        case(
            "introspection_signed_response_alg",
            json!("EdDSA"),
            json!("none"),
        )
        .default(json!("RS256")),
        case(
            "introspection_encrypted_response_alg",
            json!("RSA-OAEP"),
            json!("RSA1_5"),
        )
        .ctx(keys.clone()),
        case(
            "introspection_encrypted_response_enc",
            json!("A256GCM"),
            json!("A1GCM"),
        )
        .ctx(enc("introspection_encrypted_response_alg", "ECDH-ES"))
        .default(json!("A128CBC-HS256")),
        // CIBA
        case(
            "backchannel_token_delivery_mode",
            json!("poll"),
            json!("carrier-pigeon"),
        ),
        case(
            "backchannel_client_notification_endpoint",
            json!("https://client.example.org/ciba"),
            json!("http://client.example.org/ciba"),
        ),
        case(
            "backchannel_authentication_request_signing_alg",
            json!("ES256"),
            json!("none"),
        )
        .ctx(keys),
        case("backchannel_user_code_parameter", json!(true), json!("1")).default(json!(false)),
        case(
            "response_modes",
            json!(["query", "form_post.jwt", "query"]),
            json!(["web_message"]),
        )
        .echo(json!(["query", "form_post.jwt"])),
        // Ory Hydra extensions (privileged: the table app allows them all)
        case(
            "allowed_cors_origins",
            json!(["https://app.example.org"]),
            json!(["https://app.example.org/path"]),
        )
        .default(json!([])),
        case(
            "audience",
            json!(["https://api.example.org"]),
            json!(["has space"]),
        )
        .default(json!([])),
        case("owner", json!("team-a"), json!(5)).default(json!("")),
        case("metadata", json!({"tier": "gold"}), json!("gold")).default(json!({})),
        case("skip_consent", json!(true), json!("yes")).default(json!(false)),
        case("skip_logout_consent", json!(true), json!("yes")),
        case("access_token_strategy", json!("jwt"), json!("paseto")),
    ];
    for lifespan in LIFESPANS {
        v.push(case(lifespan, json!("1h30m"), json!("1d")));
    }
    v
}

fn merged(base: &Value, extra: &Value) -> Value {
    let mut out = base.clone();
    for (k, v) in extra.as_object().unwrap() {
        out[k] = v.clone();
    }
    out
}

/// The app every field row runs against: every privileged field allowed, one RAR type.
/// The app for the per-field table, with a local HTTPS server serving `/sector.json` (listing
/// every redirect URI the table uses): a registered `sector_identifier_uri` is fetched (issue 4).
async fn table_app() -> (TestApp, TlsServer) {
    let sector = sector_server().await;
    let privileged: Vec<&str> = FIELDS
        .iter()
        .filter(|f| f.privileged)
        .map(|f| f.name)
        .collect();
    let app = sector
        .app_with(true, move |s| {
            s.with("metadata.allowed_privileged_fields", privileged)
                .unwrap()
                .with(
                    "metadata.authorization_details_types_supported",
                    vec!["payment_initiation"],
                )
                .unwrap()
                .with("fetch.fetch_jwks_uri", false)
                .unwrap()
        })
        .await;
    (app, sector)
}

async fn sector_server() -> TlsServer {
    let listed = json!([
        "https://client.example.org/cb",
        "https://app.example.org/cb",
        "https://rp.example.org/cb"
    ]);
    TlsServer::start(vec![("/sector.json", Reply::Json(listed.to_string()))]).await
}

#[test]
fn every_field_of_the_table_has_a_row_here_and_no_row_is_for_an_unknown_field() {
    let rows: Vec<&str> = cases().iter().map(|c| c.field).collect();
    for f in FIELDS {
        assert!(rows.contains(&f.name), "no test row for {}", f.name);
    }
    for r in &rows {
        assert!(FIELDS.iter().any(|f| f.name == *r), "{r} is not in FIELDS");
    }
    assert_eq!(rows.len(), FIELDS.len(), "one row per field");
}

#[tokio::test]
async fn every_field_defaults_accepts_and_rejects_as_its_row_says() {
    let (app, sector) = table_app().await;
    let mut failures = Vec::new();
    for mut c in cases() {
        let f = c.field;
        if f == "sector_identifier_uri" {
            c.accept = json!(sector.url("/sector.json"));
            c.echo = c.accept.clone();
        }
        // Default: registered without the member.
        let mut base = merged(&web_client(), c.default_ctx.as_ref().unwrap_or(&c.ctx));
        base.as_object_mut().unwrap().remove(f);
        let r = app.post(&base).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status != 201 {
            failures.push(format!("{f}: default registration failed: {body}"));
        } else if body.get(f) != c.default.as_ref() {
            failures.push(format!(
                "{f}: default should be {:?}, got {:?}",
                c.default,
                body.get(f)
            ));
        }
        // Accept, and echo (also on read).
        let mut req = merged(&web_client(), &c.ctx);
        req[f] = c.accept.clone();
        let r = app.post(&req).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status != 201 {
            failures.push(format!("{f}: {} should be accepted: {body}", c.accept));
        } else if body[f] != c.echo {
            failures.push(format!("{f}: should echo {}, got {}", c.echo, body[f]));
        } else {
            let read: Value = app
                .get_client(
                    body["registration_client_uri"].as_str().unwrap(),
                    body["registration_access_token"].as_str().unwrap(),
                )
                .await
                .json()
                .await
                .unwrap();
            if read[f] != c.echo {
                failures.push(format!("{f}: read should echo {}, got {}", c.echo, read[f]));
            }
        }
        // Reject, with the row's code and a description naming the field.
        req[f] = c.reject.clone();
        let r = app.post(&req).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        let described = body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains(f));
        if status != 400 || body["error"] != c.code || !described {
            failures.push(format!(
                "{f}: {} should be refused with {} naming the field, got {status} {body}",
                c.reject, c.code
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn privileged_fields_are_refused_by_default_but_their_defaults_and_false_are_fine() {
    let app = spawn_app().await;
    let rows = cases();
    for f in FIELDS.iter().filter(|f| f.privileged) {
        let row = rows.iter().find(|c| c.field == f.name).unwrap();
        let mut req = web_client();
        req[f.name] = row.accept.clone();
        let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
        assert!(
            d.contains(f.name) && d.contains("privileged"),
            "{}: {d}",
            f.name
        );
        if let Some(default) = &row.default {
            let mut req = web_client();
            req[f.name] = default.clone();
            app.register(&req).await;
        }
    }
    let mut req = web_client();
    req["skip_logout_consent"] = json!(false);
    req["skip_consent"] = json!(false);
    app.register(&req).await;
}

#[tokio::test]
async fn the_hydra_extensions_are_accepted_when_configuration_allows_them() {
    let app = spawn_app_with(|s| {
        s.with(
            "metadata.allowed_privileged_fields",
            vec!["metadata", "owner"],
        )
        .unwrap()
    })
    .await;
    let mut req = web_client();
    req["metadata"] = json!({"team": "a"});
    req["owner"] = json!("team-a");
    let body = app.register(&req).await;
    assert_eq!(body["metadata"], json!({"team": "a"}));
    assert_eq!(body["owner"], "team-a");
    req["skip_consent"] = json!(true);
    assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
}

#[tokio::test]
async fn every_uri_field_refuses_dangerous_schemes_fragments_userinfo_and_wildcards() {
    let (app, _sector) = table_app().await;
    let bad = [
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "VBScript:msgbox",
        "FILE:///etc/passwd",
        "blob:https://client.example.org/x",
        "about:blank",
        "https://client.example.org/cb#",
        "https://user:pw@client.example.org/cb",
        "https://*.example.org/cb",
        "https://client.example.org/ cb",
    ];
    let mut checked = 0;
    for f in FIELDS {
        let list = match f.ty {
            Ty::Uri(_) => false,
            Ty::UriList(_) => true,
            _ => continue,
        };
        let mut names = vec![f.name.to_owned()];
        if f.localizable {
            names.push(format!("{}#en", f.name));
        }
        for name in names {
            for raw in bad {
                if f.name == "request_uris" && raw.ends_with('#') {
                    continue; // request_uris may carry a fragment (a hash of the content)
                }
                let mut req = web_client();
                req[f.name] = if list {
                    json!(["https://client.example.org/ok"])
                } else {
                    json!("https://client.example.org/ok")
                };
                req[name.as_str()] = if list { json!([raw]) } else { json!(raw) };
                let r = app.post(&req).await;
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                assert_eq!(status, 400, "{name} = {raw:?} was accepted: {body}");
                let d = body["error_description"].as_str().unwrap();
                assert!(d.contains(&name), "{name}: {d}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} cases");
}

#[tokio::test]
async fn register_rejects_response_parameters_and_dot_segments_in_redirect_uris() {
    let app = spawn_app().await;
    for uri in [
        "https://client.example.org/cb?code=evil&state=x",
        "https://client.example.org/cb?iss=https://evil.example",
        "https://client.example.org/a/../cb",
        "https://client.example.org/a/%2e%2e/cb",
        "https://client.example.org/a/..;/cb",
    ] {
        let d = assert_error(
            app.post(&json!({"redirect_uris": [uri]})).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
        assert!(d.contains("redirect_uris") && d.contains(uri), "{d}");
    }
    app.register(&json!({"redirect_uris": ["https://client.example.org/cb?tenant=a"]}))
        .await;
}

#[tokio::test]
async fn strings_and_arrays_are_capped_and_the_error_names_the_field() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["client_name"] = json!("n".repeat(2048));
    app.register(&req).await;
    req["client_name"] = json!("n".repeat(2049));
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("client_name") && d.contains("2048"), "{d}");
    let mut req = web_client();
    let many: Vec<String> = (0..101)
        .map(|i| format!("c{i}@client.example.org"))
        .collect();
    req["contacts"] = json!(many);
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("contacts") && d.contains("100"), "{d}");
    req["contacts"] = json!(many[..100]);
    app.register(&req).await;
}

#[tokio::test]
async fn extension_fields_are_kept_but_cannot_shadow_a_known_field() {
    let app = spawn_app_with(|s| {
        s.with(
            "metadata.extension_fields",
            vec!["resource", "redirect_uris", "client_secret"],
        )
        .unwrap()
    })
    .await;
    let mut req = web_client();
    req["resource"] = json!({"any": ["json", 1]});
    req["dropped"] = json!("x");
    let body = app.register(&req).await;
    assert_eq!(body["resource"], json!({"any": ["json", 1]}));
    assert!(body.get("dropped").is_none());
    // Listing a known field as an extension does not switch off its checks.
    req["redirect_uris"] = json!(["javascript:alert(1)"]);
    assert_error(app.post(&req).await, 400, "invalid_redirect_uri").await;
    let mut req = web_client();
    req["client_secret"] = json!("chosen");
    let body = app.register(&req).await;
    assert_ne!(body["client_secret"], "chosen");
}

// ---------------------------------------------------------------------------------------------
// Localized fields (RFC 7591 §2.2)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn localized_variants_are_checked_stored_and_echoed() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["client_name#ja-Jpan-JP"] = json!("クライアント名");
    req["client_name#en-US"] = json!("Example (US)");
    req["logo_uri"] = json!("https://client.example.org/logo.png");
    req["logo_uri#fr"] = json!("https://client.example.org/logo-fr.png");
    req["tos_uri"] = json!("https://client.example.org/tos");
    req["tos_uri#de-CH-1996"] = json!("https://client.example.org/agb");
    let body = app.register(&req).await;
    let read: Value = app
        .get_client(
            body["registration_client_uri"].as_str().unwrap(),
            body["registration_access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    for member in [
        "client_name#ja-Jpan-JP",
        "client_name#en-US",
        "logo_uri#fr",
        "tos_uri#de-CH-1996",
    ] {
        assert_eq!(body[member], req[member], "{member}");
        assert_eq!(read[member], req[member], "{member} on read");
    }
    // Stored in table order: each base, then its variants sorted by tag.
    let keys: Vec<&str> = read
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(pos("client_name") < pos("client_name#en-US"));
    assert!(pos("client_name#en-US") < pos("client_name#ja-Jpan-JP"));
    assert!(pos("client_name#ja-Jpan-JP") < pos("logo_uri"));
    assert!(pos("logo_uri") < pos("logo_uri#fr"));
}

#[tokio::test]
async fn a_localized_variant_needs_its_untagged_base() {
    let app = spawn_app().await;
    let mut req = json!({"redirect_uris": ["https://client.example.org/cb"]});
    req["client_name#fr"] = json!("Exemple");
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(
        d.contains("client_name#fr") && d.contains("untagged client_name"),
        "{d}"
    );
}

#[tokio::test]
async fn register_rejects_an_invalid_language_tag() {
    let app = spawn_app().await;
    for tag in ["en_US", "x", "toolonglanguage", "en--US", "", "en-US-US"] {
        let mut req = web_client();
        req[format!("client_name#{tag}")] = json!("Name");
        let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
        assert!(
            d.contains("BCP 47") && d.contains("client_name#"),
            "{tag}: {d}"
        );
    }
}

#[tokio::test]
async fn register_rejects_the_same_language_twice_in_different_case() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["client_name#en-US"] = json!("A");
    req["client_name#EN-us"] = json!("B");
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("twice"), "{d}");
}

#[tokio::test]
async fn localized_uris_follow_the_rules_of_their_base_field() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["logo_uri"] = json!("https://client.example.org/logo.png");
    req["logo_uri#fr"] = json!("javascript:alert(1)");
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("logo_uri#fr"), "{d}");
}

#[tokio::test]
async fn tagged_members_of_non_localizable_fields_are_dropped() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["redirect_uris#en"] = json!(["javascript:alert(1)"]);
    req["software_id#en"] = json!("x");
    let body = app.register(&req).await;
    assert!(body.get("redirect_uris#en").is_none());
    assert!(body.get("software_id#en").is_none());
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules: one test per row of RULES
// ---------------------------------------------------------------------------------------------

const RULE_TESTS: &[&str] = &[
    "grant_and_response_types",
    "redirect_uris_required",
    "redirect_uris_by_application_type",
    "jwks_xor_jwks_uri",
    "encryption_enc_needs_alg",
    "jarm_encryption_needs_signing",
    "tls_client_auth_subject",
    "keys_required",
    "token_endpoint_auth_signing_alg",
    "symmetric_algs_need_secret",
    "id_token_alg_none",
    "one_proof_of_possession",
    "pairwise_sector_identifier",
    "ciba",
];

#[test]
fn every_cross_field_rule_has_a_test_here() {
    let names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
    assert_eq!(names, RULE_TESTS);
}

async fn refused(app: &TestApp, req: Value, code: &str, needles: &[&str]) {
    let d = assert_error(app.post(&req).await, 400, code).await;
    for n in needles {
        assert!(d.contains(n), "description {d:?} should mention {n:?}");
    }
}

#[tokio::test]
async fn rule_grant_and_response_types_derives_and_refuses_inconsistency() {
    let app = spawn_app().await;
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"response_types": ["code id_token token"]}),
        ))
        .await;
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "implicit"])
    );
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"grant_types": ["client_credentials"]}),
        ))
        .await;
    assert_eq!(body["response_types"], json!([]));
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"grant_types": ["authorization_code"], "response_types": ["code token"]}),
        ),
        "invalid_client_metadata",
        &["grant_types", "implicit", "RFC 7591 §2.1"],
    )
    .await;
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"grant_types": ["implicit"], "response_types": ["code"]}),
        ),
        "invalid_client_metadata",
        &["authorization_code"],
    )
    .await;
}

#[tokio::test]
async fn rule_redirect_uris_required_for_redirect_based_response_types() {
    let app = spawn_app().await;
    refused(
        &app,
        json!({"client_name": "x"}),
        "invalid_redirect_uri",
        &["redirect_uris is required"],
    )
    .await;
    refused(
        &app,
        json!({"redirect_uris": []}),
        "invalid_redirect_uri",
        &["redirect_uris"],
    )
    .await;
    // A machine-to-machine client needs none.
    app.register(&json!({"grant_types": ["client_credentials"]}))
        .await;
}

#[tokio::test]
async fn rule_redirect_uris_by_application_type() {
    let app = spawn_app().await;
    let reg = |app_type: &str, uri: &str, rt: &str| json!({"application_type": app_type, "redirect_uris": [uri], "response_types": [rt]});
    // web, code flow: https; http on loopback (localhost, 127.0.0.1, [::1], any port or none);
    // private-use schemes. Implicit: https only, not localhost.
    app.register(&reg("web", "https://client.example.org/cb", "code"))
        .await;
    for uri in [
        "http://127.0.0.1:3000/cb",
        "http://localhost:3000/callback",
        "http://localhost/callback",
        "http://[::1]/cb",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
        "com.example.app:/cb",
    ] {
        app.register(&reg("web", uri, "code")).await;
    }
    refused(
        &app,
        reg("web", "http://client.example.org/cb", "code"),
        "invalid_redirect_uri",
        &["http://client.example.org/cb", "https", "RFC 6749 §3.1.2.1"],
    )
    .await;
    refused(
        &app,
        reg("web", "windsurf:", "code"),
        "invalid_redirect_uri",
        &["windsurf:", "no path", "RFC 8252 §7.1"],
    )
    .await;
    refused(
        &app,
        reg("web", "https://localhost/cb", "id_token"),
        "invalid_redirect_uri",
        &["implicit", "localhost", "OIDC Registration §2"],
    )
    .await;
    for uri in [
        "http://127.0.0.1/cb",
        "http://localhost:3000/cb",
        "com.example.app:/cb",
    ] {
        refused(
            &app,
            reg("web", uri, "id_token"),
            "invalid_redirect_uri",
            &[uri, "implicit grant", "OIDC Registration §2"],
        )
        .await;
    }
    // native: loopback http on any port, claimed https, private-use schemes.
    app.register(&reg("native", "http://127.0.0.1:51004/cb", "code"))
        .await;
    app.register(&reg("native", "http://[::1]:8/cb", "code"))
        .await;
    app.register(&reg("native", "https://client.example.org/app", "code"))
        .await;
    app.register(&reg("native", "com.example.app:/oauth2redirect", "code"))
        .await;
    refused(
        &app,
        reg("native", "http://client.example.org/cb", "code"),
        "invalid_redirect_uri",
        &["loopback"],
    )
    .await;
    // Never the dangerous schemes, in any letter case, for any application type.
    for uri in [
        "JavaScript:alert(1)",
        "DATA:text/html,x",
        "vbscript:x",
        "file:///etc/passwd",
        "blob:https://a/b",
        "about:blank",
    ] {
        refused(
            &app,
            reg("native", uri, "code"),
            "invalid_redirect_uri",
            &["redirect_uris"],
        )
        .await;
    }
    // The same rules hold for post_logout_redirect_uris (with invalid_client_metadata).
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"post_logout_redirect_uris": ["http://client.example.org/bye"]}),
        ),
        "invalid_client_metadata",
        &["post_logout_redirect_uris"],
    )
    .await;
}

#[tokio::test]
async fn mcp_hosts_register_their_redirect_uris_as_web_clients() {
    let app = spawn_app().await;
    // The MCP TypeScript SDK and Claude Code: loopback, no application_type, public client.
    let sdk = app
        .register(&json!({
            "redirect_uris": ["http://localhost:61234/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "MCP Inspector"
        }))
        .await;
    assert_eq!(sdk["application_type"], "web");
    // Cursor: a private-use scheme mixed with https and loopback in one request.
    let uris = json!([
        "cursor://anysphere.cursor-retrieval/oauth/user-server/callback",
        "https://cursor.example/oauth/callback",
        "http://127.0.0.1:33418/callback"
    ]);
    let cursor = app
        .register(&json!({
            "redirect_uris": uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Cursor"
        }))
        .await;
    assert_eq!(cursor["redirect_uris"], uris);
    // The dangerous schemes stay refused for web clients too.
    for uri in [
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
    ] {
        refused(
            &app,
            json!({"redirect_uris": ["https://cursor.example/cb", uri]}),
            "invalid_redirect_uri",
            &["forbidden scheme"],
        )
        .await;
    }
}

#[tokio::test]
async fn operators_can_keep_web_clients_to_https() {
    let app = spawn_app_with(|s| {
        s.with("metadata.allow_http_loopback_redirects_for_web", false)
            .unwrap()
            .with("metadata.allow_private_use_schemes_for_web", false)
            .unwrap()
    })
    .await;
    let reg = |uri: &str| json!({"redirect_uris": [uri]});
    refused(
        &app,
        reg("http://localhost:3000/callback"),
        "invalid_redirect_uri",
        &["metadata.allow_http_loopback_redirects_for_web"],
    )
    .await;
    refused(
        &app,
        reg("cursor://anysphere.cursor-retrieval/oauth/callback"),
        "invalid_redirect_uri",
        &["metadata.allow_private_use_schemes_for_web", "native"],
    )
    .await;
    // Native clients keep both.
    app.register(&json!({"application_type": "native", "redirect_uris": ["http://localhost:3000/cb", "com.example.app:/cb"]}))
        .await;
}

#[tokio::test]
async fn rule_jwks_xor_jwks_uri() {
    let app = spawn_app().await;
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"jwks": ec_jwks(), "jwks_uri": "https://client.example.org/jwks"}),
        ),
        "invalid_client_metadata",
        &["jwks and jwks_uri"],
    )
    .await;
}

#[tokio::test]
async fn rule_encryption_enc_needs_alg_and_defaults_enc() {
    let app = spawn_app().await;
    for (alg, enc) in [
        (
            "id_token_encrypted_response_alg",
            "id_token_encrypted_response_enc",
        ),
        (
            "userinfo_encrypted_response_alg",
            "userinfo_encrypted_response_enc",
        ),
        (
            "request_object_encryption_alg",
            "request_object_encryption_enc",
        ),
        (
            "authorization_encrypted_response_alg",
            "authorization_encrypted_response_enc",
        ),
        (
            "introspection_encrypted_response_alg",
            "introspection_encrypted_response_enc",
        ),
    ] {
        let mut req = web_client();
        req[enc] = json!("A256GCM");
        refused(
            &app,
            req,
            "invalid_client_metadata",
            &[enc, &format!("requires {alg}")],
        )
        .await;
        let mut req = merged(
            &web_client(),
            &json!({"jwks_uri": "https://client.example.org/jwks"}),
        );
        req[alg] = json!("RSA-OAEP");
        let body = app.register(&req).await;
        assert_eq!(body[enc], "A128CBC-HS256", "{enc}");
    }
}

#[tokio::test]
async fn rule_jarm_encryption_needs_signing_is_met_by_the_default_signed_alg() {
    // The refusal itself is unit-tested (`rules::tests`); through the API the signed alg always
    // has its JARM §3 default, so an encrypted-only request gets RS256 signing added.
    let app = spawn_app().await;
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"jwks_uri": "https://client.example.org/jwks", "authorization_encrypted_response_alg": "RSA-OAEP", "authorization_signed_response_alg": null}),
        ))
        .await;
    assert_eq!(body["authorization_signed_response_alg"], "RS256");
    assert_eq!(body["authorization_encrypted_response_alg"], "RSA-OAEP");
}

#[tokio::test]
async fn rule_tls_client_auth_needs_exactly_one_subject_and_other_methods_drop_them() {
    let app = spawn_app().await;
    let tls = merged(
        &web_client(),
        &json!({"token_endpoint_auth_method": "tls_client_auth"}),
    );
    refused(
        &app,
        tls.clone(),
        "invalid_client_metadata",
        &["tls_client_auth", "exactly one"],
    )
    .await;
    refused(
        &app,
        merged(
            &tls,
            &json!({"tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": "a.example"}),
        ),
        "invalid_client_metadata",
        &["tls_client_auth_subject_dn, tls_client_auth_san_dns"],
    )
    .await;
    let body = app
        .register(&merged(
            &tls,
            &json!({"tls_client_auth_san_dns": "a.example"}),
        ))
        .await;
    assert_eq!(body["tls_client_auth_san_dns"], "a.example");
    assert!(
        body.get("client_secret").is_none(),
        "mTLS clients get no secret"
    );
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"tls_client_auth_san_dns": "a.example"}),
        ))
        .await;
    assert!(
        body.get("tls_client_auth_san_dns").is_none(),
        "dropped for client_secret_basic"
    );
}

#[tokio::test]
async fn rule_keys_required_for_key_based_methods_and_algorithms() {
    let app = spawn_app().await;
    for extra in [
        json!({"token_endpoint_auth_method": "private_key_jwt"}),
        json!({"token_endpoint_auth_method": "self_signed_tls_client_auth"}),
        json!({"request_object_signing_alg": "PS256"}),
        json!({"backchannel_authentication_request_signing_alg": "ES256"}),
        json!({"id_token_encrypted_response_alg": "RSA-OAEP"}),
        json!({"userinfo_encrypted_response_alg": "ECDH-ES"}),
        json!({"authorization_encrypted_response_alg": "RSA-OAEP-256"}),
        json!({"introspection_encrypted_response_alg": "ECDH-ES+A128KW"}),
    ] {
        let field = extra.as_object().unwrap().keys().next().unwrap().clone();
        refused(
            &app,
            merged(&web_client(), &extra),
            "invalid_client_metadata",
            &["jwks or jwks_uri is required", &field],
        )
        .await;
        app.register(&merged(
            &merged(&web_client(), &extra),
            &json!({"jwks": ec_jwks()}),
        ))
        .await;
    }
}

#[tokio::test]
async fn rule_token_endpoint_auth_signing_alg_matches_the_method() {
    let app = spawn_app().await;
    let pkj = merged(
        &web_client(),
        &json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": ec_jwks()}),
    );
    let body = app
        .register(&merged(
            &pkj,
            &json!({"token_endpoint_auth_signing_alg": "ES256"}),
        ))
        .await;
    assert_eq!(body["token_endpoint_auth_signing_alg"], "ES256");
    assert!(body.get("client_secret").is_none());
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"token_endpoint_auth_signing_alg": "RS256"}),
        ),
        "invalid_client_metadata",
        &["token_endpoint_auth_signing_alg", "client_secret_basic"],
    )
    .await;
    // HS* only with client_secret_jwt, which needs the recoverable-secret mode.
    let app = spawn_app_with(recoverable).await;
    refused(
        &app,
        merged(&pkj, &json!({"token_endpoint_auth_signing_alg": "HS256"})),
        "invalid_client_metadata",
        &["token_endpoint_auth_signing_alg", "private_key_jwt"],
    )
    .await;
    refused(
        &app,
        merged(&web_client(), &json!({"token_endpoint_auth_method": "client_secret_jwt", "token_endpoint_auth_signing_alg": "ES256"})),
        "invalid_client_metadata",
        &["HMAC", "client_secret_jwt"],
    )
    .await;
    app.register(&merged(&web_client(), &json!({"token_endpoint_auth_method": "client_secret_jwt", "token_endpoint_auth_signing_alg": "HS256"}))).await;
}

#[tokio::test]
async fn rule_symmetric_algs_need_a_secret() {
    let app = spawn_app_with(recoverable).await;
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"token_endpoint_auth_method": "none", "id_token_signed_response_alg": "HS256"}),
        ),
        "invalid_client_metadata",
        &["id_token_signed_response_alg", "\"none\""],
    )
    .await;
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"id_token_signed_response_alg": "HS256"}),
        ))
        .await;
    assert_eq!(body["client_secret"].as_str().unwrap().len(), 43);
}

#[tokio::test]
async fn rule_id_token_alg_none_only_without_an_id_token_from_the_authorization_endpoint() {
    let app = spawn_app().await;
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"id_token_signed_response_alg": "none"}),
        ))
        .await;
    assert_eq!(body["id_token_signed_response_alg"], "none");
    refused(
        &app,
        merged(
            &web_client(),
            &json!({"id_token_signed_response_alg": "none", "response_types": ["code id_token"]}),
        ),
        "invalid_client_metadata",
        &["id_token_signed_response_alg", "\"code id_token\""],
    )
    .await;
}

#[tokio::test]
async fn rule_one_proof_of_possession_and_never_with_response_type_token() {
    let app = spawn_app().await;
    refused(
        &app,
        merged(&web_client(), &json!({"tls_client_certificate_bound_access_tokens": true, "dpop_bound_access_tokens": true})),
        "invalid_client_metadata",
        &["tls_client_certificate_bound_access_tokens", "dpop_bound_access_tokens"],
    )
    .await;
    for flag in [
        "tls_client_certificate_bound_access_tokens",
        "dpop_bound_access_tokens",
    ] {
        let mut req = merged(&web_client(), &json!({"response_types": ["code", "token"]}));
        req[flag] = json!(true);
        refused(&app, req, "invalid_client_metadata", &[flag, "\"token\""]).await;
        let mut req = web_client();
        req[flag] = json!(true);
        assert_eq!(app.register(&req).await[flag], true);
    }
}

#[tokio::test]
async fn rule_pairwise_sector_identifier_required_across_hosts() {
    let app = spawn_app().await;
    let two_hosts = json!({"subject_type": "pairwise", "redirect_uris": ["https://a.example.org/cb", "https://b.example.org/cb"]});
    refused(
        &app,
        two_hosts.clone(),
        "invalid_client_metadata",
        &[
            "sector_identifier_uri is required",
            "a.example.org, b.example.org",
        ],
    )
    .await;
    let mut public = two_hosts.clone();
    public["subject_type"] = json!("public");
    app.register(&public).await;
    let device = json!({"subject_type": "pairwise", "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"], "token_endpoint_auth_method": "none"});
    refused(
        &app,
        device.clone(),
        "invalid_client_metadata",
        &["sector_identifier_uri or jwks_uri is required"],
    )
    .await;
    app.register(&merged(
        &device,
        &json!({"jwks_uri": "https://a.example.org/jwks"}),
    ))
    .await;
    app.register(&json!({"subject_type": "pairwise", "redirect_uris": ["https://a.example.org/1", "https://a.example.org/2"]}))
        .await;
}

#[tokio::test]
async fn rule_ciba_needs_a_delivery_mode_and_a_notification_endpoint_for_ping_and_push() {
    let app = spawn_app().await;
    let ciba = json!({"grant_types": ["urn:openid:params:grant-type:ciba"], "jwks": ec_jwks(), "token_endpoint_auth_method": "private_key_jwt"});
    refused(
        &app,
        ciba.clone(),
        "invalid_client_metadata",
        &["backchannel_token_delivery_mode is required"],
    )
    .await;
    app.register(&merged(
        &ciba,
        &json!({"backchannel_token_delivery_mode": "poll"}),
    ))
    .await;
    for mode in ["ping", "push"] {
        refused(
            &app,
            merged(&ciba, &json!({"backchannel_token_delivery_mode": mode})),
            "invalid_client_metadata",
            &["backchannel_client_notification_endpoint is required", mode],
        )
        .await;
        app.register(&merged(
            &ciba,
            &json!({"backchannel_token_delivery_mode": mode, "backchannel_client_notification_endpoint": "https://client.example.org/ciba"}),
        ))
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// client_secret_jwt and secret-keyed algorithms
// ---------------------------------------------------------------------------------------------

const DERIVATION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// The recoverable-secret mode: a derivation key, then the values that need it in the lists
/// (in that order: the lists are refused without the key).
fn recoverable(s: Settings) -> Settings {
    s.with("credentials.client_secret_derivation_key", DERIVATION_KEY)
        .unwrap()
        .with(
            "metadata.token_endpoint_auth_methods_supported",
            vec![
                "client_secret_basic",
                "client_secret_post",
                "client_secret_jwt",
                "private_key_jwt",
                "none",
            ],
        )
        .unwrap()
        .with(
            "metadata.token_endpoint_auth_signing_alg_values_supported",
            vec!["HS256", "RS256", "ES256"],
        )
        .unwrap()
        .with(
            "metadata.id_token_signing_alg_values_supported",
            vec!["RS256", "HS256"],
        )
        .unwrap()
}

async fn discovery(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/.well-known/openid-configuration", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn client_secret_jwt_is_refused_clearly_and_not_advertised_by_default() {
    let app = spawn_app().await;
    let d = assert_error(
        app.post(&merged(
            &web_client(),
            &json!({"token_endpoint_auth_method": "client_secret_jwt"}),
        ))
        .await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(
        d.contains("token_endpoint_auth_method") && d.contains("argon2id"),
        "{d}"
    );
    let d = assert_error(
        app.post(&merged(
            &web_client(),
            &json!({"id_token_signed_response_alg": "HS256"}),
        ))
        .await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(
        d.contains("id_token_signed_response_alg") && d.contains("plaintext client_secret"),
        "{d}"
    );
    let doc = discovery(&app).await;
    let methods = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(!methods.contains(&json!("client_secret_jwt")));
    assert!(methods.contains(&json!("client_secret_basic")));
    for list in [
        "id_token_signing_alg_values_supported",
        "token_endpoint_auth_signing_alg_values_supported",
    ] {
        assert!(
            !doc[list]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str().unwrap().starts_with("HS")),
            "{list}"
        );
    }
}

#[test]
fn offering_client_secret_jwt_without_a_derivation_key_is_a_configuration_error() {
    let err = Settings::defaults()
        .unwrap()
        .with(
            "metadata.token_endpoint_auth_methods_supported",
            vec!["client_secret_basic", "client_secret_jwt"],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("client_secret_derivation_key"),
        "{err}"
    );
    let err = Settings::defaults()
        .unwrap()
        .with(
            "metadata.userinfo_encryption_alg_values_supported",
            vec!["A128KW"],
        )
        .unwrap_err();
    assert!(err.to_string().contains("A128KW"), "{err}");
    // Other lists may hold values that merely look like algorithms.
    Settings::defaults()
        .unwrap()
        .with(
            "metadata.scopes_supported",
            vec!["openid", "HSBC.accounts", "A1KW"],
        )
        .unwrap();
    assert!(recoverable(Settings::defaults().unwrap())
        .metadata
        .token_endpoint_auth_methods_supported
        .contains(&"client_secret_jwt".to_owned()));
}

#[tokio::test]
async fn with_recoverable_secrets_client_secret_jwt_is_advertised_registered_and_verifiable() {
    let app = spawn_app_with(recoverable).await;
    let doc = discovery(&app).await;
    assert!(doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("client_secret_jwt")));
    let body = app
        .register(&merged(
            &web_client(),
            &json!({"token_endpoint_auth_method": "client_secret_jwt"}),
        ))
        .await;
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    assert_eq!(body["client_secret_expires_at"], 0);
    let uri = body["registration_client_uri"].as_str().unwrap();
    let rat = body["registration_access_token"].as_str().unwrap();
    // RFC 7592 §2.2: a PUT may carry the current secret; a wrong one is refused.
    let mut put = body.clone();
    put["client_secret"] = json!("not-the-secret");
    assert_error(app.put_client(uri, rat, &put).await, 400, "invalid_request").await;
    put["client_secret"] = json!(secret);
    let r = app.put_client(uri, rat, &put).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert!(
        updated.get("client_secret").is_none(),
        "the secret is kept, not reissued"
    );
}

#[tokio::test]
async fn switching_a_hashed_secret_client_to_client_secret_jwt_issues_a_new_recoverable_secret() {
    let app = spawn_app_with(recoverable).await;
    let body = app.register(&web_client()).await;
    let old = body["client_secret"].as_str().unwrap().to_owned();
    let uri = body["registration_client_uri"].as_str().unwrap();
    let rat = body["registration_access_token"].as_str().unwrap();
    let mut put = body.clone();
    put.as_object_mut().unwrap().remove("client_secret");
    put["token_endpoint_auth_method"] = json!("client_secret_jwt");
    let r = app.put_client(uri, rat, &put).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    let new = updated["client_secret"]
        .as_str()
        .expect("a new secret")
        .to_owned();
    assert_ne!(new, old);
    // The new secret is now the one a PUT must carry.
    let rat = updated["registration_access_token"].as_str().unwrap();
    let mut again = updated.clone();
    again["client_secret"] = json!(old);
    assert_error(
        app.put_client(uri, rat, &again).await,
        400,
        "invalid_request",
    )
    .await;
    again["client_secret"] = json!(new);
    assert_eq!(app.put_client(uri, rat, &again).await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// The three client libraries' models round-trip field for field
// ---------------------------------------------------------------------------------------------

/// POST → GET → PUT of the GET body → GET: every field sent comes back unchanged, and the two
/// reads agree on every member (the registration access token aside, which rotates on PUT).
async fn round_trip(app: &TestApp, model: Value) {
    let created = app.register(&model).await;
    let uri = created["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let rat = created["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get_client(&uri, &rat).await;
    assert_eq!(r.status(), 200);
    let read: Map<String, Value> = r.json().await.unwrap();
    for (k, v) in model.as_object().unwrap() {
        if matches!(k.as_str(), "client_id" | "client_secret") {
            continue; // server-assigned (RFC 7591 §3.2.1)
        }
        assert_eq!(read.get(k), Some(v), "{k} did not round-trip");
        assert_eq!(created.get(k), Some(v), "{k} not echoed on create");
    }
    let r = app
        .put_client(&uri, &rat, &Value::Object(read.clone()))
        .await;
    let status = r.status();
    let put: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "PUT of the GET body failed: {put}");
    let rat = put["registration_access_token"].as_str().unwrap();
    let again: Map<String, Value> = app.get_client(&uri, rat).await.json().await.unwrap();
    let strip = |m: &Map<String, Value>| {
        let mut m = m.clone();
        m.remove("registration_access_token");
        m
    };
    assert_eq!(strip(&again), strip(&read));
}

#[tokio::test]
async fn an_oauth4webapi_client_round_trips_field_for_field() {
    // oauth4webapi `Client`: the members it reads, plus the redirect URIs any code client needs.
    let app = spawn_app().await;
    round_trip(
        &app,
        json!({
            "client_id": "ignored-client-chosen-id",
            "redirect_uris": ["https://client.example.org/cb"],
            "token_endpoint_auth_method": "client_secret_post",
            "id_token_signed_response_alg": "ES256",
            "authorization_signed_response_alg": "PS256",
            "require_auth_time": true,
            "userinfo_signed_response_alg": "RS256",
            "introspection_signed_response_alg": "EdDSA",
            "default_max_age": 300,
            "use_mtls_endpoint_aliases": true,
        }),
    )
    .await;
}

#[tokio::test]
async fn an_openid_client_v6_client_round_trips_field_for_field() {
    // openid-client v6 `ClientMetadata` = oauth4webapi `Client` + `client_secret` +
    // `use_mtls_endpoint_aliases` (+ what it passes through: here a full OIDC code client).
    let app = spawn_app().await;
    round_trip(
        &app,
        json!({
            "client_secret": "client-chosen-secret-is-ignored",
            "redirect_uris": ["https://rp.example.org/cb"],
            "response_types": ["code"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "id_token_signed_response_alg": "RS256",
            "authorization_signed_response_alg": "RS256",
            "require_auth_time": false,
            "userinfo_signed_response_alg": "ES256",
            "introspection_signed_response_alg": "RS256",
            "default_max_age": 0,
            "use_mtls_endpoint_aliases": false,
            "client_name": "RP",
            "client_name#de": "RP (de)",
            "scope": "openid profile",
            "post_logout_redirect_uris": ["https://rp.example.org/bye"],
        }),
    )
    .await;
}

#[tokio::test]
async fn an_ory_hydra_oauth2_client_round_trips_field_for_field() {
    // Ory Hydra SDK `OAuth2Client`, every member it defines except the read-only ones
    // (client_id, client_secret, client_secret_expires_at, registration_*; created_at and
    // updated_at are Hydra's own and dropped as unknown). The privileged ones are allowed here.
    let sector = sector_server().await;
    let app = sector
        .app_with(true, |s| {
            let privileged: Vec<&str> = FIELDS
                .iter()
                .filter(|f| f.privileged)
                .map(|f| f.name)
                .collect();
            s.with("metadata.allowed_privileged_fields", privileged)
                .unwrap()
                .with("fetch.fetch_jwks_uri", false)
                .unwrap()
        })
        .await;
    let mut model = json!({
        "access_token_strategy": "opaque",
        "allowed_cors_origins": ["https://app.example.org"],
        "audience": ["https://api.example.org"],
        "backchannel_logout_session_required": true,
        "backchannel_logout_uri": "https://app.example.org/bc",
        "client_name": "Hydra client",
        "client_uri": "https://app.example.org/",
        "contacts": ["admin@app.example.org"],
        "frontchannel_logout_session_required": true,
        "frontchannel_logout_uri": "https://app.example.org/fc",
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "jwks": ec_jwks(),
        "logo_uri": "https://app.example.org/logo.png",
        "metadata": {"tier": "gold", "nested": {"a": [1, 2]}},
        "owner": "team-a",
        "policy_uri": "https://app.example.org/policy",
        "post_logout_redirect_uris": ["https://app.example.org/bye"],
        "redirect_uris": ["https://app.example.org/cb"],
        "request_object_signing_alg": "ES256",
        "request_uris": ["https://app.example.org/request.jwt"],
        "response_types": ["code"],
        "scope": "openid offline_access",
        "sector_identifier_uri": sector.url("/sector.json"),
        "skip_consent": true,
        "skip_logout_consent": true,
        "subject_type": "pairwise",
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "tos_uri": "https://app.example.org/tos",
        "userinfo_signed_response_alg": "ES256",
    });
    for (i, lifespan) in LIFESPANS.iter().enumerate() {
        model[*lifespan] = json!(format!("{}h{}m", i + 1, i * 5));
    }
    round_trip(&app, model).await;
}
