//! Repeated WARN and ERROR lines, shown at most once per window: while a
//! dependency is down, a service would otherwise write the same line tens
//! of times a second. Lines are the same when they differ only in numbers
//! (offsets, milliseconds, ports). The first line of a run is shown; the
//! next one shown after the window says how many were left out
//! (`"repeated": N`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same line is shown at most.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Distinct lines remembered; past this the memory starts over.
const MAX_KEYS: usize = 4096;

/// What to do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, saying how many of its repeats were left out since the
    /// last one written.
    Show { repeated: u64 },
    /// Leave it out.
    Drop,
}

#[derive(Debug)]
struct Seen {
    shown_at: Instant,
    dropped: u64,
}

/// The memory of recent lines.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    seen: Mutex<HashMap<u64, Seen>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(WINDOW)
    }
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Throttle {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the line with `key` (see [`key`]) is written at `now`.
    pub fn check(&self, key: u64, now: Instant) -> Verdict {
        let Ok(mut seen) = self.seen.lock() else {
            return Verdict::Show { repeated: 0 };
        };
        if seen.len() >= MAX_KEYS && !seen.contains_key(&key) {
            seen.clear();
        }
        match seen.get_mut(&key) {
            Some(s) if now.saturating_duration_since(s.shown_at) < self.window => {
                s.dropped += 1;
                Verdict::Drop
            }
            Some(s) => {
                let repeated = std::mem::take(&mut s.dropped);
                s.shown_at = now;
                Verdict::Show { repeated }
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        shown_at: now,
                        dropped: 0,
                    },
                );
                Verdict::Show { repeated: 0 }
            }
        }
    }
}

/// The identity of a line: its text with every run of digits made one `#`.
pub fn key(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                '#'.hash(&mut h);
            }
            in_digits = true;
        } else {
            in_digits = false;
            c.hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_differ_only_in_numbers_are_one_line() {
        let cases = [
            (
                "connect to 127.0.0.1:9092 failed after 3ms",
                "connect to 10.0.0.7:19092 failed after 1200ms",
                true,
            ),
            ("partition 3 lagging", "partition 12 lagging", true),
            ("insert failed", "commit failed", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(key(a) == key(b), same, "{a} / {b}");
        }
    }

    #[test]
    fn a_line_is_shown_once_per_window_with_the_count_left_out() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let (a, b) = (key("a"), key("b"));
        // (key, ms after start, verdict)
        let steps = [
            (a, 0, Verdict::Show { repeated: 0 }),
            (a, 100, Verdict::Drop),
            (b, 150, Verdict::Show { repeated: 0 }),
            (a, 9_999, Verdict::Drop),
            (a, 10_000, Verdict::Show { repeated: 2 }),
            (a, 10_001, Verdict::Drop),
            (a, 30_000, Verdict::Show { repeated: 1 }),
            (a, 45_000, Verdict::Show { repeated: 0 }),
        ];
        for (k, ms, want) in steps {
            assert_eq!(t.check(k, at(ms)), want, "at {ms} ms");
        }
    }
}
