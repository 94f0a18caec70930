//! Concurrent writers: no duplicate client_ids, no lost updates, one winner per token.

use crate::helpers::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashSet;

fn uri(c: &Value) -> String {
    c["registration_client_uri"].as_str().unwrap().to_owned()
}
fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_registrations_get_distinct_ids_and_all_read_back() {
    let app = spawn_app().await;
    let requests = (0..200).map(|i| {
        let mut body = web_client();
        body["client_name"] = json!(format!("client-{i}"));
        let app = &app;
        async move { (i, app.post(&body).await) }
    });
    let mut created = Vec::new();
    for (i, r) in join_all(requests).await {
        assert_eq!(r.status(), 201, "registration {i}");
        created.push((i, r.json::<Value>().await.unwrap()));
    }
    let ids: HashSet<_> = created
        .iter()
        .map(|(_, c)| c["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 200, "duplicate client_ids");
    let tokens: HashSet<_> = created.iter().map(|(_, c)| rat(c)).collect();
    assert_eq!(tokens.len(), 200, "duplicate registration access tokens");
    let app = &app;
    let reads = created.iter().map(|(i, c)| async move {
        let r = app.get_client(&uri(c), &rat(c)).await;
        assert_eq!(r.status(), 200);
        let read: Value = r.json().await.unwrap();
        assert_eq!(read["client_name"], json!(format!("client-{i}")));
        assert_eq!(read["client_id"], c["client_id"]);
    });
    join_all(reads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_one_token_have_exactly_one_winner_and_nothing_is_lost() {
    let app = spawn_app().await;
    let created = app.register(&web_client()).await;
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let mut token = rat(&created);
    let mut dead_tokens = Vec::new();
    for round in 0..5 {
        let puts = (0..8).map(|i| {
            let body = json!({
                "client_id": client_id,
                "redirect_uris": ["https://client.example.org/cb"],
                "client_name": format!("round-{round}-writer-{i}"),
            });
            let (app, uri, token) = (&app, uri(&created), token.clone());
            async move { (i, app.put_client(&uri, &token, &body).await) }
        });
        let mut winners = Vec::new();
        for (i, r) in join_all(puts).await {
            match r.status().as_u16() {
                200 => winners.push((i, r.json::<Value>().await.unwrap())),
                401 => {
                    assert_error(r, 401, "invalid_token").await;
                }
                other => panic!("writer {i}: unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one token, one winner");
        let (i, winner) = winners.pop().unwrap();
        // The winner's update is the stored state, under the winner's new token.
        let read: Value = app
            .get_client(&uri(&created), &rat(&winner))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            read["client_name"],
            json!(format!("round-{round}-writer-{i}"))
        );
        dead_tokens.push(std::mem::replace(&mut token, rat(&winner)));
        // Every token a PUT rotated away stays dead.
        for dead in &dead_tokens {
            assert_error(
                app.get_client(&uri(&created), dead).await,
                401,
                "invalid_token",
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rotation_concurrent_updates_all_apply_and_the_last_one_stays() {
    let app = spawn_app_with(|s| s.with("registration.rotate_rat_on_update", false).unwrap()).await;
    let created = app.register(&web_client()).await;
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    // Eight writers: each can lose a compare-and-swap at most once per other writer, inside the
    // service's retry budget.
    let puts = (0..8).map(|i| {
        let body = json!({
            "client_id": client_id,
            "redirect_uris": ["https://client.example.org/cb"],
            "client_name": format!("writer-{i}"),
        });
        let (app, uri, token) = (&app, uri(&created), rat(&created));
        async move { app.put_client(&uri, &token, &body).await }
    });
    let mut names = HashSet::new();
    for r in join_all(puts).await {
        assert_eq!(r.status(), 200, "compare-and-swap retries absorb the races");
        let body: Value = r.json().await.unwrap();
        names.insert(body["client_name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names.len(), 8);
    let read: Value = app
        .get_client(&uri(&created), &rat(&created))
        .await
        .json()
        .await
        .unwrap();
    assert!(names.contains(read["client_name"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_update_leaves_exactly_one_outcome() {
    let app = spawn_app().await;
    let (mut deleted, mut updated) = (0, 0);
    for _ in 0..15 {
        let created = app.register(&web_client()).await;
        let mut body = created.clone();
        body["client_name"] = json!("updated");
        let (u_ri, token) = (uri(&created), rat(&created));
        let (d, u) = tokio::join!(
            app.delete_client(&u_ri, &token),
            app.put_client(&u_ri, &token, &body)
        );
        match (d.status().as_u16(), u.status().as_u16()) {
            (204, 401) => {
                deleted += 1;
                assert_error(u, 401, "invalid_token").await;
                assert_eq!(
                    app.get_client(&uri(&created), &rat(&created))
                        .await
                        .status(),
                    401
                );
            }
            (401, 200) => {
                updated += 1;
                assert_error(d, 401, "invalid_token").await;
                let new: Value = u.json().await.unwrap();
                let read: Value = app
                    .get_client(&uri(&created), &rat(&new))
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(read["client_name"], "updated");
                assert_eq!(
                    app.get_client(&uri(&created), &rat(&created))
                        .await
                        .status(),
                    401
                );
            }
            other => panic!("delete/update race ended {other:?}"),
        }
    }
    eprintln!("delete won {deleted}, update won {updated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_during_updates_never_see_a_torn_record() {
    let app = spawn_app_with(|s| s.with("registration.rotate_rat_on_update", false).unwrap()).await;
    let created = app.register(&web_client()).await;
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    // Each update keeps client_name and the redirect URI's path equal; a torn record would not.
    let writes = (0..20).map(|i| {
        let body = json!({
            "client_id": client_id,
            "redirect_uris": [format!("https://client.example.org/v{i}")],
            "client_name": format!("v{i}"),
        });
        let (app, uri, token) = (&app, uri(&created), rat(&created));
        async move {
            assert_eq!(app.put_client(&uri, &token, &body).await.status(), 200);
        }
    });
    let reads = (0..40).map(|_| {
        let (app, uri, token) = (&app, uri(&created), rat(&created));
        async move {
            let read: Value = app.get_client(&uri, &token).await.json().await.unwrap();
            let name = read["client_name"].as_str().unwrap().to_owned();
            let redirect = read["redirect_uris"][0].as_str().unwrap().to_owned();
            if name != "Example" {
                assert_eq!(redirect, format!("https://client.example.org/{name}"));
            }
        }
    });
    tokio::join!(join_all(writes), join_all(reads));
}
