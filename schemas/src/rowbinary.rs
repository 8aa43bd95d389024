//! [`EventRow`]s encoded as ClickHouse `RowBinaryWithNamesAndTypes`, one row
//! at a time as they arrive.
//!
//! The consumer encodes each event when it is consumed and keeps only the
//! bytes, so a batch's memory is its encoded size (which is what its byte
//! limit counts) and decoded structs live for one message. Every insert
//! starts with a header naming each column and its type; the server checks
//! it against the table and refuses the insert if they differ, so a table
//! changed under a running consumer fails loudly instead of storing
//! misread columns.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::layout::{Layout, PartitionKey};
use crate::row::EventRow;

/// The `events` columns in table order with their types, as declared by the
/// migrations (a test checks them against the migration source).
pub const COLUMNS: &[(&str, &str)] = &[
    ("org_id", "String"),
    ("created_at", "DateTime64(6, 'UTC')"),
    ("id", "UUID"),
    ("environment_id", "LowCardinality(String)"),
    ("workspace_id", "String"),
    ("workspace_name", "String"),
    ("actor_type", "LowCardinality(String)"),
    ("actor_id", "String"),
    ("actor_email", "String"),
    ("actor_name", "String"),
    ("auth_type", "LowCardinality(String)"),
    ("auth_client_id", "String"),
    ("auth_sub", "String"),
    ("auth_app_client_id", "String"),
    ("auth_account_id", "String"),
    ("source", "LowCardinality(String)"),
    ("action_type", "LowCardinality(String)"),
    ("action_description", "String"),
    ("resource_type", "LowCardinality(String)"),
    ("resource_id", "String"),
    ("resource_name", "String"),
    ("request_method", "LowCardinality(String)"),
    ("request_url", "String"),
    ("request_path", "String"),
    ("request_status", "Nullable(UInt16)"),
    ("request_duration_ms", "Nullable(Float64)"),
    ("request_ip", "String"),
    ("request_user_agent", "String"),
    ("request_query", "String"),
    ("request_path_params", "Map(String, String)"),
    ("request_headers", "Map(String, String)"),
    ("request_body", "String"),
    ("metadata", "Map(String, String)"),
    ("received_at", "DateTime64(6, 'UTC')"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
    ("retention_days", "UInt16"),
    ("is_copy", "Bool"),
];

/// The format name to put after `FORMAT` in the `INSERT`.
pub const FORMAT: &str = "RowBinaryWithNamesAndTypes";

/// The header every insert starts with: column count, names, types.
pub fn header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| {
        let mut h = Vec::new();
        uvarint(&mut h, COLUMNS.len() as u64);
        for (name, _) in COLUMNS {
            string(&mut h, name);
        }
        for (_, ty) in COLUMNS {
            string(&mut h, ty);
        }
        h
    })
}

/// An unsigned LEB128 varint (RowBinary lengths; Avro's zig-zag longs).
pub(crate) fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn datetime64_micros(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp_micros().to_le_bytes());
}

fn map(out: &mut Vec<u8>, m: &BTreeMap<String, String>) {
    uvarint(out, m.len() as u64);
    for (k, v) in m {
        string(out, k);
        string(out, v);
    }
}

