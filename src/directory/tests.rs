//! The directory service without HTTP, on the in-memory store and a fixed clock.

use super::*;
use crate::clock::FixedClock;
use crate::policy::RegistrationContext;
use crate::settings::Settings;
use crate::store::MemoryStore;
use serde_json::json;

const NOW: i64 = 1_700_000_000;

struct Fixture {
    directory: Directory,
    registrar: Arc<Registrar>,
    clock: Arc<FixedClock>,
}

fn fixture() -> Fixture {
    fixture_with(0, 10_000)
}

/// The fixture with `admin.authenticate_cache_ttl_secs = ttl` and that many entries at most.
fn fixture_with(ttl: u64, max_entries: usize) -> Fixture {
    let settings = Settings::defaults()
        .unwrap()
        .with("issuer", "https://id.example.com")
        .unwrap()
        .with("fetch.fetch_jwks_uri", false)
        .unwrap()
        .with("admin.last_used_resolution_secs", 60)
        .unwrap()
        .with("admin.authenticate_cache_ttl_secs", ttl)
        .unwrap()
        .with("admin.authenticate_cache_max_entries", max_entries)
        .unwrap();
    let clock = Arc::new(FixedClock::new(NOW));
    let parts = Parts::for_tests(settings, Arc::new(MemoryStore::new()), clock.clone(), 7);
    let registrar = Arc::new(Registrar::new(parts.clone()));
    Fixture {
        directory: Directory::new(parts, registrar.clone()),
        registrar,
        clock,
    }
}

async fn register(f: &Fixture, body: Value) -> (String, String) {
    let Value::Object(body) = body else { panic!() };
    let r = f
        .registrar
        .register_client(
            &body,
            &RegistrationContext::default(),
            &crate::events::Origin::default(),
        )
        .await
        .unwrap();
    (
        r["client_id"].as_str().unwrap().to_owned(),
        r.get("client_secret")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    )
}

fn web() -> Value {
    json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Alpha"})
}

#[tokio::test]
async fn authentication_failures_are_one_error() {
    let f = fixture();
    let (id, secret) = register(&f, web()).await;
    let ok = f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(ok["client_id"], id.as_str());
    assert_eq!(ok["last_used_at"], NOW);
    for (who, secret) in [("nobody", secret.as_str()), (id.as_str(), "wrong")] {
        assert!(matches!(
            f.directory.authenticate(who, secret).await,
            Err(RegistrationError::InvalidToken)
        ));
    }
    f.directory
        .patch(
            &id,
            json!({"disabled": true}).as_object().unwrap(),
            &Operator::default(),
        )
        .await
        .unwrap();
    assert!(matches!(
        f.directory.authenticate(&id, &secret).await,
        Err(RegistrationError::InvalidToken)
    ));
}

/// A patch that repeats the current values is not a change, also when the clock has moved
/// on since the last one: nothing is written, `updated_at` stays, no audit record.
#[tokio::test]
async fn a_patch_repeating_the_current_values_changes_nothing_later_too() {
    let f = fixture();
    let (id, _) = register(&f, web()).await;
    let patch = json!({"client_name": "Beta"});
    let first = f
        .directory
        .patch(&id, patch.as_object().unwrap(), &Operator::default())
        .await
        .unwrap();
    async fn records(f: &Fixture) -> usize {
        crate::events::list(f.registrar.store(), &Default::default())
            .await
            .unwrap()
            .records
            .len()
    }
    let before = records(&f).await;
    f.clock.advance(5);
    let again = f
        .directory
        .patch(&id, patch.as_object().unwrap(), &Operator::default())
        .await
        .unwrap();
    assert_eq!(again["updated_at"], first["updated_at"]);
    assert_eq!(records(&f).await, before, "no audit record");
}

