//! `POST /v1/events` in-process, over a memory sink.

use super::*;
use crate::api::app;
use crate::api::testing::{post, post_to, state, EV};
use axum::body::Body;
use http::Request;
use std::sync::atomic::Ordering;
use tower::ServiceExt;
use trailhouse_schemas::retention::RetentionPolicy;

#[test]
fn only_events_that_will_be_stored_are_admitted() {
    let now = chrono::Utc::now();
    let at = |days: i64| AuditEvent {
        created_at: now - chrono::Duration::days(days),
        ..trailhouse_schemas::examples::all().remove(0)
    };
    // (age in days, retention, backfill horizon, admitted)
    let cases = [
        (0, 90, None, true),
        (89, 90, None, true),
        (91, 90, None, false),
        (400, 365, None, false),
        (20_000, 2555, None, false),
        (40, 90, Some(30), false),
        (20, 90, Some(30), true),
        (100, 365, Some(400), true),
    ];
    for (age, retention, backfill, ok) in cases {
        let r = retained(&at(age), retention, backfill, now);
        assert_eq!(
            r.is_ok(),
            ok,
            "{age} days, {retention}, {backfill:?}: {r:?}"
        );
        if let Err(e) = r {
            assert_eq!(e.field, "created_at");
        }
    }
}