/// Appends one row (no header).
pub fn write_row(out: &mut Vec<u8>, r: &EventRow) {
    string(out, &r.org_id);
    datetime64_micros(out, &r.created_at);
    let (hi, lo) = r.id.as_u64_pair();
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&lo.to_le_bytes());
    for s in [
        &r.environment_id,
        &r.workspace_id,
        &r.workspace_name,
        &r.actor_type,
        &r.actor_id,
        &r.actor_email,
        &r.actor_name,
        &r.auth_type,
        &r.auth_client_id,
        &r.auth_sub,
        &r.auth_app_client_id,
        &r.auth_account_id,
        &r.source,
        &r.action_type,
        &r.action_description,
        &r.resource_type,
        &r.resource_id,
        &r.resource_name,
        &r.request_method,
        &r.request_url,
        &r.request_path,
    ] {
        string(out, s);
    }
    match r.request_status {
        None => out.push(1),
        Some(s) => {
            out.push(0);
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    match r.request_duration_ms {
        None => out.push(1),
        Some(d) => {
            out.push(0);
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
    string(out, &r.request_ip);
    string(out, &r.request_user_agent);
    string(out, &r.request_query);
    map(out, &r.request_path_params);
    map(out, &r.request_headers);
    string(out, &r.request_body);
    map(out, &r.metadata);
    datetime64_micros(out, &r.received_at);
    out.extend_from_slice(&r.kafka_partition.to_le_bytes());
    out.extend_from_slice(&r.kafka_offset.to_le_bytes());
    out.extend_from_slice(&r.retention_days.to_le_bytes());
    out.push(u8::from(r.is_copy));
}

/// What identifies a stored event, and where in Kafka a row of it came
/// from: two rows with the same `(org_id, created_at, id)` are copies of one
/// event (which one is the event: `consumer/src/copies.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub org_id: String,
    /// `created_at` in microseconds since the epoch.
    pub created_at_us: i64,
    pub id: uuid::Uuid,
    pub partition: i32,
    pub offset: i64,
    /// Marked as a copy (of a stored row; false for rows not yet marked).
    pub is_copy: bool,
}

impl RowKey {
    /// The event the row holds, without where it came from.
    pub fn event(&self) -> (&str, i64, uuid::Uuid) {
        (&self.org_id, self.created_at_us, self.id)
    }
}

/// Encoded rows, in arrival order, and where each one ends.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EncodedRows {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedRows {
    pub fn new() -> Self {
        EncodedRows::default()
    }

    /// Encodes `row` and appends it.
    pub fn push(&mut self, row: &EventRow) {
        write_row(&mut self.bytes, row);
        self.ends.push(self.bytes.len());
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Encoded size of the rows, without the header.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// All rows, without the header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn range(&self, i: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    /// The encoded row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.bytes[self.range(i)]
    }

    /// The key of row `i`, read back from its bytes: the org, `created_at`
    /// and `id` lead the row; `kafka_partition` and `kafka_offset` come
    /// before the last three bytes (`retention_days`, `is_copy`).
    pub fn key(&self, i: usize) -> RowKey {
        let row = self.row(i);
        let (len, at) = leading_uvarint(row);
        let org_end = at + len;
        let int = |from: usize, n: usize| -> u64 {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&row[from..from + n]);
            u64::from_le_bytes(b)
        };
        let created_at_us = int(org_end, 8) as i64;
        let id = uuid::Uuid::from_u64_pair(int(org_end + 8, 8), int(org_end + 16, 8));
        let tail = row.len() - 3;
        RowKey {
            org_id: String::from_utf8_lossy(&row[at..org_end]).into_owned(),
            created_at_us,
            id,
            partition: int(tail - 12, 4) as u32 as i32,
            offset: int(tail - 8, 8) as i64,
            is_copy: row[row.len() - 1] == 1,
        }
    }

    /// The keys of every row, in order.
    pub fn keys(&self) -> Vec<RowKey> {
        (0..self.len()).map(|i| self.key(i)).collect()
    }

    /// Marks row `i` as a stored copy of an earlier event: `is_copy` is
    /// its last byte.
    pub fn mark_copy(&mut self, i: usize) {
        if let Some(&end) = self.ends.get(i) {
            self.bytes[end - 1] = 1;
        }
    }

    /// Whether row `i` is marked a copy.
    pub fn is_copy(&self, i: usize) -> bool {
        self.ends
            .get(i)
            .is_some_and(|&end| self.bytes[end - 1] == 1)
    }

    /// The partition of row `i` in `layout`, read back from its bytes: the
    /// org is the first column, `created_at` the second and
    /// `retention_days` the two bytes before the last (`is_copy`).
    pub fn partition_of(&self, layout: Layout, i: usize) -> PartitionKey {
        let row = self.row(i);
        let (len, at) = leading_uvarint(row);
        let org_end = at + len;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&row[org_end..org_end + 8]);
        let created_at =
            DateTime::from_timestamp_micros(i64::from_le_bytes(micros)).unwrap_or_default();
        let retention_days = u16::from_le_bytes([row[row.len() - 3], row[row.len() - 2]]);
        let org_id = match layout {
            Layout::Fleet => Cow::Borrowed(""),
            Layout::OrgDay => String::from_utf8_lossy(&row[at..org_end]),
        };
        layout.key(&org_id, created_at, retention_days)
    }

    /// Splits the rows into inserts that each touch at most `max_partitions`
    /// partitions of `layout`: the rows of each insert, to send after
    /// [`header`]. Rows that fit in one insert (always, in the fleet layout)
    /// are the batch's own bytes, in arrival order; only a split copies.
    /// Deterministic, so a replayed batch repeats the same inserts.
    pub fn inserts(&self, layout: Layout, max_partitions: usize) -> Vec<Cow<'_, [u8]>> {
        let keys: Vec<PartitionKey> = (0..self.len())
            .map(|i| self.partition_of(layout, i))
            .collect();
        match crate::layout::split_by_partition(&keys, max_partitions) {
            None => vec![Cow::Borrowed(self.bytes.as_slice())],
            Some(groups) => groups
                .iter()
                .map(|g| Cow::Owned(g.iter().flat_map(|&i| self.row(i)).copied().collect()))
                .collect(),
        }
    }
}

/// The varint a row starts with (its org's length) and where it ends.
fn leading_uvarint(row: &[u8]) -> (usize, usize) {
    let mut len = 0usize;
    for (k, b) in row.iter().enumerate().take(10) {
        len |= usize::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            return (len, k + 1);
        }
    }
    (0, 0)
}

