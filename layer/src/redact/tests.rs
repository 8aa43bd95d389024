//! Table-driven cases: which names are credential-shaped, and what each
//! place in an event looks like after redaction.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use trailhouse_schemas::event::Request;

use super::*;

fn request(body: &str) -> Request {
    Request {
        url: Some("https://x.test/login?user=bo&access_token=abc123&page=2#top".into()),
        query: json!({"user": "bo", "filter": {"apiKey": "k-1", "q": "x"}, "Token": "t-2"})
            .as_object()
            .cloned(),
        headers: BTreeMap::from([
            ("Authorization".to_string(), "Bearer sekrit".to_string()),
            ("Cookie".to_string(), "sid=s3".to_string()),
            ("X-Api-Key".to_string(), "k-3".to_string()),
            ("X-Trace".to_string(), "tr-1".to_string()),
            ("Accept".to_string(), "application/json".to_string()),
        ]),
        body: Some(body.to_string()),
        ..Request::default()
    }
}

#[test]
fn defaults_mask_every_listed_key_everywhere() {
    let r = Redactor::default();
    let mut rq = request(
        r#"{"user":"bo","password":"hunter2","nested":[{"client_secret":"cs","ok":1}],"auth":{"refresh_token":{"v":"rt"}}}"#,
    );
    r.apply_request(&mut rq);
    let text = serde_json::to_string(&rq).expect("json");
    for secret in [
        "sekrit", "s3", "k-1", "k-2", "k-3", "t-2", "abc123", "hunter2", "cs", "rt",
    ] {
        assert!(!text.contains(secret), "{secret} survived: {text}");
    }
    assert_eq!(rq.headers["Accept"], "application/json");
    assert_eq!(rq.headers["Authorization"], MASK);
    assert_eq!(
        rq.url.as_deref(),
        Some("https://x.test/login?user=bo&access_token=%5BREDACTED%5D&page=2#top")
    );
    let body: Value = serde_json::from_str(rq.body.as_deref().unwrap_or("")).expect("body");
    assert_eq!(body["user"], "bo");
    assert_eq!(body["nested"][0]["ok"], 1);
    assert_eq!(body["auth"], MASK, "an `auth` object is masked whole");
    assert_eq!(
        rq.query.as_ref().map(|q| q["filter"]["q"].clone()),
        Some(json!("x"))
    );
}