#[tokio::test]
async fn a_public_client_is_told_its_method() {
    let f = fixture();
    let (id, _) = register(
        &f,
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let err = f.directory.authenticate(&id, "x").await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert!(err.to_string().contains("\"none\""), "{err}");
}

#[tokio::test]
async fn last_used_at_is_written_once_per_resolution() {
    let f = fixture();
    let (id, secret) = register(&f, web()).await;
    f.directory.authenticate(&id, &secret).await.unwrap();
    f.clock.advance(59);
    let v = f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(v["last_used_at"], NOW, "coalesced within the resolution");
    f.clock.advance(1);
    let v = f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(v["last_used_at"], NOW + 60);
}

#[tokio::test]
async fn a_rotated_secret_keeps_the_old_one_for_the_grace_period_only() {
    let f = fixture();
    let (id, old) = register(&f, web()).await;
    let r = f
        .directory
        .rotate_secret(
            &id,
            json!({"grace_secs": 100}).as_object().unwrap(),
            &Operator::default(),
        )
        .await
        .unwrap();
    let new = r["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(f.directory.authenticate(&id, &new).await.is_ok());
    assert!(f.directory.authenticate(&id, &old).await.is_ok());
    f.clock.advance(100);
    assert!(f.directory.authenticate(&id, &old).await.is_err());
    assert!(f.directory.authenticate(&id, &new).await.is_ok());
    // Without grace the old secret dies at once.
    let r = f
        .directory
        .rotate_secret(&id, &Map::new(), &Operator::default())
        .await
        .unwrap();
    assert!(f.directory.authenticate(&id, &new).await.is_err());
    let newest = r["client_secret"].as_str().unwrap();
    assert!(f.directory.authenticate(&id, newest).await.is_ok());
}

#[tokio::test]
async fn an_expired_secret_does_not_authenticate() {
    let f = fixture();
    let (id, secret) = register(&f, web()).await;
    let current = f.directory.load(&id).await.unwrap();
    let mut expiring = current.clone();
    expiring.client_secret_expires_at = Some(NOW + 10);
    assert!(f
        .directory
        .save_with(&current, expiring, EventBatch::default())
        .await
        .unwrap()
        .is_some());
    assert!(f.directory.authenticate(&id, &secret).await.is_ok());
    f.clock.advance(10);
    assert!(matches!(
        f.directory.authenticate(&id, &secret).await,
        Err(RegistrationError::InvalidToken)
    ));
}

#[tokio::test]
async fn listing_pages_by_client_id_and_filters() {
    let f = fixture();
    let mut ids = Vec::new();
    for i in 0..7 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        let (id, _) = register(
            &f,
            json!({"redirect_uris": ["https://a.example/cb"], "client_name": format!("{name}-{i}")}),
        )
        .await;
        ids.push(id);
    }
    ids.sort();
    let pairs = |q: &[(&str, &str)]| -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "3")];
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = f
            .directory
            .list(&ListQuery::parse(&pairs(&q), Purpose::List).unwrap())
            .await
            .unwrap();
        seen.extend(
            page.clients
                .iter()
                .map(|c| c["client_id"].as_str().unwrap().to_owned()),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let odd = f
        .directory
        .list(&ListQuery::parse(&pairs(&[("client_name", "odd")]), Purpose::List).unwrap())
        .await
        .unwrap();
    assert_eq!(odd.clients.len(), 3);
    assert!(odd.next_cursor.is_none());
    let deleted = f
        .directory
        .delete_matching(
            &ListQuery::parse(&pairs(&[("client_name", "even")]), Purpose::Delete)
                .unwrap()
                .filter,
            false,
            &Operator::default(),
        )
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    assert_eq!(f.registrar.client_count().await.unwrap(), 3);
}

#[test]
fn queries_name_the_bad_parameter() {
    let bad = |name: &str, value: &str, purpose| {
        let err = ListQuery::parse(&[(name.to_owned(), value.to_owned())], purpose).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.to_string().contains(name), "{err}");
    };
    bad("limit", "0", Purpose::List);
    bad("limit", "1001", Purpose::List);
    bad("cursor", "***", Purpose::List);
    bad("colour", "red", Purpose::List);
    bad("disabled", "yes", Purpose::List);
    bad("created_before", "-1", Purpose::List);
    bad("dry_run", "true", Purpose::List);
    bad("limit", "5", Purpose::Delete);
    assert!(ListQuery::parse(&[], Purpose::Delete).is_err());
    let twice = [
        ("tier".to_owned(), "a".to_owned()),
        ("tier".to_owned(), "b".to_owned()),
    ];
    assert!(ListQuery::parse(&twice, Purpose::List).is_err());
}

#[test]
fn merge_patch_follows_rfc_7396_appendix_a() {
    let cases = [
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
    ];
    for (mut target, patch, want) in cases {
        merge_patch(&mut target, &patch);
        assert_eq!(target, want);
    }
}

#[tokio::test]
async fn the_view_shows_no_credential_material() {
    let f = fixture();
    let (id, secret) = register(&f, web()).await;
    let v = Value::Object(f.directory.get(&id).await.unwrap()).to_string();
    assert!(!v.contains(&secret));
    assert!(!v.contains("argon2"));
    assert!(!v.contains("rat_tag"));
    for member in [
        "created_at",
        "updated_at",
        "last_used_at",
        "disabled",
        "policy",
        "tier",
    ] {
        assert!(v.contains(member), "{member} in {v}");
    }
    assert!(v.contains("\"source\":\"registration\""));
}