impl<'a> FromIterator<&'a EventRow> for EncodedRows {
    fn from_iter<I: IntoIterator<Item = &'a EventRow>>(rows: I) -> Self {
        let mut out = EncodedRows::new();
        for r in rows {
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;
    use crate::row::Lineage;

    fn rows() -> Vec<EventRow> {
        examples::all()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                EventRow::from_event(
                    e,
                    Lineage {
                        partition: 3,
                        offset: i as i64,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn columns_match_the_migration_and_the_row_type() {
        // Every column line of the table's CREATE statement, in order.
        let ddl = crate::migrations::MIGRATIONS
            .iter()
            .find(|m| m.sql.contains("CREATE TABLE IF NOT EXISTS ${TABLE}"))
            .map(|m| m.sql)
            .unwrap_or_default();
        let body = ddl
            .split_once("CREATE TABLE IF NOT EXISTS ${TABLE}")
            .and_then(|(_, b)| b.split_once("(\n"))
            .map(|(_, b)| b)
            .unwrap_or_default();
        let declared: Vec<(String, String)> = body
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with(')'))
            .filter(|l| !l.is_empty() && !l.starts_with("INDEX") && !l.starts_with("--"))
            .map(|l| {
                let (name, rest) = l.split_once(' ').unwrap_or((l, ""));
                let rest = rest.trim_end_matches(',');
                let ty = [" CODEC(", " DEFAULT "]
                    .iter()
                    .filter_map(|m| rest.find(m))
                    .min()
                    .map_or(rest, |i| &rest[..i]);
                (name.to_string(), ty.to_string())
            })
            .collect();
        // Columns later migrations add, in order.
        let mut declared = declared;
        for m in crate::migrations::MIGRATIONS {
            for l in m.sql.lines() {
                if let Some(rest) = l.trim().strip_prefix("ADD COLUMN IF NOT EXISTS ") {
                    let mut words = rest.split_whitespace();
                    let name = words.next().unwrap_or_default();
                    let ty = words.next().unwrap_or_default();
                    declared.push((name.to_string(), ty.to_string()));
                }
            }
        }
        let ours: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(declared, ours);
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.join(", "), crate::row::EVENT_COLUMNS);
    }

    #[test]
    fn keys_and_copy_marks_read_back_from_the_bytes() {
        let rows = rows();
        let mut enc: EncodedRows = rows.iter().collect();
        for (i, r) in rows.iter().enumerate() {
            let k = enc.key(i);
            assert_eq!(k.org_id, r.org_id);
            assert_eq!(k.created_at_us, r.created_at.timestamp_micros());
            assert_eq!(k.id, r.id);
            assert_eq!((k.partition, k.offset), (r.kafka_partition, r.kafka_offset));
            assert!(!enc.is_copy(i));
        }
        let before = enc.partition_of(Layout::Fleet, 1);
        enc.mark_copy(1);
        assert!(enc.is_copy(1) && !enc.is_copy(0));
        assert_eq!(enc.partition_of(Layout::Fleet, 1), before);
        let mut marked = rows[1].clone();
        marked.is_copy = true;
        let mut expected = Vec::new();
        write_row(&mut expected, &marked);
        assert_eq!(enc.row(1), expected.as_slice());
    }

    #[test]
    fn partition_keys_read_back_from_the_bytes() {
        let rows = rows();
        let mut enc = EncodedRows::new();
        for r in &rows {
            enc.push(r);
        }
        assert_eq!(enc.len(), rows.len());
        for layout in [Layout::Fleet, Layout::OrgDay] {
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(enc.partition_of(layout, i), layout.partition_of(r));
            }
        }
    }

    #[test]
    fn inserts_keep_every_row_once_and_respect_the_limit() {
        let base = rows();
        let mut enc = EncodedRows::new();
        let mut all = Vec::new();
        for i in 0..60 {
            let mut r = base[i % base.len()].clone();
            r.org_id = format!("org{}", i % 7);
            r.created_at += chrono::Duration::days((i % 5) as i64);
            enc.push(&r);
            all.push(r);
        }
        let one = enc.inserts(Layout::Fleet, 100);
        assert_eq!(one, vec![Cow::Borrowed(enc.as_bytes())]);
        let parts = enc.inserts(Layout::OrgDay, 10);
        assert!(parts.len() > 1);
        // Every row is in exactly one insert, whole.
        let mut found: Vec<&[u8]> = Vec::new();
        for p in &parts {
            let mut rest: &[u8] = p;
            while !rest.is_empty() {
                let i = (0..enc.len())
                    .find(|&i| rest.starts_with(enc.row(i)))
                    .expect("an insert starts with a whole row");
                found.push(enc.row(i));
                rest = &rest[enc.row(i).len()..];
            }
        }
        assert_eq!(found.len(), all.len());
        assert_eq!(parts, enc.inserts(Layout::OrgDay, 10));
    }
}
