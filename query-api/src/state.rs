//! What every handler shares: the state of the service, the bearer-token
//! extractor and the base of absolute URLs (from forwarded headers only
//! when the peer is a trusted proxy). Dialects depend on this module, never
//! on the router.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::Router;
use trailhouse_common::health::Health;

use crate::access::Access;
use crate::auth::{Claims, Verifier};
use crate::config::TrustedProxies;
use crate::cursor::CursorCodec;
use crate::error::ApiError;
use crate::guard::Guard;
use crate::store::EventStore;

/// Shared state of the handlers.
pub struct AppState<S> {
    pub store: S,
    pub verifier: Verifier,
    pub cursors: CursorCodec,
    pub access: Access,
    pub health: Health,
    /// Base of the absolute URLs in responses (e.g. `https://audit.example.com`);
    /// taken from the request's `Host` / `X-Forwarded-*` headers when unset.
    pub public_url: Option<String>,
    /// Peers whose `X-Forwarded-Proto` / `X-Forwarded-Host` are believed.
    pub trusted_proxies: TrustedProxies,
    /// The most bytes of events one page (or one export chunk) reads.
    pub max_page_bytes: usize,
    /// Rate limits and query slots.
    pub guard: Guard,
    /// Whether `/ui/` serves the viewer.
    pub viewer: bool,
    /// Origins whose pages may call the API from a browser (CORS).
    pub cors_origins: Vec<String>,
}

/// The state as handlers receive it.
pub type Shared<S> = Arc<AppState<S>>;

/// The routes of one dialect, before the state is attached.
pub type Routes<S> = Router<Shared<S>>;

impl<S> AppState<S> {
    /// The base of absolute URLs, without a trailing slash: the configured
    /// public URL, else the request's; the forwarded headers count only
    /// when the request came from a trusted proxy (`peer`).
    pub fn base_url(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_string();
        }
        let forwarded = peer.is_some_and(|ip| self.trusted_proxies.contains(ip));
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        // Only the two schemes an API answers on, and only a host name or
        // address with an optional port: anything else in a forwarded
        // header is ignored, so it cannot turn a link into `javascript:` or
        // point it elsewhere with a path or userinfo.
        let proto = h("x-forwarded-proto")
            .filter(|_| forwarded)
            .map(str::to_ascii_lowercase)
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| "http".into());
        let host = h("x-forwarded-host")
            .filter(|v| forwarded && is_host(v))
            .or_else(|| h("host").filter(|v| is_host(v)))
            .unwrap_or("localhost");
        format!("{proto}://{host}")
    }
}

/// `name[:port]` or `[v6]:port`: letters, digits, `.`, `-`, `:`, `[`, `]`.
fn is_host(v: &str) -> bool {
    v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
impl AppState<crate::store::StaticStore> {
    /// A state over `store` that verifies HS256 tokens signed with `k`.
    pub(crate) fn for_tests(store: crate::store::StaticStore, public_url: Option<&str>) -> Self {
        AppState {
            store,
            verifier: Verifier::hs256(b"k").expect_issuer_audience(None, None),
            cursors: CursorCodec::new("c"),
            access: Access::default(),
            health: Health::new(),
            public_url: public_url.map(String::from),
            trusted_proxies: TrustedProxies::default(),
            max_page_bytes: usize::MAX,
            guard: Guard::new(
                trailhouse_common::ratelimit::OrgRateLimiter::unlimited(),
                64,
                64,
            ),
            viewer: true,
            cors_origins: Vec::new(),
        }
    }
}

/// The base of absolute URLs of a request ([`AppState::base_url`]).
pub struct BaseUrl(pub String);

impl<S: EventStore> FromRequestParts<Shared<S>> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared<S>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(BaseUrl(state.base_url(&parts.headers, peer)))
    }
}