#[test]
fn records_from_before_the_directory_fields_decode_and_view_sensibly() {
    let old = br#"{"client_id":"a","client_id_issued_at":42,"rat_tag":[],"metadata":{"client_name":"Old"},"updated_at":43,"tier":"anonymous"}"#;
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(old);
    let record = ClientRecord::decode(&bytes).unwrap();
    assert!(!record.disabled);
    assert_eq!(record.last_used_at, None);
    let v = view(record);
    assert_eq!(v["created_at"], 42, "falls back to client_id_issued_at");
    assert_eq!(v["source"], "registration");
    assert_eq!(v["disabled"], false);
    assert_eq!(v["last_used_at"], Value::Null);
    let filter = ClientFilter {
        source: Some("registration".into()),
        created_before: Some(43),
        unused_for_secs: Some(0),
        ..Default::default()
    };
    assert!(filter.matches(&ClientRecord::decode(&bytes).unwrap(), NOW));
}

/// Log lines written while the guard lives (on this thread: `#[tokio::test]` polls here).
fn capture_logs() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    #[derive(Clone)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_changed_document_updates_its_client_and_a_change_of_keys_is_a_warning() {
    let f = fixture();
    let id = "https://app.example/client.json";
    let document = |name: &str, x: &str| {
        let Value::Object(m) = json!({
            "redirect_uris": ["https://app.example/cb"],
            "client_name": name,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]},
        }) else {
            unreachable!()
        };
        m
    };
    let admission = f.registrar.policy().document_admission(None).unwrap();
    let (logs, _guard) = capture_logs();
    let first = f
        .directory
        .cimd
        .save(id, document("A", "k1"), &admission)
        .await
        .unwrap();
    assert_eq!((first.revision, first.created_at), (1, NOW));
    assert_eq!(first.source.as_deref(), Some(source::METADATA_DOCUMENT));
    // The same document again writes nothing.
    let same = f
        .directory
        .cimd
        .save(id, document("A", "k1"), &admission)
        .await
        .unwrap();
    assert_eq!(same.revision, 1);
    f.clock.advance(5);
    let renamed = f
        .directory
        .cimd
        .save(id, document("B", "k1"), &admission)
        .await
        .unwrap();
    assert_eq!((renamed.revision, renamed.updated_at), (2, NOW + 5));
    assert!(!String::from_utf8_lossy(&logs.lock().unwrap()).contains("changed its keys"));
    let rekeyed = f
        .directory
        .cimd
        .save(id, document("B", "k2"), &admission)
        .await
        .unwrap();
    assert_eq!(rekeyed.revision, 3);
    assert_eq!(rekeyed.created_at, NOW, "creation time survives");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let warning = text
        .lines()
        .find(|l| l.contains("changed its keys"))
        .unwrap_or_else(|| panic!("no key warning in:\n{text}"));
    assert!(
        warning.contains("WARN") && warning.contains(id),
        "{warning}"
    );
    let stored = f.directory.get(id).await;
    assert!(
        stored.is_err(),
        "a lookup fetches, and app.example is not served here"
    );
}

// --- the authentication cache (admin.authenticate_cache_ttl_secs) ----------------------------

fn cache_hits(f: &Fixture) -> u64 {
    f.directory.auth_cache.as_ref().map_or(0, |c| c.hits())
}

#[tokio::test]
async fn the_authentication_cache_is_off_by_default() {
    let f = fixture();
    assert!(f.directory.auth_cache.is_none());
}

#[tokio::test]
async fn a_verified_secret_hits_the_cache_until_the_ttl() {
    let f = fixture_with(300, 100);
    let (id, secret) = register(&f, web()).await;
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(
        cache_hits(&f),
        0,
        "the first success verifies with argon2id"
    );
    let v = f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 1);
    assert_eq!(v["last_used_at"], NOW);
    // The touch of last_used_at is a new revision written by the success itself: still a hit.
    f.clock.advance(60);
    let v = f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(v["last_used_at"], NOW + 60);
    assert_eq!(cache_hits(&f), 2);
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 3);
    // The TTL counts from the argon2id verification (NOW), not from the hits.
    f.clock.advance(240);
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 3, "expired: verified again");
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 4);
}

