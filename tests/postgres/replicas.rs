//! Interchangeable replicas: two registrars on one database.

use crate::helpers::*;
use crate::{pg, pg_settings};
use registrar::settings::Settings;
use registrar::store::{ClientStore, PostgresStore};
use serde_json::{json, Value};

/// Two apps (own data directories, so nothing is shared but the database) on one new database,
/// started one after the other (the first migrates).
async fn two_replicas(tweak: impl Fn(Settings) -> Settings) -> (TestApp, TestApp, String) {
    let url = pg::shared().new_database();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
        apps.push(spawn_in(dir, &tweak).await);
    }
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    (a, b, url)
}

fn uri_on(app: &TestApp, c: &Value) -> String {
    format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap())
}

fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_registered_on_one_replica_is_read_updated_and_deleted_on_the_other() {
    let (a, b, _) = two_replicas(|s| s).await;
    let c = a.register(&web_client()).await;

    let r = b.get_client(&uri_on(&b, &c), &rat(&c)).await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], "Example");

    let mut update = web_client();
    update["client_id"] = c["client_id"].clone();
    update["client_name"] = "renamed on B".into();
    let r = b.put_client(&uri_on(&b, &c), &rat(&c), &update).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_ne!(rat(&updated), rat(&c), "the update rotated the token");

    // The rotation on B is visible on A at once: old token dead, new one works.
    assert_eq!(a.get_client(&uri_on(&a, &c), &rat(&c)).await.status(), 401);
    let r = a.get_client(&uri_on(&a, &c), &rat(&updated)).await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], "renamed on B");

    assert_eq!(
        a.delete_client(&uri_on(&a, &c), &rat(&updated))
            .await
            .status(),
        204
    );
    assert_eq!(
        b.get_client(&uri_on(&b, &c), &rat(&updated)).await.status(),
        401
    );
}

#[tokio::test]
async fn concurrent_updates_on_both_replicas_are_each_applied_exactly_once() {
    // Tokens stay the same across updates, so every PUT must succeed; each acknowledged one is
    // a compare-and-swap from the revision it read, so the revision counts them all.
    let (a, b, url) =
        two_replicas(|s| s.with("registration.rotate_rat_on_update", false).unwrap()).await;
    let c = a.register(&web_client()).await;
    let n = 16;
    let puts = (0..n).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = json!({
            "client_id": c["client_id"],
            "redirect_uris": [format!("https://client.example.org/v{i}")],
            "client_name": format!("v{i}"),
        });
        let (uri, token) = (uri_on(app, &c), rat(&c));
        async move { app.put_client(&uri, &token, &body).await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(puts).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let store = PostgresStore::connect(&pg_settings(&url)).await.unwrap();
    let record = store
        .get(c["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.revision,
        1 + n as u64,
        "an update was lost or doubled"
    );
    // The stored state is whole: name and redirect URI from the same request.
    let name = record.metadata["client_name"].as_str().unwrap();
    assert_eq!(
        record.metadata["redirect_uris"][0],
        format!("https://client.example.org/{name}")
    );
}

#[tokio::test]
async fn racing_updates_with_rotation_have_one_winner_across_replicas() {
    let (a, b, _) = two_replicas(|s| s).await;
    let c = a.register(&web_client()).await;
    let put = |app: &TestApp, name: &str| {
        let mut body = web_client();
        body["client_id"] = c["client_id"].clone();
        body["client_name"] = name.into();
        let (uri, token) = (uri_on(app, &c), rat(&c));
        let client = app.client.clone();
        async move {
            client
                .put(uri)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let (ra, rb) = tokio::join!(put(&a, "from A"), put(&b, "from B"));
    let mut winners = Vec::new();
    for r in [ra, rb] {
        match r.status().as_u16() {
            200 => winners.push(r.json::<Value>().await.unwrap()),
            401 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update wins");
    let winner = &winners[0];
    let r = b.get_client(&uri_on(&b, &c), &rat(winner)).await;
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], winner["client_name"]);
}

#[tokio::test]
async fn an_initial_access_token_s_max_uses_holds_across_replicas() {
    const TOKEN: &str = "static-initial-access-token-replicas-0123";
    let (a, b, _) = two_replicas(|s| {
        s.with("access.mode", "token")
            .unwrap()
            .with(
                "access.static_tokens",
                json!([{"token": TOKEN, "max_uses": 3}]),
            )
            .unwrap()
    })
    .await;
    let posts = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            app.client
                .post(&app.endpoint)
                .bearer_auth(TOKEN)
                .json(&web_client())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(posts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_replica_configured_with_another_server_key_refuses_to_start() {
    let key = |b: u8| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 32])
    };
    let url = pg::shared().new_database();
    let dir = tempfile::tempdir().unwrap();
    let settings = |k: &str| {
        with_postgres(test_settings(dir.path()), &url)
            .with("credentials.server_key", k)
            .unwrap()
    };
    let first = registrar::startup::Application::build(settings(&key(1)))
        .await
        .expect("the first replica stores its key");
    let same = registrar::startup::Application::build(settings(&key(1)))
        .await
        .expect("the same key starts");
    let err = registrar::startup::Application::build(settings(&key(2)))
        .await
        .err()
        .expect("another key must not start")
        .to_string();
    assert!(err.contains("same key"), "{err}");
    // A replica with no configured key takes the stored one.
    let store = PostgresStore::connect(&pg_settings(&url)).await.unwrap();
    assert_eq!(store.server_key(vec![9; 32]).await.unwrap(), vec![1; 32]);
    drop((first, same));
}
