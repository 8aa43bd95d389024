//! The port through which events leave the process: [`EventSink`], its
//! implementation through the ingest API ([`HttpSink`]) and the test double
//! ([`MemorySink`]). The Kafka implementation is `KafkaSink`, behind the
//! `kafka` feature.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use trailhouse_schemas::AuditEvent;

/// Why events could not be published. Every variant means "not acknowledged":
/// the client must retry (with the same ids to stay idempotent).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("kafka did not acknowledge: {0}")]
    Unavailable(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
    /// The broker's (or the producer's) message size limit: the same event
    /// can never be published.
    #[error("an event is over the message size limit: {0}")]
    TooLarge(String),
    #[error("the ingest API refused the events: {0}")]
    Rejected(String),
}

impl SinkError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            SinkError::Encode(_) | SinkError::Rejected(_) | SinkError::TooLarge(_)
        )
    }
}

/// An event on its way out, with the W3C trace context it continues. The
/// event cannot change once wrapped, so an encoding made for it (ingest
/// makes one for its size check) stays its encoding and is reused by the
/// Kafka sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    event: AuditEvent,
    traceparent: Option<Arc<str>>,
    encoded: Option<Vec<u8>>,
}

impl Envelope {
    pub fn new(event: AuditEvent) -> Self {
        Envelope {
            event,
            traceparent: None,
            encoded: None,
        }
    }

    /// Written to the Kafka message's `traceparent` header.
    pub fn with_traceparent(mut self, traceparent: Option<Arc<str>>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    pub fn into_event(self) -> AuditEvent {
        self.event
    }

    /// The event's Avro encoding, made on the first call and kept.
    pub fn encode(&mut self) -> Result<&[u8], SinkError> {
        let bytes = match self.encoded.take() {
            Some(b) => b,
            None => trailhouse_schemas::encode(&self.event)
                .map_err(|e| SinkError::Encode(e.to_string()))?,
        };
        Ok(self.encoded.insert(bytes))
    }

    /// The event's Avro encoding: the kept one, or a new one.
    pub fn payload(&self) -> Result<std::borrow::Cow<'_, [u8]>, SinkError> {
        match &self.encoded {
            Some(b) => Ok(std::borrow::Cow::Borrowed(b)),
            None => trailhouse_schemas::encode(&self.event)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| SinkError::Encode(e.to_string())),
        }
    }

    /// Whether an encoding is kept.
    pub fn is_encoded(&self) -> bool {
        self.encoded.is_some()
    }
}

/// Publishes events and resolves only once every one is durably acknowledged.
pub trait EventSink: Send + Sync + 'static {
    fn publish(
        &self,
        events: &[Envelope],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;

    /// Waits until everything queued is delivered, up to `deadline`.
    fn flush(&self, deadline: Duration) -> Result<(), SinkError>;
}

/// Publishes through a Trailhouse ingest service's `POST /v1/events`, for
/// producers that should not hold Kafka credentials. A batch is one request;
/// 202 means Kafka acknowledged every event of it.
#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    endpoint: Arc<str>,
    authorization: Arc<str>,
}

impl HttpSink {
    /// `base_url` is the ingest service (e.g. `https://ingest.example.com`),
    /// `api_key` an org or service key.
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self, SinkError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        Ok(HttpSink {
            client,
            endpoint: Arc::from(format!("{}/v1/events", base_url.trim_end_matches('/'))),
            authorization: Arc::from(format!("Bearer {api_key}")),
        })
    }
}

/// An event as the ingest API takes it: the canonical JSON without the
/// server-stamped `received_at`.
pub fn input_json(event: &AuditEvent) -> Result<serde_json::Value, SinkError> {
    let mut v = serde_json::to_value(event).map_err(|e| SinkError::Encode(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("received_at");
    }
    Ok(v)
}

impl EventSink for HttpSink {
    async fn publish(&self, events: &[Envelope]) -> Result<(), SinkError> {
        let body = events
            .iter()
            .map(|e| input_json(e.event()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut request = self
            .client
            .post(&*self.endpoint)
            .header(reqwest::header::AUTHORIZATION, &*self.authorization)
            .json(&body);
        if let Some(tp) = events.first().and_then(Envelope::traceparent) {
            request = request.header(TRACEPARENT, tp);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let detail = format!("{status}: {}", text.chars().take(500).collect::<String>());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(SinkError::Unavailable(detail))
        } else {
            Err(SinkError::Rejected(detail))
        }
    }

    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The Kafka header that carries the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// An in-memory sink for tests: records what it was given, or fails on demand.
#[derive(Clone, Default)]
pub struct MemorySink {
    pub events: Arc<Mutex<Vec<Envelope>>>,
    pub fail_with_queue_full: Arc<std::sync::atomic::AtomicBool>,
}

impl MemorySink {
    /// The events published so far.
    pub fn taken(&self) -> Vec<AuditEvent> {
        self.envelopes()
            .into_iter()
            .map(Envelope::into_event)
            .collect()
    }

    /// The envelopes published so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    async fn publish(&self, events: &[Envelope]) -> Result<(), SinkError> {
        if self
            .fail_with_queue_full
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(SinkError::QueueFull);
        }
        if let Ok(mut v) = self.events.lock() {
            v.extend_from_slice(events);
        }
        Ok(())
    }

    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}
