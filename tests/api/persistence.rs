//! Durability across restarts, and the single-instance lock.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn a_client_survives_a_restart_and_its_token_still_works() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let dir = app.stop().await;
    let app = spawn_in(dir, |s| s).await;
    let uri = format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap());
    let r = app
        .get_client(&uri, c["registration_access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], "Example");
}

/// The embedded store codes common members (schema defaults, the usual grant types) instead
/// of storing their text (record format 2); read back after a restart, the response is what the
/// registration returned, members in the same order, and the stored record is well under the
/// JSON form's size.
#[tokio::test]
async fn a_read_after_a_restart_is_the_registration_response_member_for_member_in_order() {
    let app = spawn_app().await;
    let mut body = web_client();
    body["grant_types"] = serde_json::json!(["authorization_code", "refresh_token"]);
    body["token_endpoint_auth_method"] = "none".into();
    body["contacts"] = serde_json::json!(["ops@client.example.org"]);
    body["require_auth_time"] = true.into();
    body["application_type"] = "native".into();
    body["redirect_uris"] = serde_json::json!(["http://127.0.0.1/cb"]);
    let plain = app.register(&web_client()).await;
    let varied = app.register(&body).await;
    let dir = app.stop().await;
    {
        let db = sled::open(dir.path()).unwrap();
        let clients = db.open_tree("clients").unwrap();
        let id = plain["client_id"].as_str().unwrap();
        let bytes = clients.get(id).unwrap().unwrap();
        let record = registrar::store::ClientRecord::decode(&bytes).unwrap();
        let json = serde_json::to_vec(&record).unwrap();
        assert!(
            bytes.len() * 3 < json.len() * 2,
            "stored {} bytes, JSON form {}",
            bytes.len(),
            json.len()
        );
    }
    let app = spawn_in(dir, |s| s).await;
    for created in [plain, varied] {
        let uri = format!(
            "{}/{}",
            app.endpoint,
            created["client_id"].as_str().unwrap()
        );
        let r = app
            .get_client(&uri, created["registration_access_token"].as_str().unwrap())
            .await;
        assert_eq!(r.status(), 200);
        let read: Value = r.json().await.unwrap();
        let mut expected = created.clone();
        // `retain` keeps the order (`remove` moves the last member into the gap).
        expected
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k != "client_secret");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&read), keys(&expected));
        // The restarted server has another port, so another registration_client_uri.
        expected["registration_client_uri"] = read["registration_client_uri"].clone();
        assert_eq!(read, expected);
    }
}