#[tokio::test]
async fn an_event_over_the_message_limit_is_refused_whole_with_its_index() {
    let (s, sink) = crate::api::testing::state_with(|l| l.max_message_bytes = 1024);
    let big = format!(
        r#"{{"org_id":"acme","action":{{"type":"user.login"}},"metadata":{{"note":"{}"}}}}"#,
        "x".repeat(1500)
    );
    let body = format!("[{EV},{big},{EV}]");
    let (st, resp) = post(&s, Some("acme-key"), "application/json", body).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_eq!(resp["error"]["code"], "event_too_large");
    assert_eq!(resp["error"]["details"][0]["index"], 1);
    assert!(sink.taken().is_empty(), "nothing is published");
    assert!(
        s.health.is_ready(),
        "a request's own size never flips readiness"
    );
    // Under the limit, the same shape goes through.
    let body = format!("[{EV},{EV}]");
    let (st, resp) = post(&s, Some("acme-key"), "application/json", body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{resp}");
}

#[tokio::test]
async fn accepts_one_event_array_and_ndjson() {
    let (s, sink) = state();
    let (st, body) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 1);
    let (st, _) = post(
        &s,
        Some("acme-key"),
        "application/json",
        format!("[{EV},{EV}]"),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, body) = post(
        &s,
        Some("acme-key"),
        "application/x-ndjson",
        format!("{EV}\n\n{EV}\n"),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(sink.taken().len(), 5);
}

#[tokio::test]
async fn events_carry_their_orgs_retention_class_not_the_clients() {
    let (s, sink) = state();
    let mut st = Arc::try_unwrap(s).ok().expect("sole owner");
    st.retention = RetentionPolicy::parse(30, "acme=365").expect("policy");
    let s = Arc::new(st);
    let globex = r#"{"org_id":"globex","action":{"type":"user.login"}}"#;
    let (code, body) = post(
        &s,
        Some("gw-key"),
        "application/json",
        format!("[{EV},{globex}]"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let days: Vec<Option<u16>> = sink.taken().iter().map(|e| e.retention_days).collect();
    assert_eq!(days, vec![Some(365), Some(30)]);
}

#[tokio::test]
async fn invalid_batches_are_rejected_whole_with_indexes() {
    let (s, sink) = state();
    let bad = r#"{"org_id":"acme","action":{}}"#;
    let (st, body) = post(
        &s,
        Some("acme-key"),
        "application/json",
        format!("[{EV},{bad}]"),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_events");
    assert_eq!(
        body["error"]["details"],
        json!([{"index": 1, "field": "action.type", "reason": "is required"}])
    );
    assert!(sink.taken().is_empty());
}

#[tokio::test]
async fn a_repeated_id_in_one_request_is_refused_with_both_indexes() {
    // A v4 id: a v7 id would also give the events its (old) time.
    let id = "6f1c2a3b-4d5e-4f60-8a7b-8c9d0e1f2a3b";
    let with_id = EV.replacen('{', &format!("{{\"id\":\"{id}\","), 1);
    let other_org = with_id.replace("acme", "globex");
    // (body, partial, status, rejected indexes)
    let cases = [
        (
            format!("[{with_id},{EV},{with_id}]"),
            false,
            StatusCode::BAD_REQUEST,
            vec![2],
        ),
        (
            format!("[{with_id},{with_id}]"),
            true,
            StatusCode::ACCEPTED,
            vec![1],
        ),
        // The same id in another org is another event.
        (
            format!("[{with_id},{other_org}]"),
            false,
            StatusCode::ACCEPTED,
            vec![],
        ),
    ];
    for (body, partial, status, rejected) in cases {
        let (s, sink) = state();
        let uri = if partial {
            "/v1/events?partial=true"
        } else {
            "/v1/events"
        };
        let (st, resp) = post_to(&s, uri, Some("gw-key"), "application/json", body).await;
        assert_eq!(st, status, "{resp}");
        let details = if partial {
            &resp["rejected"]
        } else {
            &resp["error"]["details"]
        };
        let got: Vec<u64> = details
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["index"].as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(got, rejected, "{resp}");
        if st == StatusCode::BAD_REQUEST {
            assert_eq!(details[0]["field"], "id");
            assert!(
                details[0]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("event 0"),
                "{resp}"
            );
            assert!(sink.taken().is_empty());
        }
    }
}

#[tokio::test]
async fn service_keys_write_any_org() {
    let (s, sink) = state();
    let (st, _) = post(
        &s,
        Some("gw-key"),
        "application/json",
        EV.replace("acme", "globex"),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(sink.taken()[0].org_id, "globex");
}

#[tokio::test]
async fn partial_mode_accepts_the_valid_events_and_lists_the_rest() {
    let (s, sink) = state();
    let bad = r#"{"org_id":"acme","action":{}}"#;
    let foreign = EV.replace("acme", "globex");
    let (st, body) = post_to(
        &s,
        "/v1/events?partial=true",
        Some("acme-key"),
        "application/json",
        format!("[{EV},{bad},{foreign}]"),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["errors"][0]["field"], "action.type");
    assert_eq!(body["rejected"][1]["index"], 2);
    assert_eq!(body["rejected"][1]["errors"][0]["field"], "org_id");
    assert_eq!(sink.taken().len(), 1);
    assert_eq!(body["ids"][0], sink.taken()[0].id.to_string());
    // Nothing valid: still a 400, nothing published.
    let req = |q: &str| {
        Request::post(format!("/v1/events{q}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer acme-key")
            .body(Body::from(format!("[{bad}]")))
            .expect("request")
    };
    let resp = app(s.clone())
        .oneshot(req("?partial=true"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app(s.clone())
        .oneshot(req("?partial=maybe"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app(s.clone())
        .oneshot(req("?partail=true"))
        .await
        .expect("response");
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "unknown parameters are errors"
    );
    assert_eq!(sink.taken().len(), 1);
}

#[tokio::test]
async fn events_are_redacted_and_carry_the_trace_context() {
    let (s, sink) = state();
    let ev = r#"{"org_id":"acme","action":{"type":"user.login"},
        "request":{"headers":{"Authorization":"Bearer sekrit","Accept":"*/*"},
                   "query":{"api_key":"k1"},"body":"{\"password\":\"p1\"}"}}"#;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .header("authorization", "Bearer acme-key")
        .header("traceparent", tp)
        .body(Body::from(ev))
        .expect("request");
    let resp = app(s.clone()).oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let sent = sink.envelopes();
    assert_eq!(sent[0].traceparent(), Some(tp));
    let text = serde_json::to_string(sent[0].event()).expect("json");
    for secret in ["sekrit", "k1", "p1"] {
        assert!(!text.contains(secret), "{secret} reached the sink: {text}");
    }
    assert_eq!(sent[0].event().request.headers["Accept"], "*/*");
    // Encoded once, after redaction: what the producer sends is the event
    // as the sink sees it.
    assert!(sent[0].is_encoded(), "encoded by the handler");
    let expected = trailhouse_schemas::encode(sent[0].event()).expect("encodes");
    assert_eq!(
        sent[0].payload().expect("kept").as_ref(),
        expected.as_slice()
    );
}

#[tokio::test]
async fn not_ready_refuses_at_once_after_validating() {
    let (s, sink) = state();
    s.broker_up.store(false, Ordering::Relaxed);
    let (st, body) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "unavailable");
    let (st, _) = post(&s, Some("acme-key"), "application/json", "{".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "bad input is still a 400");
    assert!(sink.taken().is_empty());
    // Draining (readiness off, broker up): requests in flight are served.
    s.broker_up.store(true, Ordering::Relaxed);
    s.health.set_ready(false);
    let (st, _) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    // A failed publish turns readiness off.
    s.broker_up.store(true, Ordering::Relaxed);
    s.health.set_ready(true);
    sink.fail_with_queue_full
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (st, _) = post(&s, Some("acme-key"), "application/json", EV.into()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!s.health.is_ready());
    assert!(!s.broker_up.load(Ordering::Relaxed));
}
