//! The port to destinations: [`Deliver`] sends one batch of one stream, and
//! for object stores says where a stream's objects end (so a restart
//! continues after the last object written, exactly once). [`Destinations`]
//! is the real implementation (HTTP through reqwest, object stores through
//! `object_store`); [`MemorySink`] the test double.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::encode::{self, Batch};
use crate::spec::{Destination, Stream};

/// Why a delivery failed (always retried, until the stream pauses itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the destination answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("could not reach the destination: {0}")]
    Transport(String),
    #[error("object store: {0}")]
    Store(String),
    #[error("this streamer cannot deliver to {0} destinations")]
    Unsupported(&'static str),
}

/// Sends batches.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `batch` of `stream`; objects go under `dir` (`live`,
    /// `replay-N` or `test`).
    fn send(
        &self,
        stream: &Stream,
        dir: &str,
        batch: &Batch,
    ) -> impl std::future::Future<Output = Result<(), DeliveryError>> + Send;

    /// For object stores: the last offset of `partition` already written
    /// under `dir`; `None` when nothing is (or the destination keeps no
    /// objects).
    fn written_through(
        &self,
        stream: &Stream,
        dir: &str,
        partition: i32,
    ) -> impl std::future::Future<Output = Result<Option<i64>, DeliveryError>> + Send;
}

/// Per-request timeout of HTTP deliveries.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The real destinations.
#[derive(Clone)]
pub struct Destinations {
    http: reqwest::Client,
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    producers: Arc<Mutex<HashMap<String, FutureProducer>>>,
}

impl Default for Destinations {
    fn default() -> Self {
        Destinations::new()
    }
}

