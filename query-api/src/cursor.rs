//! Opaque page cursors: versioned, HMAC-SHA256 signed, and bound to the org,
//! the API dialect, the sort order and a hash of the filter set. A cursor from
//! another org or another filter set is refused. A cursor says which way it
//! walks (the page after or before its position) and may carry the time
//! window that the first page resolved from defaults such as "the last 24
//! hours", so that every later page reads the same window.
//!
//! Wire form: `base64url(json payload) "." base64url(hmac)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const VERSION: u8 = 2;

/// The position after which the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Which way a cursor walks from its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The page after the position (the next page).
    Next,
    /// The page before the position (the previous page).
    Prev,
}

/// What a cursor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub walk: Walk,
    pub pos: Position,
    /// A time window `[from, until)` fixed by the first page, if any.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Cursor {
    pub fn next(pos: Position) -> Self {
        Cursor {
            walk: Walk::Next,
            pos,
            window: None,
        }
    }

    pub fn prev(pos: Position) -> Self {
        Cursor {
            walk: Walk::Prev,
            pos,
            window: None,
        }
    }
}

/// What a cursor is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    pub org: &'a str,
    pub dialect: &'a str,
    /// The sort order (`asc`/`desc`).
    pub direction: &'a str,
    /// A canonical string of every filter of the request (see [`filter_hash`]).
    pub filters: &'a str,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    o: String,
    d: String,
    r: String,
    f: String,
    w: char,
    t: i64,
    i: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lo: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hi: Option<i64>,
}

/// Why a cursor was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("cursor is malformed")]
    Malformed,
    #[error("cursor signature does not match")]
    BadSignature,
    #[error("cursor version is not supported")]
    Version,
    #[error("cursor belongs to another organisation, API, direction or filter set")]
    Mismatch,
}

/// Signs and verifies cursors with one secret.
#[derive(Clone)]
pub struct CursorCodec {
    secret: Vec<u8>,
}

/// Hex SHA-256 of a canonical filter string (shortened to 16 bytes).
pub fn filter_hash(filters: &str) -> String {
    hex::encode(&Sha256::digest(filters.as_bytes())[..16])
}

impl CursorCodec {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        CursorCodec {
            secret: secret.into(),
        }
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        m.update(data);
        m
    }

    pub fn encode(&self, binding: &Binding<'_>, cursor: Cursor) -> String {
        let pos = cursor.pos;
        let payload = Payload {
            v: VERSION,
            o: binding.org.to_string(),
            d: binding.dialect.to_string(),
            r: binding.direction.to_string(),
            f: filter_hash(binding.filters),
            w: match cursor.walk {
                Walk::Next => 'n',
                Walk::Prev => 'p',
            },
            t: pos.created_at.timestamp_micros(),
            i: pos.id,
            lo: cursor.window.map(|w| w.0.timestamp_micros()),
            hi: cursor.window.map(|w| w.1.timestamp_micros()),
        };
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let sig = self.mac(&json).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    pub fn decode(&self, binding: &Binding<'_>, cursor: &str) -> Result<Cursor, CursorError> {
        let (body, sig) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CursorError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| CursorError::Malformed)?;
        self.mac(&json)
            .verify_slice(&sig)
            .map_err(|_| CursorError::BadSignature)?;
        let p: Payload = serde_json::from_slice(&json).map_err(|_| CursorError::Malformed)?;
        if p.v != VERSION {
            return Err(CursorError::Version);
        }
        if p.o != binding.org
            || p.d != binding.dialect
            || p.r != binding.direction
            || p.f != filter_hash(binding.filters)
        {
            return Err(CursorError::Mismatch);
        }
        let time = |t: i64| DateTime::from_timestamp_micros(t).ok_or(CursorError::Malformed);
        let walk = match p.w {
            'n' => Walk::Next,
            'p' => Walk::Prev,
            _ => return Err(CursorError::Malformed),
        };
        let window = match (p.lo, p.hi) {
            (Some(lo), Some(hi)) => Some((time(lo)?, time(hi)?)),
            (None, None) => None,
            _ => return Err(CursorError::Malformed),
        };
        Ok(Cursor {
            walk,
            pos: Position {
                created_at: time(p.t)?,
                id: p.i,
            },
            window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b<'a>(org: &'a str, filters: &'a str) -> Binding<'a> {
        Binding {
            org,
            dialect: "native",
            direction: "desc",
            filters,
        }
    }

    proptest! {
        #[test]
        fn round_trips(org in "[a-z]{1,10}", f in ".{0,40}", t in 0i64..4_000_000_000_000_000, id in any::<u128>(), prev in any::<bool>(), win in proptest::option::of((0i64..1<<50, 0i64..1<<50))) {
            let c = CursorCodec::new("k");
            let time = |t| DateTime::from_timestamp_micros(t).unwrap_or_default();
            let pos = Position { created_at: time(t), id: Uuid::from_u128(id) };
            let mut cur = if prev { Cursor::prev(pos) } else { Cursor::next(pos) };
            cur.window = win.map(|(a, b)| (time(a), time(b)));
            let s = c.encode(&b(&org, &f), cur);
            prop_assert_eq!(c.decode(&b(&org, &f), &s), Ok(cur));
            prop_assert_eq!(c.decode(&b(&org, &format!("{f}x")), &s), Err(CursorError::Mismatch));
            prop_assert_eq!(c.decode(&b(&format!("{org}x"), &f), &s), Err(CursorError::Mismatch));
            prop_assert_eq!(CursorCodec::new("other").decode(&b(&org, &f), &s), Err(CursorError::BadSignature));
        }

        #[test]
        fn tampering_is_detected(idx in 0usize..200, byte in any::<u8>()) {
            let c = CursorCodec::new("k");
            let pos = Position { created_at: DateTime::from_timestamp_micros(1).unwrap_or_default(), id: Uuid::from_u128(7) };
            let s = c.encode(&b("acme", "f"), Cursor::next(pos));
            let mut bytes = s.clone().into_bytes();
            let i = idx % bytes.len();
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let tampered = String::from_utf8_lossy(&bytes).to_string();
            prop_assume!(tampered != s);
            prop_assert!(c.decode(&b("acme", "f"), &tampered).is_err());
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let c = CursorCodec::new("k");
        assert_eq!(c.decode(&b("a", ""), "nodot"), Err(CursorError::Malformed));
        assert_eq!(c.decode(&b("a", ""), "!!.!!"), Err(CursorError::Malformed));
    }
}
