//! Hostile input: every bad input of the security catalogue (B1–B17, B32–B49) that applies to
//! what the server does, each answered with a JSON error, and the server still healthy after.
//! Cases already covered elsewhere are named, not repeated: B17/B45/B46/B48 in hygiene.rs,
//! B32 in registration.rs, B35–B40/B42/B43 in management.rs.

use crate::helpers::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn uri(c: &Value) -> String {
    c["registration_client_uri"].as_str().unwrap().to_owned()
}
fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

/// The server still answers a normal registration.
async fn assert_healthy(app: &TestApp) {
    let c = app.register(&web_client()).await;
    assert_eq!(app.get_client(&uri(&c), &rat(&c)).await.status(), 200);
}

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Send raw bytes on a fresh connection and read until the server closes it or `wait` passes.
async fn raw(app: &TestApp, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(host(app)).await.unwrap();
    let _ = s.write_all(bytes).await; // the server may close before reading everything
    read_response(&mut s, wait).await
}

async fn read_response(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // one complete response is enough
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code and JSON body of a raw HTTP/1.1 response.
fn parse(response: &str) -> (u16, Option<Value>) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok());
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// B44: size limits

#[tokio::test]
async fn a_body_at_the_limit_is_read_and_one_byte_over_is_refused_with_413() {
    let app = spawn_app().await;
    let json = web_client().to_string();
    let at_limit = format!("{json}{}", " ".repeat(65536 - json.len()));
    assert_eq!(at_limit.len(), 65536);
    assert_eq!(
        app.post_raw("application/json", at_limit.clone())
            .await
            .status(),
        201
    );
    let over = format!("{at_limit} ");
    let d = assert_error(
        app.post_raw("application/json", over.clone()).await,
        413,
        "invalid_request",
    )
    .await;
    assert!(d.contains("65536"), "{d}");
    // streamed without Content-Length, in small chunks
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = app
        .client
        .post(&app.endpoint)
        .header(CONTENT_TYPE, "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "invalid_request").await;
    assert_healthy(&app).await;
}

#[tokio::test]
async fn an_absurd_content_length_is_refused_before_any_body_arrives() {
    let app = spawn_app().await;
    let started = Instant::now();
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{",
        host(&app)
    );
    let (status, body) = parse(&raw(&app, request.as_bytes(), Duration::from_secs(3)).await);
    assert_eq!(status, 413);
    assert_eq!(body.unwrap()["error"], "invalid_request");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for the body"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_megabyte_of_unknown_members_is_refused_by_size_and_thousands_within_the_limit_are_dropped(
) {
    let app = spawn_app().await;
    // B49: 1 MiB of unknown keys
    let mut big = web_client();
    for i in 0..40_000 {
        big[format!("unknown_member_{i:08}")] = json!(i);
    }
    assert!(big.to_string().len() > 1 << 20);
    assert_error(app.post(&big).await, 413, "invalid_request").await;
    // 3 000 unknown members inside the limit: accepted, none stored or echoed
    let mut many = web_client();
    for i in 0..3_000 {
        many[format!("x{i}")] = json!(1);
    }
    assert!(many.to_string().len() < 65536);
    let c = app.register(&many).await;
    let read: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    assert!(read.get("x0").is_none() && c.get("x2999").is_none());
    assert!(read.as_object().unwrap().len() < 40, "{read}");
}

// ---------------------------------------------------------------------------------------------
// B47, B48: parser abuse

#[tokio::test]
async fn ten_thousand_levels_of_nesting_are_refused_as_invalid_json() {
    let app = spawn_app().await;
    let arrays = "[".repeat(10_000) + &"]".repeat(10_000);
    let objects = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let inside = format!(
        "{{\"redirect_uris\":[\"https://client.example.org/cb\"],\"client_name\":{}}}",
        "[".repeat(10_000) + &"]".repeat(10_000)
    );
    for body in [arrays, objects, inside] {
        assert!(body.len() < 65536);
        let d = assert_error(
            app.post_raw("application/json", body).await,
            400,
            "invalid_client_metadata",
        )
        .await;
        assert!(d.contains("JSON"), "{d}");
    }
    // 100 levels inside an unknown member parse fine and are dropped
    let mut ok = web_client();
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    ok["deep"] = nested;
    let c = app.register(&ok).await;
    assert!(c.get("deep").is_none());
    assert_healthy(&app).await;
}

#[tokio::test]
async fn duplicate_members_hidden_by_escapes_or_nesting_are_refused() {
    let app = spawn_app().await;
    for body in [
        // the same name, once escaped: a byte-comparing parser would keep both
        r#"{"redirect_uris":["https://good.example/cb"],"redirect\u005furis":["https://evil.example/cb"]}"#,
        r#"{"redirect_uris":["https://good.example/cb"],"jwks":{"keys":[],"keys":[{"kty":"oct"}]}}"#,
        r#"{"redirect_uris":["https://good.example/cb"],"x":{"a":1,"a":1}}"#,
    ] {
        let d = assert_error(
            app.post_raw("application/json", body).await,
            400,
            "invalid_client_metadata",
        )
        .await;
        assert!(d.contains("duplicate"), "{body}: {d}");
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn invalid_utf8_lone_surrogates_and_raw_control_characters_are_refused() {
    let app = spawn_app().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"client_name\":\"\xff\"}".to_vec(),
        b"{\"client_name\":\"\xc0\xaf\"}".to_vec(), // overlong '/'
        b"{\"client_name\":\"\xed\xa0\x80\"}".to_vec(), // CESU-8 surrogate
        b"{\"client_name\":\"\\ud800\"}".to_vec(),  // lone surrogate escape
        b"{\"client_name\":\"a\x00b\"}".to_vec(),   // raw NUL inside a string
        b"\xef\xbb\xbf{\"client_name\":\"bom\"}".to_vec(),
        b"".to_vec(),
        b"   ".to_vec(),
        b"{\"a\":1e999999}".to_vec(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = app.post_raw("application/json", body).await;
        assert_eq!(r.status(), 400, "{shown:?}");
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("JSON"), "{shown:?}: {d}");
    }
    assert_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// B49: huge values inside the limit

#[tokio::test]
async fn huge_arrays_and_strings_within_the_limit_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let many_uris: Vec<String> = (0..2_000)
        .map(|i| format!("https://c.example/{i}"))
        .collect();
    let many_contacts: Vec<String> = (0..5_000).map(|i| format!("a{i}@x.io")).collect();
    let cases = [
        (
            json!({"redirect_uris": many_uris}),
            "redirect_uris",
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://client.example.org/cb"], "contacts": many_contacts}),
            "contacts",
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://client.example.org/cb"], "client_name": "n".repeat(60_000)}),
            "client_name",
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [format!("https://client.example.org/{}", "p".repeat(60_000))]}),
            "redirect_uris",
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://client.example.org/cb"], "scope": "s ".repeat(30_000)}),
            "scope",
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://client.example.org/cb"], "client_name#en": "n".repeat(60_000)}),
            "client_name#en",
            "invalid_client_metadata",
        ),
    ];
    for (body, field, code) in cases {
        assert!(body.to_string().len() < 65536, "{field}");
        let r = app.post(&body).await;
        let status = r.status().as_u16();
        let d = assert_error(r, 400, code).await;
        assert_eq!(status, 400);
        assert!(d.contains(field), "{field}: {d}");
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn out_of_range_numbers_and_wrong_types_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (field, value) in [
        ("default_max_age", json!(1e300)),
        ("default_max_age", json!(-1)),
        ("default_max_age", json!("60")),
        ("require_auth_time", json!("true")),
        ("client_name", json!({"en": "x"})),
        ("grant_types", json!("authorization_code")),
    ] {
        let mut body = web_client();
        body[field] = value.clone();
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(d.contains(field), "{field}={value}: {d}");
    }
    assert_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Header abuse (B40 on registration, many and huge headers)

#[tokio::test]
async fn malformed_authorization_headers_on_registration_never_cause_a_server_error() {
    let app = spawn_app().await;
    for value in [
        &b"Bearer"[..],
        b"Bearer ",
        b"bearer a b",
        b"Basic Zm9vOmJhcg==",
        b"Bearer \xff\xfe",
        b"Bearer a\tb",
    ] {
        let r = app
            .client
            .post(&app.endpoint)
            .header(
                AUTHORIZATION,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .json(&web_client())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        // open registration ignores a token it cannot use; it never fails with a 5xx
        assert!(
            status == 201 || status == 400 || status == 401,
            "{value:?}: {status}"
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
    let long = format!("Bearer {}", "a".repeat(16 * 1024));
    let r = app
        .client
        .post(&app.endpoint)
        .header(AUTHORIZATION, long)
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() < 500);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn non_ascii_bytes_in_a_management_token_get_the_same_401() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let mut value = format!("Bearer {}", rat(&c)).into_bytes();
    value.push(0xff);
    let r = app
        .client
        .get(uri(&c))
        .header(
            AUTHORIZATION,
            reqwest::header::HeaderValue::from_bytes(&value).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused_and_the_server_stays_up() {
    let app = spawn_app().await;
    let body = web_client().to_string();
    // 200 headers: above the HTTP/1 parser's limit of 96
    let mut many = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        host(&app),
        body.len()
    );
    for i in 0..200 {
        many.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    many.push_str(&body);
    // one 200 KiB header: above the 128 KiB head buffer
    let huge = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nX-Huge: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        host(&app),
        "h".repeat(200 * 1024),
        body.len()
    );
    for request in [many, huge] {
        let response = raw(&app, request.as_bytes(), Duration::from_secs(5)).await;
        // Refused by actix's HTTP/1 parser before any handler runs, so the answer is its bare
        // 431 with an empty body (nothing reflected, nothing to sniff), and the connection closes.
        let (status, _) = parse(&response);
        assert_eq!(status, 431, "{response}");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty(), "{body}");
    }
    assert_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Slow clients

#[tokio::test]
async fn a_body_dripped_slower_than_the_body_deadline_gets_a_json_408() {
    let app = spawn_app_with(|s| s.with("server.body_timeout_ms", 600).unwrap()).await;
    let body = web_client().to_string();
    let mut s = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        host(&app),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // one byte every 100 ms: the whole body would take seconds
    let drip = async {
        for b in body.as_bytes() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
    };
    drip.await;
    let (status, json) = parse(&read_response(&mut s, Duration::from_secs(3)).await);
    assert_eq!(status, 408);
    let json = json.expect("a JSON error body");
    assert_eq!(json["error"], "invalid_request");
    assert!(json["error_description"].as_str().unwrap().contains("time"));
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_request_head_dripped_slower_than_the_head_deadline_is_cut_off() {
    let app = spawn_app_with(|s| s.with("server.head_timeout_ms", 500).unwrap()).await;
    let mut s = TcpStream::connect(host(&app)).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"POST /register HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .chain([b'a'; 100].iter())
    {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            // 408 (or a close) from the server's head timeout
            let text = String::from_utf8_lossy(&probe[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow head was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// B1–B16: redirect URIs and other client URIs

#[tokio::test]
async fn executable_local_and_ambiguous_redirect_uris_are_refused() {
    let app = spawn_app_with(|s| {
        s.with("metadata.allow_http_loopback_redirects_for_web", false)
            .unwrap()
    })
    .await;
    let cases: &[(&str, &str)] = &[
        ("B1", "javascript:alert(document.domain)//"),
        ("B2", "JaVaScRiPt:alert(1)"),
        ("B3", "javascript://example.com/%0aalert(1)"),
        ("B4", "data:text/html,<script>alert(1)</script>"),
        ("B4", "vbscript:msgbox(1)"),
        ("B4", "file:///etc/passwd"),
        ("B4", "blob:https://client.example/uuid"),
        ("B4", "about:blank"),
        ("B4", "mailto:x@y.example"),
        ("B5", " javascript:alert(1)"),
        ("B5", "java\tscript:alert(1)"),
        ("B5", "https://exa\tmple.com/cb"),
        ("B5", "https://client.example/cb\u{0}"),
        ("B5", "https://client.example/cb\n"),
        ("B6", "https://client.example/cb#"),
        ("B6", "https://client.example/cb#x"),
        ("B7", "https://legit.example@evil.example/cb"),
        ("B7", "https://a@b@evil.example/cb"),
        ("B8", "http://localhost.evil.test/cb"),
        ("B8", "http://127.0.0.1.evil.test/cb"),
        ("B9", "http://client.example/cb"),
        ("B10", "https://*.example.com/cb"),
        ("B10", "https://client.example/*"),
    ];
    for (id, uri) in cases {
        let body = json!({"redirect_uris": [uri]});
        let d = assert_error(app.post(&body).await, 400, "invalid_redirect_uri").await;
        assert!(d.contains("redirect_uris"), "{id} {uri:?}: {d}");
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn redirect_uris_carrying_authorization_response_parameters_are_refused() {
    let app = spawn_app().await;
    // B11 (the fragment variant is refused as any fragment is, see B6)
    for uri in [
        "https://client.example/cb?code=evil&state=x&iss=y",
        "https://client.example/cb?x=1&state=x",
        "https://client.example/cb?c%6fde=percent-encoded",
        "com.example.app:/cb?id_token=x",
    ] {
        let body = json!({"redirect_uris": [uri]});
        let d = assert_error(app.post(&body).await, 400, "invalid_redirect_uri").await;
        assert!(d.contains("response parameter"), "{uri}: {d}");
    }
    // an ordinary query stays allowed
    let c = app
        .register(&json!({"redirect_uris": ["https://client.example/cb?tenant=a&mode=b"]}))
        .await;
    assert_eq!(
        c["redirect_uris"],
        json!(["https://client.example/cb?tenant=a&mode=b"])
    );
}

#[tokio::test]
async fn redirect_uris_are_stored_verbatim_or_refused_never_normalised() {
    let app = spawn_app().await;
    // B12, B13: forms a normalising parser would rewrite
    for uri in [
        "https://client.example/a/..;/b",
        "https://client.example/a/%2e%2e/b",
        "https://CLIENT.EXAMPLE.COM/cb",
        "https://client.example.com:443/cb",
        "https://client.example.com",
        "https://client.example.com/a b",
        "https://client.example.com/caf\u{e9}",
    ] {
        let r = app.post(&json!({"redirect_uris": [uri]})).await;
        match r.status().as_u16() {
            201 => {
                let c: Value = r.json().await.unwrap();
                assert_eq!(c["redirect_uris"], json!([uri]), "stored as sent");
                let read: Value = app
                    .get_client(&self::uri(&c), &rat(&c))
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(read["redirect_uris"], json!([uri]), "read back as sent");
            }
            _ => {
                assert_error(r, 400, "invalid_redirect_uri").await;
            }
        }
    }
}

#[tokio::test]
async fn redirect_uris_of_the_wrong_shape_are_refused() {
    let app = spawn_app().await;
    // B14
    for value in [
        json!(null),
        json!("https://client.example/cb"),
        json!([]),
        json!(["https://client.example/cb", null]),
        json!([123]),
        json!([""]),
        json!([["https://client.example/cb"]]),
    ] {
        let r = app.post(&json!({"redirect_uris": value})).await;
        assert_eq!(r.status(), 400, "{value}");
        let body: Value = r.json().await.unwrap();
        let code = body["error"].as_str().unwrap();
        assert!(
            code == "invalid_redirect_uri" || code == "invalid_client_metadata",
            "{value}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("redirect_uris"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn other_client_uris_with_dangerous_schemes_are_refused() {
    let app = spawn_app().await;
    // B15
    for (field, value) in [
        ("logo_uri", "javascript:alert(1)"),
        ("client_uri", "data:text/html,<b>x</b>"),
        ("tos_uri", "file:///etc/passwd"),
        ("policy_uri", "ftp://client.example/policy"),
        ("jwks_uri", "javascript:alert(1)"),
        ("sector_identifier_uri", "file:///etc/passwd"),
        ("initiate_login_uri", "data:,x"),
    ] {
        let mut body = web_client();
        body[field] = json!(value);
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(d.contains(field), "{field}: {d}");
    }
}

#[tokio::test]
async fn markup_in_client_name_is_only_ever_returned_as_json() {
    let app = spawn_app().await;
    // B16: stored as data; every answer is JSON with nosniff, so it is never rendered
    let name = "<img src=x onerror=alert(1)>";
    let mut body = web_client();
    body["client_name"] = json!(name);
    let r = app.post(&body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["client_name"], name);
    let r = app.get_client(&uri(&c), &rat(&c)).await;
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

// ---------------------------------------------------------------------------------------------
// B33, B34: privileged and out-of-policy metadata

#[tokio::test]
async fn privileged_members_are_refused_and_unknown_ones_are_not_stored() {
    let app = spawn_app().await;
    for (field, value) in [
        ("skip_consent", json!(true)),
        ("metadata", json!({"role": "admin"})),
        ("access_token_strategy", json!("jwt")),
    ] {
        let mut body = web_client();
        body[field] = value;
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(d.contains(field), "{field}: {d}");
    }
    let mut body = web_client();
    body["ssf.enabled"] = json!("true");
    body["service_accounts_enabled"] = json!(true);
    let c = app.register(&body).await;
    let read: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    assert!(read.get("ssf.enabled").is_none());
    assert!(read.get("service_accounts_enabled").is_none());
}

#[tokio::test]
async fn scopes_outside_the_allowlist_are_refused_on_registration_and_on_update() {
    let app = spawn_app_with(|s| {
        s.with("metadata.scopes_supported", vec!["openid", "profile"])
            .unwrap()
    })
    .await;
    let mut body = web_client();
    body["scope"] = json!("admin openid");
    let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("scope"), "{d}");
    // B34: an update cannot widen what registration would refuse
    body["scope"] = json!("openid");
    let c = app.register(&body).await;
    let mut update: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    update["scope"] = json!("openid admin");
    let d = assert_error(
        app.put_client(&uri(&c), &rat(&c), &update).await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(d.contains("scope"), "{d}");
    // and the refused update changed nothing: same token, same scope
    let read: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["scope"], "openid");
}

#[tokio::test]
async fn odd_client_id_paths_get_the_same_401() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    for id in ["%00", "..%2f..%2fetc", "%ff%fe", &"x".repeat(4096), "a%20b"] {
        let r = app
            .get_client(&format!("{}/{id}", app.endpoint), &rat(&c))
            .await;
        assert_error(r, 401, "invalid_token").await;
    }
    // None of these paths names an existing client, so the token is not revoked (a mistyped
    // URL must not lock the client out; issue #12 item 12).
    assert_eq!(app.get_client(&uri(&c), &rat(&c)).await.status(), 200);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn ambiguous_or_malformed_message_framing_is_refused_before_any_handler() {
    // Request-smuggling shapes: the HTTP/1 parser refuses them with a bare 400 (empty body,
    // nothing reflected) and closes, so no handler ever sees a body it might frame differently.
    let app = spawn_app().await;
    let body = web_client().to_string();
    let n = body.len();
    for head in [
        "Content-Length: -1\r\n".to_owned(),
        "Content-Length: abc\r\n".to_owned(),
        format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 1),
        format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
        "Transfer-Encoding: gzip, chunked\r\n".to_owned(),
    ] {
        let request = format!(
            "POST /register HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{head}\r\n{body}",
            host(&app)
        );
        let response = raw(&app, request.as_bytes(), Duration::from_secs(3)).await;
        let (status, _) = parse(&response);
        assert_eq!(status, 400, "{head:?}: {response}");
        let (_, rest) = response.split_once("\r\n\r\n").unwrap();
        assert!(rest.is_empty(), "{head:?}: {rest}");
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn update_bodies_get_the_same_hygiene_as_registration_bodies() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let put_raw = |body: Vec<u8>| {
        app.client
            .put(uri(&c))
            .header(AUTHORIZATION, format!("Bearer {}", rat(&c)))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };
    let over = format!("{{\"client_name\":\"{}\"}}", "a".repeat(70 * 1024));
    assert_error(
        put_raw(over.into_bytes()).await.unwrap(),
        413,
        "invalid_request",
    )
    .await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert_error(
        put_raw(deep.into_bytes()).await.unwrap(),
        400,
        "invalid_client_metadata",
    )
    .await;
    let duplicate = format!(
        r#"{{"client_id":"{}","redirect_uris":["https://a.example/cb"],"redirect_uris":["https://b.example/cb"]}}"#,
        c["client_id"].as_str().unwrap()
    );
    assert_error(
        put_raw(duplicate.into_bytes()).await.unwrap(),
        400,
        "invalid_client_metadata",
    )
    .await;
    assert_error(
        put_raw(b"null".to_vec()).await.unwrap(),
        400,
        "invalid_client_metadata",
    )
    .await;
    // none of that changed the registration or spent the token
    let r = app.get_client(&uri(&c), &rat(&c)).await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["redirect_uris"], c["redirect_uris"]);
}
