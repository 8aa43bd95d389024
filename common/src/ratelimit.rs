//! Per-org rate limits, shared by ingest and the query API: one token
//! bucket per org (governor's GCRA, which behaves as a bucket that refills
//! one request every `period / count` and holds at most `burst`), a default
//! rate for every org and per-org overrides.
//!
//! Settings: a rate is `COUNT/UNIT[:BURST]` with `UNIT` one of `s`, `min`,
//! `hour` (e.g. `600/min`, WorkOS's per-org limit; `1750/hour`, GitHub's
//! GraphQL points per hour; `600/min:50` lets at most 50 through at once),
//! or `off`. The burst defaults to `COUNT`. Overrides are `org=RATE` pairs
//! separated by commas (`org_a=1200/min,org_b=off`).
//!
//! Answers follow draft-ietf-httpapi-ratelimit-headers-10 (September
//! 2025): `RateLimit-Policy: "org";q=COUNT;w=SECONDS` names the policy,
//! `RateLimit: "org";r=REMAINING;t=SECONDS` says how many requests may be
//! sent now and in how many seconds the bucket is full again; a refused
//! request also gets `Retry-After` (seconds until the next request is let
//! through).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;

use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// The `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The policy name in the headers: the limit is per organisation.
const POLICY: &str = "org";

/// How often an org may call: `count` requests per `per`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

/// A rate setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RateError(String);

impl Rate {
    fn quota(&self) -> Option<Quota> {
        let every = self.per.checked_div(self.count.get())?;
        Some(Quota::with_period(every)?.allow_burst(self.burst))
    }

    fn window_secs(&self) -> u64 {
        self.per.as_secs().max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "hour",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, ":{}", self.burst)?;
        }
        Ok(())
    }
}

/// A rate or `off` (no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

impl FromStr for RateSetting {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, RateError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateSetting(None));
        }
        let bad = || {
            RateError(format!(
                "rate {s:?} is not COUNT/UNIT[:BURST] (UNIT s, min or hour) or off"
            ))
        };
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match burst {
            None => count,
            Some(b) => b.trim().parse().map_err(|_| bad())?,
        };
        Ok(RateSetting(Some(Rate { count, per, burst })))
    }
}

/// Per-org overrides: `org=RATE` pairs separated by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateOverrides(pub BTreeMap<String, Option<Rate>>);

impl FromStr for RateOverrides {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, RateError> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (org, rate) = pair
                .split_once('=')
                .filter(|(o, _)| !o.trim().is_empty())
                .ok_or_else(|| RateError(format!("override {pair:?} is not org=RATE")))?;
            map.insert(org.trim().to_string(), rate.parse::<RateSetting>()?.0);
        }
        Ok(RateOverrides(map))
    }
}

type Keyed<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// What the limiter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The org has no limit.
    Unlimited,
    /// Let through; `remaining` more may follow at once.
    Allowed { rate: Rate, remaining: u32 },
    /// Refused; the next request is let through in `retry_after`.
    Limited { rate: Rate, retry_after: Duration },
}

impl Decision {
    pub fn is_limited(&self) -> bool {
        matches!(self, Decision::Limited { .. })
    }

    /// Whole seconds a refused client should wait (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Decision::Limited { retry_after, .. } => ceil_secs(*retry_after).max(1),
            _ => 0,
        }
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (nothing when unlimited).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let (rate, remaining, full_in) = match self {
            Decision::Unlimited => return,
            Decision::Allowed { rate, remaining } => {
                let missing = rate.burst.get().saturating_sub(*remaining);
                let every = rate.per.checked_div(rate.count.get()).unwrap_or_default();
                (rate, *remaining, ceil_secs(every.saturating_mul(missing)))
            }
            Decision::Limited { rate, retry_after } => (rate, 0, ceil_secs(*retry_after).max(1)),
        };
        let policy = format!("\"{POLICY}\";q={};w={}", rate.count, rate.window_secs());
        let current = format!("\"{POLICY}\";r={remaining};t={full_in}");
        for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, current)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One token bucket per org: a keyed limiter for each distinct rate, the
/// default rate's for every org without an override.
pub struct OrgRateLimiter<C: Clock = DefaultClock> {
    clock: C,
    default: Option<(Rate, Keyed<C>)>,
    overrides: BTreeMap<String, Option<(Rate, Keyed<C>)>>,
    checks: AtomicU64,
}

impl<C: Clock> fmt::Debug for OrgRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgRateLimiter")
            .field("default", &self.default.as_ref().map(|(r, _)| r))
            .field("overrides", &self.overrides.len())
            .finish()
    }
}

/// Every this many checks, buckets that are full again are forgotten, so
/// memory follows the orgs active in the last window.
const RETAIN_EVERY: u64 = 4096;

impl OrgRateLimiter<DefaultClock> {
    pub fn new(default: RateSetting, overrides: &RateOverrides) -> Self {
        Self::with_clock(default, overrides, DefaultClock::default())
    }

