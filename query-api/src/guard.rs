//! What stands between an authenticated request and ClickHouse: the org's
//! rate limit (429 + `Retry-After` and the `RateLimit` headers), the org's
//! share of the service (at most `max_per_org` of its queries at once, 429),
//! and the service's own limit (at most `max_in_flight` queries at once,
//! 503 + `Retry-After`). One org's heavy queries therefore take at most its
//! share of the slots, and another org's request still finds one.
//!
//! The middleware verifies the token once and hands the claims to the
//! handler; a request without a valid token goes on untouched, and the
//! handler refuses it in its dialect's shape (and counts it). Refusals take
//! the shape of the dialect the path belongs to. The slots are held until
//! the response body is sent, so a streamed export holds its slot while it
//! streams.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trailhouse_common::ratelimit::{Decision, OrgRateLimiter};

use crate::error::{ApiError, Shape};
use crate::state::Shared;
use crate::store::EventStore;

/// The limits of the guard, shared by every request.
pub struct Guard {
    pub rate: OrgRateLimiter,
    in_flight: Arc<Semaphore>,
    per_org: Arc<OrgSlots>,
}

impl Guard {
    pub fn new(rate: OrgRateLimiter, max_in_flight: usize, max_per_org: usize) -> Self {
        Guard {
            rate,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            per_org: Arc::new(OrgSlots {
                max: max_per_org.max(1),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admits one request of `org`, or says why not.
    pub fn admit(&self, org: &str) -> Result<(Decision, Held), (Decision, ApiError)> {
        let decision = self.rate.check(org);
        if decision.is_limited() {
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
            let retry_after = decision.retry_after_secs();
            return Err((decision, ApiError::RateLimited { retry_after }));
        }
        let Some(org_slot) = OrgSlots::take(&self.per_org, org) else {
            metrics::counter!(crate::metrics::ORG_BUSY).increment(1);
            return Err((decision, ApiError::OrgBusy));
        };
        let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::OVERLOADED).increment(1);
            return Err((decision, ApiError::Overloaded));
        };
        Ok((
            decision,
            Held {
                _slot: slot,
                _org: org_slot,
            },
        ))
    }
}

/// How many queries each org has running; an org without any has no entry.
struct OrgSlots {
    max: usize,
    running: Mutex<HashMap<String, usize>>,
}

impl OrgSlots {
    fn take(this: &Arc<Self>, org: &str) -> Option<OrgSlot> {
        let mut running = this.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(org.to_string()).or_insert(0);
        if *n >= this.max {
            return None;
        }
        *n += 1;
        Some(OrgSlot {
            slots: this.clone(),
            org: org.to_string(),
        })
    }
}

/// One running query of an org; gives its slot back when dropped.
struct OrgSlot {
    slots: Arc<OrgSlots>,
    org: String,
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.org);
            }
        }
    }
}

/// The slots a request holds until its response is sent.
pub struct Held {
    _slot: OwnedSemaphorePermit,
    _org: OrgSlot,
}

/// The error shape of the dialect a path belongs to.
pub fn shape_of(path: &str) -> Shape {
    if path.starts_with("/v1alpha/") {
        Shape::Torq
    } else if path.starts_with("/api/v2/") {
        Shape::Zendesk
    } else {
        Shape::Native
    }
}

/// The middleware (see the module documentation).
pub async fn guard<S: EventStore>(
    State(state): State<Shared<S>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Ok(claims) = state.verifier.verify_header(token) else {
        return next.run(request).await;
    };
    trailhouse_common::access::identify(
        request.extensions(),
        trailhouse_common::access::Caller {
            org: Some(claims.org_id.clone()),
            kind: "jwt",
            name: Some(claims.sub.clone()),
            ..Default::default()
        },
    );
    let shape = shape_of(request.uri().path());
    let admitted = state.guard.admit(&claims.org_id);
    request.extensions_mut().insert(claims);
    match admitted {
        Err((decision, e)) => {
            let mut resp = e.shaped(shape).into_response();
            decision.write_headers(resp.headers_mut());
            resp
        }
        Ok((decision, held)) => {
            let mut resp = next.run(request).await;
            decision.write_headers(resp.headers_mut());
            resp.map(|body| Body::new(HeldBody { body, _held: held }))
        }
    }
}

/// A body that holds the request's slots until it is sent or dropped.
struct HeldBody {
    body: Body,
    _held: Held,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orgs_share_the_service_and_slots_come_back() {
        let g = Guard::new(OrgRateLimiter::unlimited(), 3, 2);
        let a1 = g.admit("a").ok();
        let a2 = g.admit("a").ok();
        assert!(a1.is_some() && a2.is_some());
        assert!(
            matches!(g.admit("a"), Err((_, ApiError::OrgBusy))),
            "a's share"
        );
        let b = g.admit("b").ok();
        assert!(b.is_some(), "another org still gets a slot");
        assert!(
            matches!(g.admit("c"), Err((_, ApiError::Overloaded))),
            "the service is full"
        );
        drop(a1);
        assert!(g.admit("a").is_ok(), "a slot came back");
        drop((a2, b));
        assert!(g.per_org.running.lock().map(|m| m.len()).unwrap_or(9) <= 1);
    }

    #[test]
    fn a_spent_rate_is_429_with_its_wait() {
        let rate = OrgRateLimiter::new(
            "1/min"
                .parse()
                .unwrap_or(trailhouse_common::ratelimit::RateSetting(None)),
            &Default::default(),
        );
        let g = Guard::new(rate, 10, 10);
        assert!(g.admit("a").is_ok());
        match g.admit("a") {
            Err((d, ApiError::RateLimited { retry_after })) => {
                assert!(d.is_limited());
                assert!((59..=60).contains(&retry_after), "{retry_after}");
            }
            _ => panic!("not limited"),
        }
        assert!(g.admit("b").is_ok(), "per org");
    }

    #[test]
    fn paths_have_their_dialects_shape() {
        for (path, shape) in [
            ("/v1alpha/audit_logs", Shape::Torq),
            ("/api/v2/audit_logs/x", Shape::Zendesk),
            ("/api/v1/organizations/o/audit-logs", Shape::Native),
            ("/v1/events", Shape::Native),
            ("/audit-log", Shape::Native),
        ] {
            assert_eq!(shape_of(path), shape, "{path}");
        }
    }
}