/// The verified bearer token of a request. A missing or invalid token is
/// rejected with 401 in the native error shape; dialects with their own
/// shape take `Result<Claims, ApiError>` and shape the error themselves.
impl<S: EventStore> FromRequestParts<Shared<S>> for Claims {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared<S>) -> Result<Self, ApiError> {
        // Verified once already by the guard, when it let the request in.
        if let Some(c) = parts.extensions.get::<Claims>() {
            return Ok(c.clone());
        }
        let h = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Logged and counted with the reason, never the token.
        Ok(state.verifier.verify_header(h).inspect_err(|e| {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => e.reason()).increment(1);
            trailhouse_common::access::auth_failed(&parts.extensions, &e.to_string(), "jwt");
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint_hs256;
    use crate::store::StaticStore;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;

    fn state(public_url: Option<&str>) -> Shared<StaticStore> {
        Arc::new(AppState::for_tests(StaticStore::default(), public_url))
    }

    async fn extract(auth: Option<&str>) -> Result<Claims, ApiError> {
        let mut req = Request::get("/");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (mut parts, ()) = req.body(()).expect("request").into_parts();
        Claims::from_request_parts(&mut parts, &state(None)).await
    }

    #[tokio::test]
    async fn the_extractor_verifies_the_bearer_token() {
        let claims = Claims {
            sub: "u".into(),
            org_id: "o".into(),
            environment_id: None,
            workspace_id: None,
            roles: vec![],
            permissions: vec![],
            exp: chrono::Utc::now().timestamp() + 600,
            iat: 0,
        };
        let t = mint_hs256(b"k", &claims).expect("mint");
        assert_eq!(
            extract(Some(&format!("Bearer {t}"))).await.expect("claims"),
            claims
        );
        for bad in [None, Some("Bearer nope"), Some(t.as_str())] {
            let e = extract(bad).await.expect_err("refused");
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
    }

    fn trusting(cidrs: &str) -> Shared<StaticStore> {
        let mut s = AppState::for_tests(StaticStore::default(), None);
        s.trusted_proxies = cidrs.parse().expect("cidrs");
        Arc::new(s)
    }

    const PROXY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)));

    #[test]
    fn base_urls_come_from_the_config_or_the_request() {
        let mut h = HeaderMap::new();
        let proxied = trusting("10.0.0.0/8");
        assert_eq!(proxied.base_url(&h, PROXY), "http://localhost");
        h.insert("host", "api.local:8081".parse().expect("header"));
        assert_eq!(proxied.base_url(&h, PROXY), "http://api.local:8081");
        h.insert("x-forwarded-proto", "https, http".parse().expect("header"));
        h.insert(
            "x-forwarded-host",
            "audit.example.com".parse().expect("header"),
        );
        assert_eq!(proxied.base_url(&h, PROXY), "https://audit.example.com");
        let configured = state(Some("https://a.example.com/"));
        assert_eq!(configured.base_url(&h, PROXY), "https://a.example.com");
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("host", "api.local".parse().expect("header"));
        h.insert("x-forwarded-proto", "https".parse().expect("header"));
        h.insert("x-forwarded-host", "evil.example".parse().expect("header"));
        let other: Option<IpAddr> = "192.168.1.1".parse().ok();
        // (trusted, peer, base url)
        let cases = [
            ("", PROXY, "http://api.local"),
            ("10.0.0.0/8", PROXY, "https://evil.example"),
            ("10.0.0.0/8", other, "http://api.local"),
            ("10.0.0.0/8", None, "http://api.local"),
            ("10.0.0.7/32, ::1/128", PROXY, "https://evil.example"),
        ];
        for (cidrs, peer, want) in cases {
            assert_eq!(trusting(cidrs).base_url(&h, peer), want, "{cidrs} {peer:?}");
        }
    }

    #[test]
    fn forwarded_headers_cannot_change_the_scheme_or_smuggle_a_url() {
        // (forwarded proto, forwarded host, base url)
        let cases = [
            ("javascript", "evil.example", "http://evil.example"),
            (
                "HTTPS",
                "audit.example.com:8443",
                "https://audit.example.com:8443",
            ),
            ("https", "evil.example/x?y=", "https://api.local"),
            ("https", "user:pw@evil.example", "https://api.local"),
            ("data", "[::1]:8081", "http://[::1]:8081"),
        ];
        for (proto, host, want) in cases {
            let mut h = HeaderMap::new();
            h.insert("host", "api.local".parse().expect("header"));
            h.insert("x-forwarded-proto", proto.parse().expect("header"));
            h.insert("x-forwarded-host", host.parse().expect("header"));
            let s = trusting("10.0.0.0/8");
            assert_eq!(s.base_url(&h, PROXY), want, "{proto} {host}");
        }
    }
}
