//! The one keyset-page helper of every cursor mode (the native list,
//! Zendesk's cursor mode, Torq, and the `{"data", "cursor"}` APIs): verify
//! the request's cursor against its binding, turn it into a [`Start`], read
//! the page with [`fetch_page_within`] (within the byte cap) and sign the cursors of the neighbouring
//! pages. Dialects choose only the parameter names, which walks each accepts
//! and what the cursor is bound to; offset pages do not come here.

use chrono::{DateTime, Utc};
use trailhouse_schemas::EventRow;

use crate::cursor::{Binding, Cursor, Position, Walk};
use crate::error::ApiError;
use crate::params::Params;
use crate::query::{Cond, Filter, Order, Page, Start};
use crate::state::AppState;
use crate::store::{fetch_page_within, position, EventStore, Fetched};

/// A time window `[from, until)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// A query parameter that may carry a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorParam {
    pub name: &'static str,
    /// The walk the parameter accepts; `None` accepts either and starts the
    /// page on the side the cursor says.
    pub walk: Option<Walk>,
    /// The reason given for a cursor that walks the other way.
    pub wrong_walk: &'static str,
}

impl CursorParam {
    /// A parameter for cursors of either walk (`next_cursor` and `prev_cursor`).
    pub const fn either(name: &'static str) -> Self {
        CursorParam {
            name,
            walk: None,
            wrong_walk: "",
        }
    }

    /// A parameter that only walks forward.
    pub const fn next(name: &'static str) -> Self {
        Self::only(name, Walk::Next, "this cursor walks backwards")
    }

    /// A parameter for cursors of one walk.
    pub const fn only(name: &'static str, walk: Walk, wrong_walk: &'static str) -> Self {
        CursorParam {
            name,
            walk: Some(walk),
            wrong_walk,
        }
    }
}

/// One page as the dialects render it: rows in the requested order and the
/// signed cursors of the pages after and before it.
pub type KeysetPage = Fetched<String>;

/// A keyset-paged read of one request.
pub struct Keyset<'a, S> {
    state: &'a AppState<S>,
    dialect: &'a str,
    filter: &'a Filter,
    key: String,
    order: Order,
    limit: u32,
    params: Vec<CursorParam>,
    window: Option<Window>,
}

impl<'a, S: EventStore> Keyset<'a, S> {
    /// A read of `filter` in `order`, `limit` rows a page, with cursors bound
    /// to the org, `dialect`, the order and the filter's key.
    pub fn new(
        state: &'a AppState<S>,
        dialect: &'a str,
        filter: &'a Filter,
        order: Order,
        limit: u32,
    ) -> Self {
        Keyset {
            state,
            dialect,
            filter,
            key: filter.key(),
            order,
            limit,
            params: Vec::new(),
            window: None,
        }
    }

    /// Accepts a cursor in `param`. When several parameters are accepted, a
    /// request may give only one of them.
    pub fn cursor(mut self, param: CursorParam) -> Self {
        self.params.push(param);
        self
    }

    /// Binds the cursors to `key` instead of the filter's key.
    pub fn bound_to(mut self, key: String) -> Self {
        self.key = key;
        self
    }

