//! What a delivery carries: a batch of one stream's events from one Kafka
//! partition, its idempotency key and object name (both from the offset
//! range, so a retry of the same range is recognisably the same), the body
//! in each destination's format, and the webhook signature.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::spec::{BatchFormat, Destination};

/// One event ready to deliver: its position and its masked JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub partition: i32,
    pub offset: i64,
    /// `created_at` in microseconds since the epoch.
    pub created_at_us: i64,
    pub json: Value,
}

/// Consecutive events of one stream and one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub stream: Uuid,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub events: Vec<Value>,
}

impl Batch {
    /// Groups items (in delivery order) into batches of at most `max`
    /// events, one partition each.
    pub fn split(stream: Uuid, items: Vec<Item>, max: usize) -> Vec<Batch> {
        let mut out: Vec<Batch> = Vec::new();
        for it in items {
            match out.last_mut() {
                Some(b) if b.partition == it.partition && b.events.len() < max.max(1) => {
                    b.last_offset = it.offset;
                    b.events.push(it.json);
                }
                _ => out.push(Batch {
                    stream,
                    partition: it.partition,
                    first_offset: it.offset,
                    last_offset: it.offset,
                    events: vec![it.json],
                }),
            }
        }
        out
    }

    /// The same for every attempt at this range: receivers drop repeats by it.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.stream, self.partition, self.first_offset, self.last_offset
        )
    }

    /// The object's path under the stream's prefix: a retry of the range
    /// writes the same object again.
    pub fn object_path(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        let sep = if prefix.is_empty() { "" } else { "/" };
        format!(
            "{prefix}{sep}{}/p{:05}/{:020}-{:020}.ndjson.gz",
            self.stream, self.partition, self.first_offset, self.last_offset
        )
    }
}

