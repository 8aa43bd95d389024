//! A stream's filter: the native API's filter parameters (`action=…`,
//! `status_min=…`, `path_prefix=…`, …) as a query string, parsed by the query
//! API's own parser, so a stream selects exactly what `GET /v1/events`
//! with the same parameters lists. The time bounds (`from`, `to`) are not
//! part of a stream: a replay has its own.

use trailhouse_query_api::dialect::native;
use trailhouse_query_api::error::ApiError;
use trailhouse_query_api::params::Params;
use trailhouse_query_api::query::Filter;

use crate::spec::{bad, SpecError};

/// The parameters a stream filter may use.
pub fn params() -> Vec<&'static str> {
    native::filter_params()
        .into_iter()
        .filter(|p| !matches!(*p, "from" | "to"))
        .collect()
}

fn spec_error(e: ApiError) -> SpecError {
    match e {
        ApiError::BadParam { param, reason } => bad(format!("filter.{param}"), reason),
        other => bad("filter", other.to_string()),
    }
}

/// The filter of `org`'s stream.
pub fn parse(org: &str, text: &str) -> Result<Filter, SpecError> {
    let p = Params::parse(Some(text.trim_start_matches('?'))).map_err(spec_error)?;
    p.reject_unknown(&params()).map_err(spec_error)?;
    native::filter(Filter::new(org), &p).map_err(spec_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailhouse_query_api::query::{Cond, Field};

    #[test]
    fn filters_parse_like_the_native_api_and_name_bad_parameters() {
        let f = parse(
            "acme",
            "action=user.login&action=user.logout&status_min=400",
        )
        .expect("valid");
        assert_eq!(f.org_id, "acme");
        assert!(f.conds.contains(&Cond::AnyOf(
            Field::ActionType,
            vec!["user.login".into(), "user.logout".into()]
        )));
        assert!(parse("acme", "").expect("empty").conds.is_empty());
        for (text, field) in [
            ("from=2026-01-01T00:00:00Z", "filter.from"),
            ("colour=red", "filter.colour"),
            ("status=abc", "filter.status"),
            ("status_min=500&status_max=400", "filter.status_min"),
        ] {
            assert_eq!(parse("acme", text).expect_err(text).field, field, "{text}");
        }
    }
}