    /// Reads within `window` on the first page; the window travels inside
    /// the cursors, and a later page reads the window of its cursor.
    pub fn window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }

    fn binding(&self) -> Binding<'_> {
        Binding {
            org: &self.filter.org_id,
            dialect: self.dialect,
            direction: self.order.as_str(),
            filters: &self.key,
        }
    }

    fn sign(&self, walk: Walk, pos: Position, window: Option<Window>) -> String {
        let cursor = Cursor { walk, pos, window };
        self.state.cursors.encode(&self.binding(), cursor)
    }

    /// The cursor of the page that starts right after `r` (a per-entry
    /// cursor). It carries the window given to [`Keyset::window`], so it
    /// serves the APIs without a window.
    pub fn cursor_after(&self, r: &EventRow) -> String {
        self.sign(Walk::Next, position(r), self.window)
    }

    /// The cursor the request gives, verified: at most one of the accepted
    /// parameters, bound to this request, walking the way its parameter does.
    fn given(&self, p: &Params) -> Result<Option<(CursorParam, Cursor)>, ApiError> {
        let mut given = Vec::new();
        for param in &self.params {
            if let Some(v) = p.one(param.name)? {
                given.push((*param, v));
            }
        }
        let (param, value) = match given.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            [(first, _), (second, _), ..] => {
                return Err(ApiError::bad(
                    second.name,
                    format!("give either {} or {}, not both", first.name, second.name),
                ))
            }
        };
        let c = self
            .state
            .cursors
            .decode(&self.binding(), value)
            .map_err(|e| ApiError::bad(param.name, e.to_string()))?;
        if param.walk.is_some_and(|w| w != c.walk) {
            return Err(ApiError::bad(param.name, param.wrong_walk));
        }
        Ok(Some((param, c)))
    }

    /// Reads the page the request asks for.
    pub async fn read(&self, p: &Params) -> Result<KeysetPage, ApiError> {
        let mut window = self.window;
        let start = match self.given(p)? {
            None => Start::First,
            Some((param, c)) => {
                if window.is_some() {
                    window = Some(
                        c.window
                            .ok_or_else(|| ApiError::bad(param.name, "carries no time window"))?,
                    );
                }
                match c.walk {
                    Walk::Next => Start::After(c.pos),
                    Walk::Prev => Start::Before(c.pos),
                }
            }
        };
        let windowed;
        let filter = match window {
            None => self.filter,
            Some((from, until)) => {
                windowed = self
                    .filter
                    .clone()
                    .and(Cond::From(from))
                    .and(Cond::Until(until));
                &windowed
            }
        };
        let page = Page {
            order: self.order,
            start,
            limit: self.limit,
        };
        let fetched =
            fetch_page_within(&self.state.store, filter, &page, self.state.max_page_bytes).await?;
        Ok(fetched.map(|walk, pos| self.sign(walk, pos, window)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StaticStore;
    use uuid::Uuid;

    fn row(n: u16) -> EventRow {
        let e = &trailhouse_schemas::examples::all()[0];
        let mut r = EventRow::from_event(e, Default::default());
        r.id = Uuid::from_u128(u128::from(n));
        r.org_id = "o".into();
        r.created_at = DateTime::from_timestamp_micros(1_700_000_000_000_000 - i64::from(n))
            .unwrap_or_default();
        r
    }

    fn state(rows: u16) -> AppState<StaticStore> {
        AppState::for_tests(
            StaticStore {
                rows: (0..rows).map(row).collect(),
                ..StaticStore::default()
            },
            None,
        )
    }

    fn p(q: &str) -> Params {
        Params::parse(Some(q)).unwrap_or_default()
    }

    fn bad_param(r: Result<KeysetPage, ApiError>) -> Option<(String, String)> {
        match r {
            Err(ApiError::BadParam { param, reason }) => Some((param, reason)),
            _ => None,
        }
    }

    const AFTER: CursorParam = CursorParam::only("after", Walk::Next, "this is a before cursor");
    const BEFORE: CursorParam = CursorParam::only("before", Walk::Prev, "this is an after cursor");

    #[tokio::test]
    async fn pages_sign_their_neighbours_and_verify_what_they_get() {
        let s = state(3);
        let f = Filter::new("o");
        let ks = Keyset::new(&s, "d", &f, Order::Desc, 2).cursor(CursorParam::either("c"));
        let first = ks.read(&p("")).await.expect("first");
        assert_eq!(first.rows.len(), 2);
        assert!(first.has_more && first.prev.is_none());
        let next = first.next.clone().expect("next");
        let second = ks.read(&p(&format!("c={next}"))).await.expect("second");
        assert!(second.prev.is_some());
        // The store's SQL started after the cursor's position.
        let seen = s.store.seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert!(seen.last().is_some_and(|q| q.text.contains("created_at <")));
        // Bound to the org, the dialect, the order and the filter key.
        let other = Filter::new("o2");
        let another_filter = Filter::new("o").and(Cond::PathPrefix("/x".into()));
        let cases = [
            Keyset::new(&s, "d", &other, Order::Desc, 2),
            Keyset::new(&s, "e", &f, Order::Desc, 2),
            Keyset::new(&s, "d", &f, Order::Asc, 2),
            Keyset::new(&s, "d", &another_filter, Order::Desc, 2),
            Keyset::new(&s, "d", &f, Order::Desc, 2).bound_to("k".into()),
        ];
        for ks in cases {
            let ks = ks.cursor(CursorParam::either("c"));
            let got = bad_param(ks.read(&p(&format!("c={next}"))).await);
            assert_eq!(got.map(|(p, _)| p).as_deref(), Some("c"));
        }
        let tampered = format!("{}x", next);
        assert!(bad_param(ks.read(&p(&format!("c={tampered}"))).await).is_some());
        // The page limit is not part of the binding.
        let wider = Keyset::new(&s, "d", &f, Order::Desc, 3).cursor(CursorParam::either("c"));
        assert!(wider.read(&p(&format!("c={next}"))).await.is_ok());
    }

    #[tokio::test]
    async fn parameters_accept_their_walk_only_and_one_at_a_time() {
        let s = state(3);
        let f = Filter::new("o");
        let ks = Keyset::new(&s, "d", &f, Order::Desc, 1)
            .cursor(AFTER)
            .cursor(BEFORE);
        let pos = Position {
            created_at: DateTime::from_timestamp_micros(5).unwrap_or_default(),
            id: Uuid::nil(),
        };
        let n = ks.sign(Walk::Next, pos, None);
        let b = ks.sign(Walk::Prev, pos, None);
        assert!(ks.read(&p(&format!("after={n}"))).await.is_ok());
        assert!(ks.read(&p(&format!("before={b}"))).await.is_ok());
        assert_eq!(
            bad_param(ks.read(&p(&format!("before={n}"))).await),
            Some(("before".into(), "this is an after cursor".into()))
        );
        assert_eq!(
            bad_param(ks.read(&p(&format!("after={b}"))).await),
            Some(("after".into(), "this is a before cursor".into()))
        );
        assert_eq!(
            bad_param(ks.read(&p(&format!("after={n}&before={b}"))).await),
            Some((
                "before".into(),
                "give either after or before, not both".into()
            ))
        );
        let fwd = Keyset::new(&s, "d", &f, Order::Desc, 1).cursor(CursorParam::next("c"));
        assert_eq!(
            bad_param(fwd.read(&p(&format!("c={b}"))).await),
            Some(("c".into(), "this cursor walks backwards".into()))
        );
    }

    #[tokio::test]
    async fn a_window_travels_inside_the_cursors() {
        let s = state(3);
        let f = Filter::new("o");
        let t = |us| DateTime::from_timestamp_micros(us).unwrap_or_default();
        let ks = Keyset::new(&s, "d", &f, Order::Desc, 1)
            .cursor(CursorParam::next("c"))
            .window((t(1), t(2)));
        let first = ks.read(&p("")).await.expect("first");
        let next = first.next.expect("next");
        // A later request resolves another window; the cursor's wins.
        let later = Keyset::new(&s, "d", &f, Order::Desc, 1)
            .cursor(CursorParam::next("c"))
            .window((t(3), t(4)));
        let seen_before = s.store.seen.lock().map(|v| v.len()).unwrap_or_default();
        later.read(&p(&format!("c={next}"))).await.expect("second");
        let seen = s.store.seen.lock().map(|v| v.clone()).unwrap_or_default();
        let q = &seen[seen_before];
        assert!(q
            .params
            .iter()
            .any(|(_, v)| v == "1970-01-01 00:00:00.000001"));
        assert!(!q
            .params
            .iter()
            .any(|(_, v)| v == "1970-01-01 00:00:00.000003"));
        // A cursor without a window is refused where a window is expected.
        let plain = Keyset::new(&s, "d", &f, Order::Desc, 1).cursor(CursorParam::next("c"));
        let c = plain.cursor_after(&row(0));
        assert_eq!(
            bad_param(later.read(&p(&format!("c={c}"))).await),
            Some(("c".into(), "carries no time window".into()))
        );
    }
}
