//! Property tests (proptest) on the metadata engine: arbitrary input never panics, errors name
//! a field, validation is idempotent, and whatever is accepted round-trips unchanged through the
//! store and GET. Inputs are built from the field table itself (every field name, a few
//! localized and unknown names) and a value pool drawn from the configured supported values, so
//! a good share of them is accepted and the properties about accepted metadata get exercised.

use crate::helpers::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use registrar::metadata::{validate, FIELDS, SERVER_MANAGED};
use registrar::settings::{MetadataSettings, Settings};
use serde_json::{json, Map, Value};

/// A configured extension member: kept verbatim whatever JSON it holds.
const EXTENSION: &str = "x_extension";

fn settings() -> MetadataSettings {
    with_extension(Settings::defaults().unwrap()).metadata
}

fn with_extension(s: Settings) -> Settings {
    s.with("metadata.extension_fields", vec![EXTENSION])
        .unwrap()
}

/// Every string that appears in a supported-values list, plus URIs, names and oddities.
fn string_pool() -> Vec<String> {
    let mut pool: Vec<String> = serde_json::to_value(settings())
        .unwrap()
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for s in [
        "https://client.example.org/cb",
        "https://client.example.org/logo.png",
        "https://client.example.org/jwks.json",
        "http://127.0.0.1:8080/cb",
        "com.example.app:/cb",
        "javascript:alert(1)",
        "https://client.example.org/cb#f",
        "web",
        "native",
        "ops@example.org",
        "Example Client",
        "openid profile",
        "en",
        "",
        " ",
        "\u{0}",
        "\u{202e}rtl",
        "x".repeat(3000).as_str(),
    ] {
        pool.push(s.to_owned());
    }
    pool.sort();
    pool.dedup();
    pool
}

fn names() -> Vec<String> {
    let mut names: Vec<String> = FIELDS.iter().map(|f| f.name.to_owned()).collect();
    names.extend(
        [
            "client_name#en",
            "client_name#de-CH",
            "logo_uri#fr",
            "client_name#",
            "redirect_uris#en",
            "unknown_member",
            "<img src=x>",
            "",
        ]
        .map(str::to_owned),
    );
    names.extend(SERVER_MANAGED.iter().map(|s| s.to_string()));
    names
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A plausible value: a pool string, an array of them, a bool, a number, null or an object.
fn plausible(pool: Vec<String>) -> impl Strategy<Value = Value> {
    let one = prop::sample::select(pool);
    prop_oneof![
        4 => one.clone().prop_map(Value::from),
        4 => prop::collection::vec(one.clone(), 1..4).prop_map(|v| json!(v)),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop_oneof![Just(0i64), Just(60), Just(-1), Just(86400)].prop_map(Value::from),
        1 => Just(Value::Null),
        1 => prop::collection::vec(one, 0..3).prop_map(|v| json!({"keys": v})),
    ]
}

/// A registration request: a valid base plus a few members from the table.
fn request(wild: bool) -> impl Strategy<Value = Map<String, Value>> {
    let name = prop::sample::select(names());
    let value = if wild {
        any_json().boxed()
    } else {
        plausible(string_pool()).boxed()
    };
    let extension = prop::option::of(any_json());
    (prop::collection::vec((name, value), 0..5), extension).prop_map(|(members, extension)| {
        let mut m = Map::new();
        m.insert(
            "redirect_uris".into(),
            json!(["https://client.example.org/cb"]),
        );
        for (k, v) in members {
            m.insert(k, v);
        }
        if let Some(v) = extension {
            m.insert(EXTENSION.into(), v);
        }
        m
    })
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The error names a field: one the request sent or one of the table.
fn names_a_field(description: &str, input: &Map<String, Value>) -> bool {
    FIELDS.iter().any(|f| description.contains(f.name))
        || input
            .keys()
            .any(|k| !k.is_empty() && description.contains(k.as_str()))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn validation_never_panics_and_every_error_names_a_field(input in prop_oneof![request(true), request(false)]) {
        let settings = settings();
        if let Err(e) = validate(&input, &settings) {
            let description = e.to_string();
            prop_assert!(names_a_field(&description, &input), "{description}");
        }
    }

    #[test]
    fn validation_is_idempotent(input in request(false)) {
        let settings = settings();
        if let Ok(accepted) = validate(&input, &settings) {
            let again = validate(&accepted, &settings);
            prop_assert!(again.is_ok(), "accepted once, refused again: {:?}", again.err().map(|e| e.to_string()));
            prop_assert_eq!(again.unwrap(), accepted);
        }
    }

    #[test]
    fn the_body_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = registrar::http::parse_object(&bytes);
    }

    #[test]
    fn the_body_parser_reads_back_any_object_it_is_given(value in any_json()) {
        if let Value::Object(map) = &value {
            let parsed = registrar::http::parse_object(value.to_string().as_bytes()).ok();
            prop_assert_eq!(parsed.as_ref(), Some(map));
        }
    }
}

/// Plausible requests are accepted often enough for the properties above to mean something.
#[test]
fn a_fair_share_of_generated_requests_is_accepted() {
    let settings = settings();
    let mut runner = TestRunner::new(config(400));
    let strategy = request(false);
    let (mut accepted, mut total) = (0, 0);
    for _ in 0..400 {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        total += 1;
        if validate(&input, &settings).is_ok() {
            accepted += 1;
        }
    }
    eprintln!("{accepted} of {total} generated requests accepted");
    assert!(
        accepted * 10 >= total,
        "only {accepted} of {total} accepted"
    );
}

/// Accepted metadata round-trips unchanged through registration, the store and GET: the 201
/// response and the read carry exactly what the engine returned, in the same order.
#[test]
fn accepted_metadata_round_trips_through_the_store_and_get() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app_with(with_extension));
    let settings = settings();
    let mut runner = TestRunner::new(config(96));
    let round_trips = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&request(false), |input| {
        let Ok(expected) = validate(&input, &settings) else {
            return Ok(()); // refused inputs are the other properties' business
        };
        round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let r = app.post(&Value::Object(input.clone())).await;
            let status = r.status();
            let created: Value = r.json().await.unwrap();
            if status != 201 {
                return Err(TestCaseError::fail(format!(
                    "engine accepted, server answered {status}: {created}"
                )));
            }
            let strip = |v: &Value| -> Map<String, Value> {
                v.as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| !SERVER_MANAGED.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let in_response = strip(&created);
            prop_assert_eq!(&in_response, &expected);
            prop_assert!(in_response.keys().eq(expected.keys()), "order changed");
            let uri = created["registration_client_uri"].as_str().unwrap();
            let token = created["registration_access_token"].as_str().unwrap();
            let read: Value = app.get_client(uri, token).await.json().await.unwrap();
            let read = strip(&read);
            prop_assert_eq!(&read, &expected);
            prop_assert!(
                read.keys().eq(expected.keys()),
                "order changed in the store"
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let n = round_trips.into_inner();
    eprintln!("{n} accepted registrations round-tripped");
    assert!(n >= 8, "only {n} accepted inputs were round-tripped");
}