    /// A limiter that lets everything through.
    pub fn unlimited() -> Self {
        Self::new(RateSetting(None), &RateOverrides::default())
    }
}

impl<C: Clock + Clone> OrgRateLimiter<C> {
    pub fn with_clock(default: RateSetting, overrides: &RateOverrides, clock: C) -> Self {
        let keyed = |rate: Option<Rate>| {
            let rate = rate?;
            let quota = rate.quota()?;
            let limiter: Keyed<C> =
                RateLimiter::new(quota, DashMapStateStore::default(), clock.clone());
            Some((rate, limiter))
        };
        OrgRateLimiter {
            default: keyed(default.0),
            overrides: overrides
                .0
                .iter()
                .map(|(org, rate)| (org.clone(), keyed(*rate)))
                .collect(),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `org` and decides whether it may go ahead.
    pub fn check(&self, org: &str) -> Decision {
        let bucket = match self.overrides.get(org) {
            Some(o) => o.as_ref(),
            None => self.default.as_ref(),
        };
        let Some((rate, limiter)) = bucket else {
            return Decision::Unlimited;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        let key = org.to_string();
        match limiter.check_key(&key) {
            Ok(snapshot) => Decision::Allowed {
                rate: *rate,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                rate: *rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(s: &str) -> Option<Rate> {
        s.parse::<RateSetting>().ok().and_then(|r| r.0)
    }

    #[test]
    fn rates_parse() {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        // (setting, count, seconds, burst)
        let cases = [
            ("600/min", 600, 60, 600),
            ("1750/hour", 1750, 3600, 1750),
            ("10/s:2", 10, 1, 2),
            (" 5 / minute : 1 ", 5, 60, 1),
        ];
        for (s, count, secs, burst) in cases {
            assert_eq!(
                rate(s),
                Some(Rate {
                    count: n(count),
                    per: Duration::from_secs(secs),
                    burst: n(burst)
                }),
                "{s}"
            );
        }
        assert_eq!("off".parse::<RateSetting>(), Ok(RateSetting(None)));
        for bad in [
            "",
            "600",
            "0/min",
            "600/day",
            "600/min:0",
            "x/min",
            "600/min:x",
        ] {
            assert!(bad.parse::<RateSetting>().is_err(), "{bad}");
        }
        assert_eq!(
            rate("600/min").map(|r| r.to_string()).as_deref(),
            Some("600/min")
        );
        assert_eq!(
            rate("10/s:2").map(|r| r.to_string()).as_deref(),
            Some("10/s:2")
        );
        let o: RateOverrides = "org_a=1200/min, org_b=off".parse().unwrap_or_default();
        assert_eq!(o.0.get("org_a").copied().flatten(), rate("1200/min"));
        assert_eq!(o.0.get("org_b").copied(), Some(None));
        for bad in ["org_a", "=1/s", "org_a=fast"] {
            assert!(bad.parse::<RateOverrides>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_org_has_its_own_bucket_and_overrides_win() {
        let clock = FakeRelativeClock::default();
        let overrides: RateOverrides = "big=4/min,free=off".parse().unwrap_or_default();
        let l = OrgRateLimiter::with_clock(
            "2/min".parse().unwrap_or(RateSetting(None)),
            &overrides,
            clock.clone(),
        );
        let allowed = |org: &str, n: usize| (0..n).filter(|_| !l.check(org).is_limited()).count();
        assert_eq!(allowed("a", 5), 2, "default burst");
        assert_eq!(allowed("b", 5), 2, "another org is not affected");
        assert_eq!(allowed("big", 9), 4, "override");
        assert_eq!(allowed("free", 100), 100, "off");
        assert_eq!(l.check("free"), Decision::Unlimited);
        let refused = l.check("a");
        assert!(refused.is_limited());
        assert_eq!(refused.retry_after_secs(), 30);
        clock.advance(Duration::from_secs(30));
        assert_eq!(allowed("a", 5), 1, "one refilled after period / count");
    }

    #[test]
    fn headers_follow_the_draft() {
        let clock = FakeRelativeClock::default();
        let l = OrgRateLimiter::with_clock(
            "600/min:3".parse().unwrap_or(RateSetting(None)),
            &RateOverrides::default(),
            clock,
        );
        let header = |d: &Decision| {
            let mut h = HeaderMap::new();
            d.write_headers(&mut h);
            let get = |n: &HeaderName| {
                h.get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
                    .unwrap_or_default()
            };
            (get(&RATELIMIT_POLICY), get(&RATELIMIT))
        };
        let first = l.check("o");
        assert_eq!(
            header(&first),
            ("\"org\";q=600;w=60".into(), "\"org\";r=2;t=1".into())
        );
        l.check("o");
        l.check("o");
        let refused = l.check("o");
        assert_eq!(
            header(&refused),
            ("\"org\";q=600;w=60".into(), "\"org\";r=0;t=1".into())
        );
        assert_eq!(header(&Decision::Unlimited), (String::new(), String::new()));
    }
}
