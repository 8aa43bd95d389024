//! The work of one sealed batch, run as its own task: record its range,
//! insert it, wait for its dead letters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use trailhouse_schemas::rowbinary::RowKey;

use crate::batch::Batch;
use crate::copies;
use crate::dlq;
use crate::retry;
use crate::state::{Range, StateStore};
use crate::writer::{RowWriter, WriteError};
use crate::{metrics, Error};

/// A batch to store, with what its copy marks are looked up in.
pub(super) struct Sealed {
    pub batch: Batch,
    pub token: String,
    /// The keys of its rows.
    pub keys: Arc<Vec<RowKey>>,
    /// The keys of the partition's batches sent before it and still in
    /// flight.
    pub earlier: Vec<Arc<Vec<RowKey>>>,
}

/// Records the batch's range, marks its copies, inserts it, then waits for
/// its dead letters: the steps before its commit, in this order.
pub(super) async fn store<W: RowWriter, S: StateStore>(
    writer: Arc<W>,
    state: Arc<S>,
    horizon: Duration,
    sealed: Sealed,
    dead_letters: Vec<JoinHandle<Result<(), dlq::DeadLetterError>>>,
) -> Result<usize, Error> {
    let Sealed {
        mut batch,
        token,
        keys,
        earlier,
    } = sealed;
    let partition = batch.partition;
    let range = Range {
        first: batch.first_offset,
        last: batch.last_offset,
    };
    // Recorded even when every message was poison: a later reading must
    // re-form this range too, or a commit at its end could fall inside a
    // batch of that reading.
    retry::within_horizon(
        retry::Step::Record,
        "record pending range",
        horizon,
        |_| true,
        || state.record(partition, range),
    )
    .await?;
    if !batch.rows.is_empty() {
        let windows = copies::windows(&keys);
        let stored = retry::within_horizon(
            retry::Step::Lookup,
            "look up stored copies",
            horizon,
            WriteError::is_retryable,
            || writer.stored(&windows),
        )
        .await
        .map_err(|source| Error::Insert {
            token: token.clone(),
            source,
        })?;
        let marked = copies::copies(
            &keys,
            stored.iter().chain(earlier.iter().flat_map(|k| k.iter())),
        );
        for &i in &marked {
            batch.rows.mark_copy(i);
        }
        if !marked.is_empty() {
            ::metrics::counter!(metrics::COPIES_MARKED).increment(marked.len() as u64);
        }
        let started = Instant::now();
        let bytes = batch.bytes();
        let span = tracing::info_span!("insert", rows = batch.rows.len(), bytes, token = %token);
        tracing::Instrument::instrument(insert_with_retry(&*writer, &batch, &token, horizon), span)
            .await
            .map_err(|source| Error::Insert {
                token: token.clone(),
                source,
            })?;
        ::metrics::histogram!(metrics::INSERT_SECONDS).record(started.elapsed().as_secs_f64());
        ::metrics::counter!(metrics::BYTES_INSERTED).increment(bytes as u64);
        ::metrics::gauge!(metrics::LAST_INSERT).set(unix_now());
    }
    for d in dead_letters {
        d.await.map_err(|e| Error::Task(e.to_string()))??;
    }
    Ok(batch.rows.len())
}

/// Inserts a batch, retrying transient failures with the same deduplication
/// token until `horizon` has passed.
async fn insert_with_retry<W: RowWriter>(
    writer: &W,
    batch: &Batch,
    token: &str,
    horizon: Duration,
) -> Result<(), WriteError> {
    retry::within_horizon(
        retry::Step::Insert,
        token,
        horizon,
        WriteError::is_retryable,
        || writer.insert(&batch.rows, token),
    )
    .await
}

/// Seconds since the epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
