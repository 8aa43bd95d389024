//! The time windows a keyset page is read in, nearest first.

use chrono::{DateTime, Utc};

use super::{Cond, Filter, Order, Page, Start};

/// Widths of the time windows a keyset page is read in, nearest first: the
/// page's own side of the anchor, then the next 6 days, the next 23, then
/// everything else. A large org's newest page lies in the first window, so
/// the partition key (by day) skips every other partition: on 10M events
/// over 30 days, the newest page of a 3M-event org took 450 ms as one
/// query and 40 ms in the first window.
const WINDOW_DAYS: [i64; 3] = [1, 7, 30];

/// The time windows to read a page in, in the order the page scans: extra
/// conditions, disjoint, together covering everything the page could
/// return, so the page is the concatenation of the windows' rows (the
/// caller stops once it has enough). The anchor is the cursor's time, the
/// filter's bound on the scan's start side, or `now` for a newest-first
/// first page; an oldest-first first page without a lower bound has no
/// anchor and is one window. Cut points outside the filter's own time
/// bounds are left out. `Offset` pages are always one window.
pub fn time_windows(f: &Filter, page: &Page, now: DateTime<Utc>) -> Vec<Vec<Cond>> {
    let scan = page.scan();
    // The filter's own time bounds: the latest `From`, the earliest `Until`.
    let (mut lower, mut upper) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for c in &f.conds {
        match *c {
            Cond::From(t) => lower = lower.max(Some(t)),
            Cond::Until(t) => upper = Some(upper.map_or(t, |u| u.min(t))),
            _ => {}
        }
    }
    let anchor = match (page.start, scan) {
        (Start::Offset(_), _) => None,
        (Start::After(p) | Start::Before(p), _) => Some(p.created_at),
        (Start::First, Order::Desc) => Some(upper.map_or(now, |u| u.min(now))),
        (Start::First, Order::Asc) => lower,
    };
    let Some(anchor) = anchor else {
        return vec![Vec::new()];
    };
    let cuts: Vec<DateTime<Utc>> = WINDOW_DAYS
        .iter()
        .filter_map(|d| match scan {
            Order::Desc => anchor.checked_sub_signed(chrono::Duration::days(*d)),
            Order::Asc => anchor.checked_add_signed(chrono::Duration::days(*d)),
        })
        .filter(|c| lower.is_none_or(|l| *c > l) && upper.is_none_or(|u| *c < u))
        .collect();
    let mut windows = Vec::with_capacity(cuts.len() + 1);
    let mut previous: Option<DateTime<Utc>> = None;
    for cut in cuts {
        windows.push(match (scan, previous) {
            (Order::Desc, None) => vec![Cond::From(cut)],
            (Order::Desc, Some(p)) => vec![Cond::From(cut), Cond::Until(p)],
            (Order::Asc, None) => vec![Cond::Until(cut)],
            (Order::Asc, Some(p)) => vec![Cond::From(p), Cond::Until(cut)],
        });
        previous = Some(cut);
    }
    windows.push(match (scan, previous) {
        (_, None) => Vec::new(),
        (Order::Desc, Some(p)) => vec![Cond::Until(p)],
        (Order::Asc, Some(p)) => vec![Cond::From(p)],
    });
    windows
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Position;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }

    fn holds(conds: &[Cond], t: DateTime<Utc>) -> bool {
        conds.iter().all(|c| match c {
            Cond::From(f) => t >= *f,
            Cond::Until(u) => t < *u,
            _ => true,
        })
    }

    #[test]
    fn newest_first_pages_read_the_last_day_first() {
        let now = at(1_780_000_000_000_000);
        let day = chrono::Duration::days(1);
        let p = Page {
            order: Order::Desc,
            start: Start::First,
            limit: 100,
        };
        let w = time_windows(&Filter::new("a"), &p, now);
        assert_eq!(
            w,
            vec![
                vec![Cond::From(now - day)],
                vec![Cond::From(now - day * 7), Cond::Until(now - day)],
                vec![Cond::From(now - day * 30), Cond::Until(now - day * 7)],
                vec![Cond::Until(now - day * 30)],
            ]
        );
        // Within a filter narrower than a day: one window, nothing added.
        let narrow = Filter::new("a").and(Cond::From(now - chrono::Duration::hours(2)));
        assert_eq!(time_windows(&narrow, &p, now), vec![Vec::<Cond>::new()]);
        // Oldest first without a lower bound, and offset pages: one window.
        let asc = Page {
            order: Order::Asc,
            ..p
        };
        assert_eq!(
            time_windows(&Filter::new("a"), &asc, now),
            vec![Vec::<Cond>::new()]
        );
        let off = Page {
            start: Start::Offset(200),
            ..p
        };
        assert_eq!(
            time_windows(&Filter::new("a"), &off, now),
            vec![Vec::<Cond>::new()]
        );
    }

    proptest! {
        #[test]
        fn windows_partition_time_in_scan_order(
            anchor in 0i64..4_000_000_000_000_000,
            bounds in (proptest::option::of(-50i64..50), proptest::option::of(-50i64..50)),
            start in 0usize..4,
            asc in any::<bool>(),
            times in proptest::collection::vec(-60i64..60, 1..40),
        ) {
            // Times and bounds in days around the anchor.
            let day = 86_400_000_000i64;
            let now = at(anchor);
            let mut f = Filter::new("a");
            if let Some(l) = bounds.0 { f.push(Cond::From(at(anchor + l * day))); }
            if let Some(u) = bounds.1 { f.push(Cond::Until(at(anchor + u * day))); }
            let pos = Position { created_at: now, id: Uuid::nil() };
            let start = [Start::First, Start::After(pos), Start::Before(pos), Start::Offset(5)][start];
            let order = if asc { Order::Asc } else { Order::Desc };
            let page = Page { order, start, limit: 10 };
            let windows = time_windows(&f, &page, now);
            prop_assert!(!windows.is_empty() && windows.len() <= 4);
            let scan = match start { Start::Before(_) => order.reversed(), _ => order };
            let mut seen: Vec<(usize, i64)> = Vec::new();
            for t in times {
                let t = anchor + t * day + t;
                let hits: Vec<usize> = windows.iter().enumerate()
                    .filter(|(_, w)| holds(w, at(t))).map(|(i, _)| i).collect();
                // Every time is in exactly one window.
                prop_assert_eq!(hits.len(), 1, "time {} in windows {:?}", t, hits);
                seen.push((hits[0], t));
            }
            // On the scan's side of the anchor, an earlier window never
            // holds a time the scan reaches later.
            let ahead = |t: i64| match scan { Order::Desc => t <= anchor, Order::Asc => t >= anchor };
            for (wa, ta) in seen.iter().filter(|(_, t)| ahead(*t)) {
                for (wb, tb) in seen.iter().filter(|(_, t)| ahead(*t)) {
                    if wa < wb {
                        match scan {
                            Order::Desc => prop_assert!(ta > tb),
                            Order::Asc => prop_assert!(ta < tb),
                        }
                    }
                }
            }
        }
    }
}
