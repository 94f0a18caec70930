//! RFC 8414 / OpenID Connect Discovery documents.

use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn both_discovery_documents_publish_the_registration_endpoint_and_enforced_lists() {
    let app = spawn_app_with(|s| {
        s.with(
            "discovery.authorization_endpoint",
            "https://as.example/authorize",
        )
        .unwrap()
        .with(
            "metadata.token_endpoint_auth_methods_supported",
            vec!["private_key_jwt", "none"],
        )
        .unwrap()
    })
    .await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["issuer"], app.address);
        assert_eq!(doc["registration_endpoint"], app.endpoint);
        assert_eq!(
            doc["authorization_endpoint"],
            "https://as.example/authorize"
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt", "none"])
        );
        assert!(doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("authorization_code")));
        assert!(
            doc.get("scopes_supported").is_none(),
            "empty lists are left out"
        );
    }
    // and the same list is what validation enforces
    let mut req = web_client();
    req["token_endpoint_auth_method"] = json!("client_secret_basic");
    assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
}

#[tokio::test]
async fn operator_additions_cannot_override_enforced_members() {
    let app = spawn_app_with(|s| {
        s.with(
            "discovery.registration_endpoint",
            "https://elsewhere.example/reg",
        )
        .unwrap()
    })
    .await;
    let doc: Value = app
        .client
        .get(format!("{}/.well-known/openid-configuration", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["registration_endpoint"], app.endpoint);
}

#[tokio::test]
async fn head_is_served_where_allow_says_so() {
    let app = spawn_app().await;
    for path in ["/.well-known/openid-configuration", "/healthz"] {
        let r = app
            .client
            .head(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "{path}: HEAD has no body"
        );
    }
}
