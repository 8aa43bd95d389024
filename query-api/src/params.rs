//! Query-string parameters as the dialects need them: repeated keys kept in
//! order (Zendesk's `filter[x][]=a&filter[x][]=b`), empty values treated as
//! absent, and every problem reported against the parameter's name.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use crate::error::ApiError;
use crate::query::Order;

/// The decoded query string of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad("query", format!("not a valid query string: {e}")))?;
        Ok(Params(
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        ))
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Whether any of `names` was given.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// A single-valued parameter; giving it twice is an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = it.next();
        if it.next().is_some() {
            return Err(ApiError::bad(name, "may be given only once"));
        }
        Ok(first.map(String::as_str))
    }

    /// Every value given under any of `names`, in request order.
    pub fn all(&self, names: &[&str]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Rejects parameters that are not in `known` (for dialects that are strict).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::bad(k.clone(), "unknown parameter")),
            None => Ok(()),
        }
    }

    /// An integer in `1..=max`, `default` when absent.
    pub fn size(&self, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    name,
                    format!("must be an integer from 1 to {max}"),
                )),
            },
        }
    }

    /// A parsed value, when given.
    pub fn parsed<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.one(name)?
            .map(|s| {
                s.parse::<T>()
                    .map_err(|_| ApiError::bad(name, format!("must be {what}")))
            })
            .transpose()
    }

    /// `asc` / `desc` under `name`, `default` when absent.
    pub fn order(&self, name: &str, default: Order) -> Result<Order, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some("desc") => Ok(Order::Desc),
            Some("asc") => Ok(Order::Asc),
            Some(_) => Err(ApiError::bad(name, "must be `asc` or `desc`")),
        }
    }

    /// An RFC 3339 timestamp with any sub-second precision.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.one(name)?.map(|s| parse_time(name, s)).transpose()
    }
}

/// Parses an RFC 3339 timestamp with any sub-second precision.
pub fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad(
                name,
                format!("must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z ({e})"),
            )
        })
}

/// The first microsecond at or after `t` (stored times are microseconds):
/// `created_at >= t` ⟺ `created_at >= ceil_micros(t)`.
pub fn ceil_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_micros(t);
    if floor == t {
        t
    } else {
        floor + Duration::microseconds(1)
    }
}

/// `t` truncated to microseconds.
pub fn floor_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The exclusive bound equivalent to an inclusive end `t`:
/// `created_at <= t` ⟺ `created_at < after_micros(t)`.
pub fn after_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_micros(t) + Duration::microseconds(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_empty_values() {
        let p = Params::parse(Some("a=1&a=2&b=&filter%5Bx%5D%5B%5D=y&filter[x][]=z"))
            .unwrap_or_default();
        assert_eq!(p.all(&["a"]), vec!["1", "2"]);
        assert!(!p.has("b"));
        assert_eq!(p.all(&["filter[x]", "filter[x][]"]), vec!["y", "z"]);
        assert!(p.one("a").is_err());
        assert!(p.reject_unknown(&["a"]).is_err());
    }

    #[test]
    fn sizes_and_times() {
        let p = Params::parse(Some("n=0&m=7&t=2022-03-09T08:40:18.490771179Z")).unwrap_or_default();
        assert!(p.size("n", 5, 10).is_err());
        assert_eq!(p.size("m", 5, 10).ok(), Some(7));
        assert_eq!(p.size("absent", 5, 10).ok(), Some(5));
        let t = p.time("t").ok().flatten().unwrap_or_default();
        assert_eq!(t.timestamp_subsec_nanos(), 490_771_179);
        assert_eq!(ceil_micros(t).timestamp_subsec_nanos(), 490_772_000);
        assert_eq!(floor_micros(t).timestamp_subsec_nanos(), 490_771_000);
        assert_eq!(after_micros(t).timestamp_subsec_nanos(), 490_772_000);
        let exact = floor_micros(t);
        assert_eq!(ceil_micros(exact), exact);
        assert_eq!(after_micros(exact).timestamp_subsec_nanos(), 490_772_000);
    }
}