#[tokio::test]
async fn a_wrong_secret_never_hits_the_cache() {
    let f = fixture_with(300, 100);
    let (id, secret) = register(&f, web()).await;
    let (other, _) = register(&f, web()).await;
    f.directory.authenticate(&id, &secret).await.unwrap();
    let longer = format!("{secret}x");
    for (who, presented) in [
        (id.as_str(), "wrong"),
        (id.as_str(), longer.as_str()),
        (id.as_str(), &secret[..secret.len() - 1]),
        (other.as_str(), secret.as_str()),
        ("nobody", secret.as_str()),
    ] {
        assert!(matches!(
            f.directory.authenticate(who, presented).await,
            Err(RegistrationError::InvalidToken)
        ));
    }
    assert_eq!(cache_hits(&f), 0);
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 1, "the right secret still hits");
}

#[tokio::test]
async fn a_rotation_ends_the_cached_secret() {
    let f = fixture_with(300, 100);
    let (id, old) = register(&f, web()).await;
    f.directory.authenticate(&id, &old).await.unwrap();
    f.directory.authenticate(&id, &old).await.unwrap();
    assert_eq!(cache_hits(&f), 1);
    let r = f
        .directory
        .rotate_secret(&id, &Map::new(), &Operator::default())
        .await
        .unwrap();
    assert!(matches!(
        f.directory.authenticate(&id, &old).await,
        Err(RegistrationError::InvalidToken)
    ));
    assert_eq!(cache_hits(&f), 1, "no hit for the rotated-out secret");
    let new = r["client_secret"].as_str().unwrap().to_owned();
    f.directory.authenticate(&id, &new).await.unwrap();
    f.directory.authenticate(&id, &new).await.unwrap();
    assert_eq!(cache_hits(&f), 2);
    // With grace the previous secret is verified again once, then cached as the previous one
    // until the grace ends, when it is refused without a hit.
    let r = f
        .directory
        .rotate_secret(
            &id,
            json!({"grace_secs": 100}).as_object().unwrap(),
            &Operator::default(),
        )
        .await
        .unwrap();
    f.directory.authenticate(&id, &new).await.unwrap();
    assert_eq!(cache_hits(&f), 2);
    f.directory.authenticate(&id, &new).await.unwrap();
    assert_eq!(cache_hits(&f), 3, "the previous secret within grace");
    f.clock.advance(100);
    assert!(f.directory.authenticate(&id, &new).await.is_err());
    assert_eq!(cache_hits(&f), 3);
    let newest = r["client_secret"].as_str().unwrap();
    assert!(f.directory.authenticate(&id, newest).await.is_ok());
}

#[tokio::test]
async fn disabling_deleting_or_expiring_ends_the_cached_secret() {
    let f = fixture_with(300, 100);
    let (id, secret) = register(&f, web()).await;
    f.directory.authenticate(&id, &secret).await.unwrap();
    f.directory
        .patch(
            &id,
            json!({"disabled": true}).as_object().unwrap(),
            &Operator::default(),
        )
        .await
        .unwrap();
    assert!(f.directory.authenticate(&id, &secret).await.is_err());
    f.directory
        .patch(
            &id,
            json!({"disabled": false}).as_object().unwrap(),
            &Operator::default(),
        )
        .await
        .unwrap();
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 0, "re-enabled: verified again");

    // Expiry: the record does not change, the clock does; refused, and without a hit.
    let current = f.directory.load(&id).await.unwrap();
    let mut expiring = current.clone();
    expiring.client_secret_expires_at = Some(NOW + 10);
    f.directory
        .registrar
        .save(&current, expiring)
        .await
        .unwrap()
        .unwrap();
    f.directory.authenticate(&id, &secret).await.unwrap();
    f.directory.authenticate(&id, &secret).await.unwrap();
    assert_eq!(cache_hits(&f), 1);
    f.clock.advance(10);
    assert!(f.directory.authenticate(&id, &secret).await.is_err());
    assert_eq!(cache_hits(&f), 1);

    let (id, secret) = register(&f, web()).await;
    f.directory.authenticate(&id, &secret).await.unwrap();
    f.directory.delete(&id, &Operator::default()).await.unwrap();
    assert!(f.directory.authenticate(&id, &secret).await.is_err());
    assert_eq!(cache_hits(&f), 1);
}

#[tokio::test]
async fn the_authentication_cache_is_bounded() {
    let f = fixture_with(300, 2);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (id, secret) = register(&f, web()).await;
        f.directory.authenticate(&id, &secret).await.unwrap();
        clients.push((id, secret));
    }
    let cache = f.directory.auth_cache.as_ref().unwrap();
    assert_eq!(cache.len(), 2);
    for (id, secret) in &clients {
        f.directory.authenticate(id, secret).await.unwrap();
    }
    assert!(cache.len() <= 2);
}
