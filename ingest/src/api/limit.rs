//! The per-org rate limit of `POST /v1/events` (see
//! [`trailhouse_common::ratelimit`]): after authentication, keyed by the
//! API key's org, before the request takes an in-flight slot or its body is
//! read. Service keys (a platform's own gateway, writing for every org) are
//! not limited here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::sink::EventSink;

pub(super) async fn rate_limit<S: EventSink>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(Principal::Org(org)) = request.extensions().get::<Principal>() else {
        return next.run(request).await;
    };
    let decision = state.limits.rate_limit.check(org);
    let mut resp = if decision.is_limited() {
        metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
        let retry_after = decision.retry_after_secs();
        ApiError::RateLimited { retry_after }.into_response()
    } else {
        next.run(request).await
    };
    decision.write_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use crate::api::testing::{post, state_with, EV};
    use axum::http::StatusCode;
    use std::sync::Arc;
    use trailhouse_common::ratelimit::OrgRateLimiter;

    #[tokio::test]
    async fn an_org_over_its_rate_gets_429_and_service_keys_pass() {
        let (s, _) = state_with(|l| {
            l.rate_limit = Arc::new(OrgRateLimiter::new(
                "2/min"
                    .parse()
                    .unwrap_or(trailhouse_common::ratelimit::RateSetting(None)),
                &Default::default(),
            ))
        });
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let (st, b) = post(&s, Some("acme-key"), "application/json", EV.to_string()).await;
            statuses.push((st, b["error"]["code"].as_str().map(String::from)));
        }
        assert_eq!(statuses[0].0, StatusCode::ACCEPTED);
        assert_eq!(statuses[1].0, StatusCode::ACCEPTED);
        assert_eq!(
            statuses[2],
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited".into()))
        );
        let (st, _) = post(&s, Some("gw-key"), "application/json", EV.to_string()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "service keys are not limited");
    }
}
