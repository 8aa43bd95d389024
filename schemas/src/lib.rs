//! The Trailhouse audit event contract.
//!
//! * [`event`]: the canonical event, its JSON input shape and validation;
//! * [`avro`]: Avro single-object encoding as carried in Kafka, with schema evolution;
//! * [`row`]: the ClickHouse row and its mapping to and from the event;
//! * [`migrations`]: the ClickHouse DDL, versioned templates;
//! * [`layout`]: storage layouts and topologies the DDL is rendered for;
//! * [`retention`]: retention classes, per-org policy, partition expiry;
//! * [`trace`]: the W3C `traceparent` carried with each event;
//! * [`examples`]: example payloads used by tests and demo data.

pub mod avro;
pub mod event;
pub mod examples;
pub mod layout;
pub mod migrations;
pub mod retention;
pub mod row;
pub mod rowbinary;
pub mod trace;

pub use avro::{decode, encode, AvroError};
pub use event::{
    parse_input, parse_input_json, validate, AuditEvent, EventInput, FieldError, Stamp, SystemStamp,
};
pub use migrations::{EVENTS_TABLE, STATE_TABLE, STREAMS_TABLE, STREAM_STATUS_TABLE};
pub use row::{EventRow, Lineage, EVENT_COLUMNS};