impl Destinations {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("trailhouse-streamer/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Destinations {
            http,
            stores: Arc::default(),
            producers: Arc::default(),
        }
    }

    /// An idempotent producer to a tenant's brokers, built once.
    fn producer(&self, brokers: &str) -> Result<FutureProducer, DeliveryError> {
        let mut p = self
            .producers
            .lock()
            .map_err(|_| DeliveryError::Transport("poisoned".into()))?;
        if let Some(x) = p.get(brokers) {
            return Ok(x.clone());
        }
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", "zstd")
            .set("message.timeout.ms", "15000")
            .create()
            .map_err(|e| DeliveryError::Transport(format!("kafka {brokers}: {e}")))?;
        p.insert(brokers.to_string(), producer.clone());
        Ok(producer)
    }

    async fn produce(&self, stream: &Stream, batch: &Batch) -> Result<(), DeliveryError> {
        let Destination::Kafka { brokers, topic } = &stream.destination else {
            return Err(DeliveryError::Unsupported(stream.destination.kind()));
        };
        let producer = self.producer(brokers)?;
        let key = batch.idempotency_key();
        let stream_id = stream.id.to_string();
        let sends = batch.events.iter().map(|e| {
            let payload = e.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "trailhouse-stream-id",
                    value: Some(stream_id.as_str()),
                })
                .insert(Header {
                    key: encode::IDEMPOTENCY_HEADER,
                    value: Some(key.as_str()),
                });
            let producer = producer.clone();
            let org = stream.org_id.clone();
            let topic = topic.clone();
            async move {
                let record = FutureRecord::to(&topic)
                    .key(&org)
                    .payload(&payload)
                    .headers(headers);
                producer
                    .send(record, Duration::from_secs(15))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| DeliveryError::Transport(format!("kafka: {e}")))
            }
        });
        // In order on one connection (idempotent producer): all or retried.
        for r in futures::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }

    /// The object store of a URL and the prefix inside it, built once.
    fn store(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, String), DeliveryError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| DeliveryError::Store(format!("{url}: {e}")))?;
        let prefix = if parsed.scheme() == "file" {
            String::new()
        } else {
            parsed.path().trim_matches('/').to_string()
        };
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| DeliveryError::Store("poisoned".into()))?;
        if let Some(s) = stores.get(url) {
            return Ok((s.clone(), prefix));
        }
        let err = |e: object_store::Error| DeliveryError::Store(e.to_string());
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(err)?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(err)?,
            ),
            "az" | "abfs" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(err)?,
            ),
            "file" => {
                let dir = parsed.path();
                std::fs::create_dir_all(dir)
                    .map_err(|e| DeliveryError::Store(format!("{dir}: {e}")))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(err)?)
            }
            s => return Err(DeliveryError::Store(format!("unknown scheme {s}"))),
        };
        stores.insert(url.to_string(), store.clone());
        Ok((store, prefix))
    }

    async fn post(&self, stream: &Stream, batch: &Batch) -> Result<(), DeliveryError> {
        let body = encode::http_body(&stream.destination, &batch.events);
        let (url, mut req) = match &stream.destination {
            Destination::Webhook { url, .. } => {
                let ts = chrono::Utc::now().timestamp();
                let sig = encode::signature(&stream.secrets.signing, ts, &body.bytes);
                (
                    url,
                    self.http.post(url).header(encode::SIGNATURE_HEADER, sig),
                )
            }
            Destination::Splunk { url, .. } => {
                let token = stream.secrets.credential.clone().unwrap_or_default();
                (
                    url,
                    self.http
                        .post(url)
                        .header("authorization", format!("Splunk {token}")),
                )
            }
            Destination::Datadog { url, .. } => {
                let key = stream.secrets.credential.clone().unwrap_or_default();
                (url, self.http.post(url).header("dd-api-key", key))
            }
            other => return Err(DeliveryError::Unsupported(other.kind())),
        };
        req = req
            .header("content-type", body.content_type)
            .header(encode::IDEMPOTENCY_HEADER, batch.idempotency_key())
            .header("trailhouse-stream-id", stream.id.to_string());
        if body.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = req
            .body(body.bytes)
            .send()
            .await
            // Without the URL, whose query may hold a token.
            .map_err(|e| {
                DeliveryError::Transport(format!("{}: {}", redact_url(url), e.without_url()))
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(DeliveryError::Status {
            status: status.as_u16(),
            body: text.chars().take(200).collect(),
        })
    }
}

/// A URL without its query (which may hold a token).
fn redact_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn object_name(prefix: &str, dir: &str, batch: &Batch) -> String {
    let p = prefix.trim_matches('/');
    let base = if p.is_empty() {
        dir.to_string()
    } else {
        format!("{p}/{dir}")
    };
    batch.object_path(&base)
}

impl Deliver for Destinations {
    async fn send(&self, stream: &Stream, dir: &str, batch: &Batch) -> Result<(), DeliveryError> {
        match &stream.destination {
            Destination::ObjectStore { url } => {
                let (store, prefix) = self.store(url)?;
                let path = ObjectPath::from(object_name(&prefix, dir, batch));
                let body = encode::object_body(&batch.events);
                store
                    .put(&path, PutPayload::from(body))
                    .await
                    .map_err(|e| DeliveryError::Store(e.to_string()))?;
                Ok(())
            }
            Destination::Kafka { .. } => self.produce(stream, batch).await,
            _ => self.post(stream, batch).await,
        }
    }

    async fn written_through(
        &self,
        stream: &Stream,
        dir: &str,
        partition: i32,
    ) -> Result<Option<i64>, DeliveryError> {
        let Destination::ObjectStore { url } = &stream.destination else {
            return Ok(None);
        };
        let (store, prefix) = self.store(url)?;
        let probe = Batch {
            stream: stream.id,
            partition,
            first_offset: 0,
            last_offset: 0,
            events: Vec::new(),
        };
        let name = object_name(&prefix, dir, &probe);
        let folder = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let listed: Vec<_> = store
            .list(Some(&ObjectPath::from(folder)))
            .try_collect()
            .await
            .map_err(|e| DeliveryError::Store(e.to_string()))?;
        Ok(listed
            .iter()
            .filter_map(|m| encode::object_range(m.location.as_ref()))
            .map(|(_, last)| last)
            .max())
    }
}

/// What a [`MemorySink`] received, per stream: (dir, batch).
pub type Received = Vec<(String, Batch)>;

/// Records batches; fails while told to.
#[derive(Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<(HashMap<uuid::Uuid, Received>, bool)>>,
}

impl MemorySink {
    pub fn set_failing(&self, fail: bool) {
        if let Ok(mut g) = self.inner.lock() {
            g.1 = fail;
        }
    }

    /// Every batch a stream received, in order.
    pub fn received(&self, stream: uuid::Uuid) -> Received {
        self.inner
            .lock()
            .map(|g| g.0.get(&stream).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Deliver for MemorySink {
    async fn send(&self, stream: &Stream, dir: &str, batch: &Batch) -> Result<(), DeliveryError> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| DeliveryError::Transport("poisoned".into()))?;
        if g.1 {
            return Err(DeliveryError::Transport("refused (test)".into()));
        }
        g.0.entry(stream.id)
            .or_default()
            .push((dir.to_string(), batch.clone()));
        Ok(())
    }

    async fn written_through(
        &self,
        stream: &Stream,
        dir: &str,
        partition: i32,
    ) -> Result<Option<i64>, DeliveryError> {
        if !matches!(stream.destination, Destination::ObjectStore { .. }) {
            return Ok(None);
        }
        Ok(self
            .received(stream.id)
            .iter()
            .filter(|(d, b)| d == dir && b.partition == partition)
            .map(|(_, b)| b.last_offset)
            .max())
    }
}