/// Parses the offsets back out of an object name of [`Batch::object_path`].
pub fn object_range(name: &str) -> Option<(i64, i64)> {
    let file = name.rsplit('/').next()?.strip_suffix(".ndjson.gz")?;
    let (a, b) = file.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A body with its content type (and whether it is gzipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub gzip: bool,
}

fn lines(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(e.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// gzip at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Seconds since the epoch of an event's `created_at` (Splunk's `time`).
fn epoch_secs(e: &Value) -> Option<f64> {
    let t = e.get("created_at")?.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(t).ok()?;
    Some(t.timestamp_micros() as f64 / 1e6)
}

/// The body of a batch for an HTTP destination.
pub fn http_body(dest: &Destination, events: &[Value]) -> Body {
    match dest {
        Destination::Webhook {
            format, gzip: z, ..
        } => {
            let (raw, content_type) = match format {
                BatchFormat::Ndjson => (lines(events), "application/x-ndjson"),
                BatchFormat::JsonArray => (
                    Value::Array(events.to_vec()).to_string().into_bytes(),
                    "application/json",
                ),
            };
            finish(raw, content_type, *z)
        }
        Destination::Splunk {
            index, sourcetype, ..
        } => {
            // HEC's event endpoint takes events back to back.
            let hec: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut h = json!({
                        "source": "trailhouse",
                        "sourcetype": sourcetype.as_deref().unwrap_or("trailhouse:audit"),
                        "event": e,
                    });
                    if let Some(t) = epoch_secs(e) {
                        h["time"] = json!(t);
                    }
                    if let Some(i) = index {
                        h["index"] = json!(i);
                    }
                    h
                })
                .collect();
            finish(lines(&hec), "application/json", true)
        }
        Destination::Datadog { service, tags, .. } => {
            let entries: Vec<Value> = events
                .iter()
                .map(|e| {
                    let message = e
                        .pointer("/action/type")
                        .and_then(Value::as_str)
                        .unwrap_or("audit event");
                    json!({
                        "ddsource": "trailhouse",
                        "service": service.as_deref().unwrap_or("trailhouse"),
                        "ddtags": tags.join(","),
                        "date": e.get("created_at").cloned().unwrap_or(Value::Null),
                        "message": message,
                        "audit": e,
                    })
                })
                .collect();
            finish(
                Value::Array(entries).to_string().into_bytes(),
                "application/json",
                true,
            )
        }
        Destination::ObjectStore { .. } | Destination::Kafka { .. } => {
            finish(lines(events), "application/x-ndjson", true)
        }
    }
}

fn finish(raw: Vec<u8>, content_type: &'static str, z: bool) -> Body {
    Body {
        bytes: if z { gzip(&raw) } else { raw },
        content_type,
        gzip: z,
    }
}

/// The NDJSON.gz content of an object.
pub fn object_body(events: &[Value]) -> Vec<u8> {
    gzip(&lines(events))
}

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "trailhouse-signature";
/// The idempotency key header's name.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

fn mac(secret: &str, ts: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(ts.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// `t=<unix seconds>,v1=<hex>[,v1=<hex>]`: HMAC-SHA256 over
/// `"<t>.<body as sent>"` under each valid secret, newest first.
pub fn signature(secrets: &[String], ts: i64, body: &[u8]) -> String {
    let mut out = format!("t={ts}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&mac(s, ts, body));
    }
    out
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the timestamp is {0} s away from now, more than allowed")]
    Stale(i64),
    #[error("no v1 signature matches")]
    Mismatch,
}

/// What a receiver checks: a `v1` under `secret` matches and the timestamp
/// is within `tolerance_secs` of `now`.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut ts = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => ts = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let ts = ts.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - ts).abs() > tolerance_secs {
        return Err(SignatureError::Stale(now - ts));
    }
    let want = mac(secret, ts, body);
    let ok = sigs.iter().any(|s| {
        s.len() == want.len()
            && s.bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(b)
            .read_to_string(&mut s)
            .expect("gzip");
        s
    }

    fn item(p: i32, o: i64) -> Item {
        Item {
            partition: p,
            offset: o,
            created_at_us: o,
            json: json!({"o": o}),
        }
    }

    #[test]
    fn batches_split_by_partition_and_size() {
        let id = Uuid::nil();
        let items = vec![item(0, 1), item(0, 4), item(0, 5), item(1, 2), item(0, 9)];
        let b = Batch::split(id, items, 2);
        let ranges: Vec<_> = b
            .iter()
            .map(|b| (b.partition, b.first_offset, b.last_offset, b.events.len()))
            .collect();
        assert_eq!(
            ranges,
            vec![(0, 1, 4, 2), (0, 5, 5, 1), (1, 2, 2, 1), (0, 9, 9, 1)]
        );
        let path = b[0].object_path("/audit/acme/");
        assert_eq!(
            path,
            "audit/acme/00000000-0000-0000-0000-000000000000/p00000/00000000000000000001-00000000000000000004.ndjson.gz"
        );
        assert_eq!(object_range(&path), Some((1, 4)));
        assert_eq!(object_range("x/p0/abc.ndjson.gz"), None);
    }

    #[test]
    fn bodies_take_each_destination_shape() {
        let events = vec![
            json!({"id": "a", "created_at": "2026-01-01T00:00:01.500000Z", "action": {"type": "user.login"}}),
            json!({"id": "b", "created_at": "2026-01-01T00:00:02.000000Z", "action": {"type": "x"}}),
        ];
        let hook = Destination::Webhook {
            url: String::new(),
            format: BatchFormat::Ndjson,
            gzip: false,
        };
        let b = http_body(&hook, &events);
        assert_eq!(b.content_type, "application/x-ndjson");
        assert_eq!(String::from_utf8_lossy(&b.bytes).lines().count(), 2);
        let arr = Destination::Webhook {
            url: String::new(),
            format: BatchFormat::JsonArray,
            gzip: true,
        };
        let b = http_body(&arr, &events);
        let v: Value = serde_json::from_str(&gunzip(&b.bytes)).expect("json");
        assert_eq!(v, Value::Array(events.clone()));
        let splunk = Destination::Splunk {
            url: String::new(),
            index: Some("audit".into()),
            sourcetype: None,
        };
        let text = gunzip(&http_body(&splunk, &events).bytes);
        let first: Value = serde_json::from_str(text.lines().next().unwrap_or("")).expect("hec");
        assert_eq!(first["time"], json!(1_767_225_601.5));
        assert_eq!(first["index"], "audit");
        assert_eq!(first["event"]["id"], "a");
        let dd = Destination::Datadog {
            url: String::new(),
            service: None,
            tags: vec!["env:prod".into(), "team:sec".into()],
        };
        let v: Value = serde_json::from_str(&gunzip(&http_body(&dd, &events).bytes)).expect("dd");
        assert_eq!(v[0]["ddtags"], "env:prod,team:sec");
        assert_eq!(v[0]["message"], "user.login");
        assert_eq!(v[1]["audit"]["id"], "b");
        assert_eq!(gunzip(&object_body(&events)).lines().count(), 2);
    }

    #[test]
    fn every_valid_secret_verifies_and_others_do_not() {
        let secrets = vec!["new".to_string(), "old".to_string()];
        let h = signature(&secrets, 1000, b"body");
        assert_eq!(verify("new", &h, b"body", 1000, 300), Ok(()));
        assert_eq!(verify("old", &h, b"body", 1200, 300), Ok(()));
        assert_eq!(
            verify("other", &h, b"body", 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("new", &h, b"body", 1400, 300),
            Err(SignatureError::Stale(400))
        );
        assert_eq!(
            verify("new", "v1=00", b"body", 1000, 300),
            Err(SignatureError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn any_change_to_the_body_or_time_breaks_the_signature(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            bit in any::<usize>(),
            ts in 0i64..2_000_000_000,
        ) {
            let h = signature(&["s".to_string()], ts, &body);
            prop_assert_eq!(verify("s", &h, &body, ts, 0), Ok(()));
            if !body.is_empty() {
                let mut bad = body.clone();
                let i = bit % (bad.len() * 8);
                bad[i / 8] ^= 1 << (i % 8);
                prop_assert_eq!(verify("s", &h, &bad, ts, 0), Err(SignatureError::Mismatch));
            }
            let moved = h.replacen(&format!("t={ts}"), &format!("t={}", ts + 1), 1);
            prop_assert_eq!(verify("s", &moved, &body, ts + 1, 0), Err(SignatureError::Mismatch));
        }

        #[test]
        fn batches_keep_every_item_in_order(parts in proptest::collection::vec(0i32..3, 0..60), max in 1usize..7) {
            let items: Vec<Item> = parts.iter().enumerate().map(|(i, p)| item(*p, i as i64)).collect();
            let batches = Batch::split(Uuid::nil(), items.clone(), max);
            let mut flat = Vec::new();
            for b in &batches {
                prop_assert!(b.events.len() <= max);
                prop_assert_eq!(b.events.first(), Some(&json!({"o": b.first_offset})));
                prop_assert_eq!(b.events.last(), Some(&json!({"o": b.last_offset})));
                flat.extend(b.events.iter().cloned().map(|e| (b.partition, e)));
            }
            let want: Vec<_> = items.into_iter().map(|i| (i.partition, i.json)).collect();
            prop_assert_eq!(flat, want);
        }
    }
}