#[test]
fn a_second_instance_on_the_same_data_directory_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_registrar");
    let spawn = || {
        std::process::Command::new(bin)
            .env("REGISTRAR_SERVER__PORT", "0")
            .env("REGISTRAR_ISSUER", "")
            .env("REGISTRAR_STORAGE__DATA_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    // wait until the first instance has created its key (it holds the lock by then)
    for _ in 0..200 {
        if dir.path().join("server.key").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let second = spawn().wait_with_output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another registrar process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn an_unreadable_record_gives_a_generic_500_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let dir = app.stop().await;
    {
        // Fault injection below the store's API: overwrite one record with bytes that do not
        // decode (right version byte, broken JSON).
        let db = sled::open(dir.path()).unwrap();
        let clients = db.open_tree("clients").unwrap();
        clients
            .insert(
                a["client_id"].as_str().unwrap(),
                &b"\x01{\"client_id\":"[..],
            )
            .unwrap();
        db.flush().unwrap();
    }
    let app = spawn_in(dir, |s| s).await;
    // The restarted server has another port: build the URIs from its endpoint.
    let uri = |c: &Value| format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap());
    let rat = |c: &Value| c["registration_access_token"].as_str().unwrap().to_owned();

    let r = app.get_client(&uri(&a), &rat(&a)).await;
    let description = assert_error(r, 500, "server_error").await;
    assert!(
        !description.contains("client_id"),
        "no internals leak: {description}"
    );
    // Every other client and every other operation keeps working.
    assert_eq!(app.get_client(&uri(&b), &rat(&b)).await.status(), 200);
    app.register(&web_client()).await;
    let r = app.healthz().await;
    assert_eq!(r.status(), 200);
}

/// A store written before records had a revision (the byte form of that version: format byte
/// 1, then the JSON without `revision`) opens, and its clients update, read and delete through
/// the API; the compare-and-swap treats the missing revision as 0. A record of format 2 (a
/// header of coded members, here none, then the JSON form) reads and updates too, and is
/// stored as format 3 after its update.
#[tokio::test]
async fn clients_stored_before_revisions_existed_still_update_and_delete() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let c = app.register(&web_client()).await;
    let dir = app.stop().await;
    {
        let db = sled::open(dir.path()).unwrap();
        let clients = db.open_tree("clients").unwrap();
        let id = c["client_id"].as_str().unwrap();
        let bytes = clients.get(id).unwrap().unwrap();
        let record = registrar::store::ClientRecord::decode(&bytes).unwrap();
        let mut v2 = vec![2u8, 0];
        serde_json::to_writer(&mut v2, &record).unwrap();
        clients.insert(id, v2).unwrap();
        for c in [&a, &b] {
            let id = c["client_id"].as_str().unwrap();
            let bytes = clients.get(id).unwrap().unwrap();
            assert_eq!(bytes[0], 3, "format byte");
            // Today's record in the JSON form format 1 stored, then without its revision.
            let record = registrar::store::ClientRecord::decode(&bytes).unwrap();
            let mut json: serde_json::Map<String, Value> =
                serde_json::from_value(serde_json::to_value(&record).unwrap()).unwrap();
            assert_eq!(json.remove("revision"), Some(Value::from(1)));
            let mut old = vec![1u8];
            serde_json::to_writer(&mut old, &json).unwrap();
            clients.insert(id, old).unwrap();
        }
        db.flush().unwrap();
    }
    let app = spawn_in(dir, |s| s).await;
    let uri = |c: &Value| format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap());
    let rat = |c: &Value| c["registration_access_token"].as_str().unwrap().to_owned();

    let mut update = web_client();
    update["client_id"] = a["client_id"].clone();
    update["client_name"] = "renamed".into();
    let r = app.put_client(&uri(&a), &rat(&a), &update).await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["client_name"], "renamed");
    // A second update goes from the revision the first one stored.
    update["client_name"] = "renamed twice".into();
    let r = app.put_client(&uri(&a), &rat(&updated), &update).await;
    assert_eq!(r.status(), 200);
    let twice: Value = r.json().await.unwrap();
    let r = app.get_client(&uri(&a), &rat(&twice)).await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], "renamed twice");

    assert_eq!(app.delete_client(&uri(&b), &rat(&b)).await.status(), 204);
    assert_eq!(app.get_client(&uri(&b), &rat(&b)).await.status(), 401);

    let r = app.get_client(&uri(&c), &rat(&c)).await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_name"], c["client_name"]);
    assert_eq!(read["redirect_uris"], c["redirect_uris"]);
    let mut update = web_client();
    update["client_id"] = c["client_id"].clone();
    update["client_name"] = "format 2 renamed".into();
    assert_eq!(
        app.put_client(&uri(&c), &rat(&c), &update).await.status(),
        200
    );
    let dir = app.stop().await;
    let db = sled::open(dir.path()).unwrap();
    let clients = db.open_tree("clients").unwrap();
    let bytes = clients
        .get(c["client_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(bytes[0], 3, "rewritten as format 3");
    let record = registrar::store::ClientRecord::decode(&bytes).unwrap();
    assert_eq!(record.metadata["client_name"], "format 2 renamed");
    assert!(record.revision > 1, "revision {}", record.revision);
}