#[test]
fn drop_rules_and_scopes() {
    let r = Redactor::parse(
        "drop headers:accept, mask body:user, drop query:user",
        "keep",
    )
    .expect("rules");
    let mut rq = request(r#"{"user":"bo","password":"p"}"#);
    r.apply_request(&mut rq);
    assert!(!rq.headers.contains_key("Accept"));
    assert_eq!(rq.headers["X-Api-Key"], "k-3", "no default rules");
    assert_eq!(
        rq.headers["Authorization"], MASK,
        "a value with an authentication scheme is masked whatever the rules"
    );
    assert_eq!(
        rq.body.as_deref(),
        Some(r#"{"password":"p","user":"[REDACTED]"}"#)
    );
    assert_eq!(
        rq.query.as_ref().map(|q| q.contains_key("user")),
        Some(false)
    );
    assert_eq!(
        rq.url.as_deref(),
        Some("https://x.test/login?access_token=abc123&page=2#top")
    );
}

#[test]
fn form_and_opaque_bodies() {
    let r = Redactor::default();
    assert_eq!(
        r.body("user=bo&password=x%20y".into()),
        "user=bo&password=%5BREDACTED%5D"
    );
    assert_eq!(r.body("plain text with token=abc".into()), MASK);
    assert_eq!(r.body("{truncated json".into()), MASK);
    assert_eq!(r.body(String::new()), "");
    let keep = Redactor::parse("defaults", "keep").expect("rules");
    assert_eq!(keep.body("plain text".into()), "plain text");
    assert_eq!(
        keep.body("see https://u:pw@h.test/x".into()),
        "see https://%5BREDACTED%5D@h.test/x",
        "kept opaque bodies still have their URLs redacted"
    );
    let untouched = r#"{ "a": 1 }"#;
    assert_eq!(
        r.body(untouched.into()),
        untouched,
        "unchanged JSON keeps its bytes"
    );
    assert_eq!(Redactor::none().body("token=x".into()), "token=x");
}

/// Names the default rules mask, and names they keep.
#[test]
fn credential_shaped_names() {
    let r = Redactor::default();
    let masked = [
        // finding: headers
        "X-Forwarded-Authorization",
        "X-Authorization",
        "X-Session-Id",
        "X-Secret-Key",
        // finding: query keys
        "code",
        "X-Amz-Signature",
        "private_key",
        "sig",
        // earlier defaults
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "password",
        "new_password",
        "passwd",
        "token",
        "access_token",
        "refreshtoken",
        "client_secret",
        "api_key",
        "x-api-key",
        // name parts, any separator or camelCase
        "X-Auth-Token",
        "authCode",
        "sessionToken",
        "session",
        "SESSION_ID",
        "xAmzSignature",
        "X-Hub-Signature-256",
        "APIKey",
        "apiKeys",
        "privateKeyPem",
        "aws_access_key_id",
        "AWSSecretAccessKey",
        "secretkey",
        "sessionid",
        "X-Amz-Credential",
        "credentials",
        "otp",
        "totp_code",
        "mfa_code",
        "verification_code",
        "recovery_codes",
        "X-CSRF-Token",
        "xsrf",
        "id_jwt",
        "SAMLResponse",
        "client_assertion",
        "db_pass",
        "pwd",
        "passphrase",
        "my.secret.value",
        "cookies",
        "X-Custom-Cookie",
        "Code",
    ];
    for name in masked {
        assert!(
            r.action(Scope::Headers, name).is_some()
                && r.action(Scope::Query, name).is_some()
                && r.action(Scope::Body, name).is_some()
                && r.action(Scope::Metadata, name).is_some()
                && r.action(Scope::Path, name).is_some(),
            "{name} should be masked everywhere"
        );
    }
    let kept = [
        "keyboard",
        "monkey",
        "key_id",
        "keyName",
        "status_code",
        "country_code",
        "zip-code",
        "author",
        "authority",
        "oauth_provider",
        "passenger",
        "compass",
        "design",
        "signed_headers",
        "max_tokens",
        "tokens_used",
        "sessions",
        "user",
        "email",
        "page",
        "Accept",
        "User-Agent",
        "Content-Type",
        "X-Request-Id",
        "WWW-Authenticate",
        "Referer",
        "codec",
        "zipcode",
    ];
    for name in kept {
        assert_eq!(r.action(Scope::Body, name), None, "{name} should be kept");
    }
}

fn with(f: impl FnOnce(&mut Request)) -> Request {
    let mut rq = Request::default();
    f(&mut rq);
    Redactor::default().apply_request(&mut rq);
    rq
}

/// URLs wherever they appear: userinfo, fragments, matrix parameters,
/// query strings in `path`, URLs inside values.
#[test]
fn urls_paths_and_values() {
    let cases: &[(&str, &str, &str)] = &[
        // (field, input, expected)
        (
            "url",
            "https://user:pw@host.test/a?b=1",
            "https://%5BREDACTED%5D@host.test/a?b=1",
        ),
        (
            "url",
            "https://tok@host.test",
            "https://%5BREDACTED%5D@host.test",
        ),
        (
            "url",
            "https://app.test/cb#access_token=at-1&token_type=bearer&state=s",
            "https://app.test/cb#access_token=%5BREDACTED%5D&token_type=%5BREDACTED%5D&state=s",
        ),
        (
            "url",
            "https://app.test/#/reset?token=t-1&x=y",
            "https://app.test/#/reset?token=%5BREDACTED%5D&x=y",
        ),
        (
            "url",
            "https://app.test/a#section-2",
            "https://app.test/a#section-2",
        ),
        (
            "url",
            "https://app.test/files;jsessionid=j-1;v=2/x;password=p-1",
            "https://app.test/files;jsessionid=%5BREDACTED%5D;v=2/x;password=%5BREDACTED%5D",
        ),
        (
            "url",
            "https://app.test/?code=c-1&X-Amz-Signature=s-1&private_key=k-1&sig=g-1&state=ok",
            "https://app.test/?code=%5BREDACTED%5D&X-Amz-Signature=%5BREDACTED%5D\
             &private_key=%5BREDACTED%5D&sig=%5BREDACTED%5D&state=ok",
        ),
        (
            "url",
            "https://app.test/login?next=https%3A%2F%2Fu%3Ap%40b.test%2Fcb%3Fcode%3Dc-2",
            "https://app.test/login?next=https%3A%2F%2F%255BREDACTED%255D%40b.test%2Fcb%3Fcode%3D%255BREDACTED%255D",
        ),
        (
            "path",
            "/login?password=p-2&user=bo",
            "/login?password=%5BREDACTED%5D&user=bo",
        ),
        ("path", "/a;password=p-3/b", "/a;password=%5BREDACTED%5D/b"),
        ("path", "/projects/p-1", "/projects/p-1"),
        (
            "header",
            "https://u:p@ref.test/x?token=t-3",
            "https://%5BREDACTED%5D@ref.test/x?token=%5BREDACTED%5D",
        ),
        ("header", "Bearer abc", MASK),
        ("header", "basic dXNlcjpwdw==", MASK),
        ("header", "bearer", "bearer"),
    ];
    for (field, input, want) in cases {
        let rq = with(|rq| match *field {
            "url" => rq.url = Some(input.to_string()),
            "path" => rq.path = Some(input.to_string()),
            _ => {
                rq.headers.insert("Referer".into(), input.to_string());
            }
        });
        let got = match *field {
            "url" => rq.url.clone().unwrap_or_default(),
            "path" => rq.path.clone().unwrap_or_default(),
            _ => rq.headers["Referer"].clone(),
        };
        assert_eq!(got, *want, "{field} {input}");
    }
}

#[test]
fn path_params_by_name_also_in_the_path_and_url() {
    let rq = with(|rq| {
        rq.path = Some("/reset/rt-1/step/2".into());
        rq.url = Some("https://app.test/reset/rt-1/step/2?x=1".into());
        rq.path_params = BTreeMap::from([
            ("token".to_string(), "rt-1".to_string()),
            ("step".to_string(), "2".to_string()),
        ]);
    });
    assert_eq!(rq.path_params["token"], MASK);
    assert_eq!(rq.path_params["step"], "2");
    assert_eq!(rq.path.as_deref(), Some("/reset/%5BREDACTED%5D/step/2"));
    assert_eq!(
        rq.url.as_deref(),
        Some("https://app.test/reset/%5BREDACTED%5D/step/2?x=1")
    );
    let rq = with(|rq| {
        rq.path = Some("/files/a/b%20c".into());
        rq.path_params = BTreeMap::from([
            ("secret".to_string(), "b c".to_string()),
            ("rest_key".to_string(), "x/y".to_string()),
        ]);
    });
    assert_eq!(rq.path.as_deref(), Some("/files/a/%5BREDACTED%5D"));
    let rq = with(|rq| {
        rq.path = Some("/k/x/y/z".into());
        rq.path_params = BTreeMap::from([("rest_key".to_string(), "x/y".to_string())]);
    });
    assert_eq!(rq.path.as_deref(), Some("/k/%5BREDACTED%5D/z"));
    let drop = Redactor::parse("drop path:token", "mask").expect("rules");
    let mut rq = Request {
        path: Some("/reset/rt-2".into()),
        path_params: BTreeMap::from([("token".to_string(), "rt-2".to_string())]),
        ..Request::default()
    };
    drop.apply_request(&mut rq);
    assert!(rq.path_params.is_empty());
    assert_eq!(rq.path.as_deref(), Some("/reset/%5BREDACTED%5D"));
}

#[test]
fn json_inside_strings_and_metadata() {
    let r = Redactor::default();
    let inner = json!({"password": "p-1", "ok": "yes"}).to_string();
    let twice = json!({"wrapped": json!({"token": "t-1"}).to_string()}).to_string();
    let body = json!({"data": inner, "deep": twice, "form": "a=1&secret=s-1", "n": 1}).to_string();
    let out: Value = serde_json::from_str(&r.body(body)).expect("json");
    let data: Value = serde_json::from_str(out["data"].as_str().unwrap_or("")).expect("inner");
    assert_eq!(data, json!({"password": MASK, "ok": "yes"}));
    assert!(!out.to_string().contains("t-1"), "{out}");
    assert_eq!(out["form"], "a=1&secret=%5BREDACTED%5D");
    assert_eq!(out["n"], 1);

    // Deeper than MAX_NESTING: the string is masked whole.
    let mut deep = json!({"password": "p-deep"});
    for _ in 0..=MAX_NESTING {
        deep = json!({ "v": deep.to_string() });
    }
    let out = r.body(deep.to_string());
    assert!(!out.contains("p-deep"), "{out}");
    assert!(out.contains(MASK), "{out}");

    let mut metadata = BTreeMap::from([
        ("session_id".to_string(), "s-1".to_string()),
        (
            "callback".to_string(),
            "https://u:pw@cb.test/?sig=g-1".to_string(),
        ),
        ("payload".to_string(), json!({"apiKey": "k-1"}).to_string()),
        ("note".to_string(), "{\"password\": \"cut sh".to_string()),
        ("plan".to_string(), "pro".to_string()),
    ]);
    r.apply_metadata(&mut metadata);
    assert_eq!(metadata["session_id"], MASK);
    assert_eq!(
        metadata["callback"],
        "https://%5BREDACTED%5D@cb.test/?sig=%5BREDACTED%5D"
    );
    assert_eq!(metadata["payload"], json!({"apiKey": MASK}).to_string());
    assert_eq!(metadata["note"], MASK, "broken JSON is masked whole");
    assert_eq!(metadata["plan"], "pro");

    let scoped = Redactor::parse("mask metadata:plan", "mask").expect("rules");
    let mut metadata = BTreeMap::from([("plan".to_string(), "pro".to_string())]);
    scoped.apply_metadata(&mut metadata);
    assert_eq!(metadata["plan"], MASK);
}

#[test]
fn text_in_values_that_is_not_json_is_kept() {
    let r = Redactor::default();
    for s in [
        "[INFO] started",
        "{not json at all",
        "a note: x = y",
        "ftp:/not-a-url",
        "://",
        "1://x",
        "",
    ] {
        let body = json!({ "v": s }).to_string();
        assert_eq!(r.body(body.clone()), body, "{s:?}");
    }
}

#[test]
fn name_parts() {
    let cases = [
        (
            "X-Forwarded-Authorization",
            vec!["x", "forwarded", "authorization"],
        ),
        ("xAmzSignature", vec!["x", "amz", "signature"]),
        ("APIKey", vec!["api", "key"]),
        ("oauth2Token", vec!["oauth2", "token"]),
        ("my.secret_value", vec!["my", "secret", "value"]),
        ("SESSION_ID", vec!["session", "id"]),
        ("HTTPServer2", vec!["http", "server2"]),
        ("", vec![]),
        ("--", vec![]),
    ];
    for (name, want) in cases {
        assert_eq!(segments(name), want, "{name}");
    }
}

#[test]
fn keep_rules_make_exceptions_to_later_ones() {
    let r = Redactor::parse(
        "keep body:auth_type, keep ~*idempotency-key, defaults",
        "mask",
    )
    .expect("rules");
    let out = r.body(r#"{"auth_type":"jwt","auth_code":"c-1","Idempotency-Key":"i-1"}"#.into());
    assert_eq!(
        out,
        r#"{"Idempotency-Key":"i-1","auth_code":"[REDACTED]","auth_type":"jwt"}"#
    );
    let mut headers = BTreeMap::from([("auth_type".to_string(), "jwt".to_string())]);
    r.map(Scope::Headers, &mut headers, |_| false);
    assert_eq!(
        headers["auth_type"], MASK,
        "the keep rule is for bodies only"
    );
}

/// The first matching rule wins, whatever kind of pattern it has.
#[test]
fn rule_order_holds_across_pattern_kinds() {
    let cases = [
        ("mask ~*key, keep api_key", "api_key", Some(Action::Mask)),
        ("keep api_key, mask ~*key", "api_key", None),
        (
            "drop ~*session*, mask *sessionid",
            "X-Session-Id",
            Some(Action::Drop),
        ),
        (
            "mask *sessionid, drop ~*session*",
            "X-Session-Id",
            Some(Action::Mask),
        ),
        ("keep ~x-*, drop ~*secret*", "x-secret", None),
        ("drop ~*secret*, keep ~x-*", "x-secret", Some(Action::Drop)),
        ("mask ~*a-b, drop ~a-*", "a-b", Some(Action::Mask)),
        ("drop ~a-*, mask ~*a-b", "a-b", Some(Action::Drop)),
        ("mask ~a-*-b", "a-x-y-b", Some(Action::Mask)),
        ("mask ~a-*-b", "a-b-x", None),
    ];
    for (rules, key, want) in cases {
        let r = Redactor::parse(rules, "mask").expect("rules");
        assert_eq!(r.action(Scope::Body, key), want, "{rules}: {key}");
    }
}
