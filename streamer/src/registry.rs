//! The streams this process delivers: one worker per stream, started,
//! updated and stopped as the stored definitions change ([`Registry::sync`]);
//! the index the reader routes by (org → its active streams, so an event's
//! cost does not grow with other orgs' streams); the flush of statuses; and
//! the offsets the reader may commit ([`Registry::holds`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use tokio::sync::watch;
use trailhouse_query_api::access::Access;
use trailhouse_query_api::query::Filter;
use uuid::Uuid;

use crate::deliver::Deliver;
use crate::shared::{Inbox, Positions};
use crate::spec::Stream;
use crate::status::{Mode, Status};
use crate::store::{EventHistory, StoreError, StreamStore};
use crate::worker::{Cell, Pace, SharedCell, Worker};

/// Where the reader sends an org's events.
pub struct Route {
    pub stream: Uuid,
    pub filter: Filter,
    pub inbox: Arc<Inbox>,
}

struct Entry {
    spec: Stream,
    tx: watch::Sender<Option<Stream>>,
    cell: SharedCell,
    inbox: Arc<Inbox>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The streams of this process.
pub struct Registry<D, S> {
    entries: Mutex<HashMap<Uuid, Entry>>,
    index: RwLock<HashMap<String, Arc<[Route]>>>,
    deliver: Arc<D>,
    store: Arc<S>,
    positions: Arc<Positions>,
    access: Arc<Access>,
    pace: Pace,
    inbox_events: usize,
    history_slots: Arc<tokio::sync::Semaphore>,
}

impl<D: Deliver, S: StreamStore + EventHistory> Registry<D, S> {
    pub fn new(
        deliver: Arc<D>,
        store: Arc<S>,
        positions: Arc<Positions>,
        pace: Pace,
        inbox_events: usize,
        history_reads: usize,
    ) -> Self {
        Registry {
            entries: Mutex::default(),
            index: RwLock::default(),
            deliver,
            store,
            positions,
            access: Arc::new(Access::default()),
            pace,
            inbox_events,
            history_slots: Arc::new(tokio::sync::Semaphore::new(history_reads.max(1))),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        }
    }

    /// The active streams of `org`.
    pub fn routes(&self, org: &str) -> Option<Arc<[Route]>> {
        self.index.read().ok()?.get(org).cloned()
    }

    /// Reads the stored streams and statuses and brings the workers in line.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let specs = self.store.streams(None).await?;
        let known: Vec<Uuid> = self.entries().keys().copied().collect();
        let missing = specs.iter().any(|s| !known.contains(&s.id));
        let statuses = if missing {
            self.store.statuses(None).await?
        } else {
            Vec::new()
        };
        self.sync(specs, statuses);
        Ok(())
    }

    /// Starts, updates and stops workers to match `specs`; a new worker
    /// starts from its stored status.
    pub fn sync(&self, specs: Vec<Stream>, statuses: Vec<Status>) {
        let mut statuses: HashMap<Uuid, Status> =
            statuses.into_iter().map(|s| (s.stream_id, s)).collect();
        let mut entries = self.entries();
        let live: Vec<Uuid> = specs.iter().map(|s| s.id).collect();
        entries.retain(|id, e| {
            let keep = live.contains(id);
            if !keep {
                let _ = e.tx.send(None);
            }
            keep
        });
        // Workers start, and specs change, only after the reader's index
        // holds the stream: a worker clearing its inbox must be sure the
        // reader offers it every event from then on.
        let mut sends: Vec<(watch::Sender<Option<Stream>>, Stream)> = Vec::new();
        let mut spawns: Vec<Worker<D, S>> = Vec::new();
        for spec in specs {
            match entries.get_mut(&spec.id) {
                Some(e) if e.spec == spec => {}
                Some(e) => {
                    e.spec = spec.clone();
                    sends.push((e.tx.clone(), spec));
                }
                None => {
                    let mut status = statuses
                        .remove(&spec.id)
                        .unwrap_or_else(|| Status::new(&spec));
                    status.mode = Mode::CatchingUp;
                    let written = status.cursor.clone();
                    let cell: SharedCell = Arc::new(Mutex::new(Cell {
                        status,
                        dirty: false,
                        written,
                    }));
                    let inbox = Arc::new(Inbox::new(self.inbox_events));
                    let (tx, rx) = watch::channel(Some(spec.clone()));
                    spawns.push(Worker {
                        rx,
                        inbox: inbox.clone(),
                        cell: cell.clone(),
                        deliver: self.deliver.clone(),
                        store: self.store.clone(),
                        positions: self.positions.clone(),
                        access: self.access.clone(),
                        pace: self.pace,
                        epoch: u64::MAX,
                        history_slots: self.history_slots.clone(),
                    });
                    entries.insert(
                        spec.id,
                        Entry {
                            spec,
                            tx,
                            cell,
                            inbox,
                            task: None,
                        },
                    );
                }
            }
        }
        let mut index: HashMap<String, Vec<Route>> = HashMap::new();
        for e in entries.values() {
            if e.spec.paused.is_some() {
                continue;
            }
            let Ok(filter) = crate::filter::parse(&e.spec.org_id, &e.spec.filter) else {
                continue;
            };
            index.entry(e.spec.org_id.clone()).or_default().push(Route {
                stream: e.spec.id,
                filter,
                inbox: e.inbox.clone(),
            });
        }
        metrics::gauge!(crate::metrics::STREAMS).set(entries.len() as f64);
        match self.index.write() {
            Ok(mut i) => *i = index.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            Err(p) => *p.into_inner() = index.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
        }
        for w in spawns {
            let id = w.rx.borrow().as_ref().map(|s| s.id);
            let task = tokio::spawn(w.run());
            if let Some(e) = id.and_then(|id| entries.get_mut(&id)) {
                e.task = Some(task);
            }
        }
        drop(entries);
        for (tx, spec) in sends {
            let _ = tx.send(Some(spec));
        }
    }

    /// Writes the statuses that changed; returns how many.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let mut taken: Vec<(SharedCell, Status)> = Vec::new();
        let mut catching = 0usize;
        let mut max_lag = 0f64;
        for e in self.entries().values() {
            let mut c = match e.cell.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            match c.status.mode {
                Mode::CatchingUp => catching += 1,
                Mode::Live => max_lag = max_lag.max(c.status.lag_seconds),
                Mode::Paused => {}
            }
            if c.dirty {
                c.dirty = false;
                c.status.updated_at = Some(now);
                taken.push((e.cell.clone(), c.status.clone()));
            }
        }
        metrics::gauge!(crate::metrics::CATCHING_UP).set(catching as f64);
        metrics::gauge!(crate::metrics::LAG_SECONDS).set(max_lag);
        let statuses: Vec<Status> = taken.iter().map(|(_, s)| s.clone()).collect();
        match self.store.put_statuses(&statuses).await {
            Ok(()) => {
                for (cell, s) in &taken {
                    if let Ok(mut c) = cell.lock() {
                        c.written = s.cursor.clone();
                    }
                }
                Ok(taken.len())
            }
            Err(err) => {
                metrics::counter!(crate::metrics::STATUS_WRITES_FAILED).increment(1);
                for (cell, _) in &taken {
                    if let Ok(mut c) = cell.lock() {
                        c.dirty = true;
                    }
                }
                Err(err)
            }
        }
    }

    /// Per owned partition, the offset the reader may commit: its `done`,
    /// held back to the written (or taken) cursor of every live stream and
    /// the lowest event waiting in a live stream's inbox. Streams catching
    /// up or paused hold nothing: they read ClickHouse.
    pub fn holds(&self) -> BTreeMap<i32, i64> {
        let mut out: BTreeMap<i32, i64> = self
            .positions
            .all()
            .into_iter()
            .filter(|(_, x)| x.owned.load(Ordering::SeqCst))
            .map(|(p, x)| (p, x.done.load(Ordering::SeqCst)))
            .filter(|(_, d)| *d >= 0)
            .collect();
        let mut hold = |p: i32, o: i64| {
            if let Some(v) = out.get_mut(&p) {
                *v = (*v).min(o);
            }
        };
        for e in self.entries().values() {
            let c = match e.cell.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            if c.status.mode != Mode::Live {
                continue;
            }
            for (p, o) in c.written.iter().chain(c.status.cursor.iter()) {
                hold(*p, *o);
            }
            drop(c);
            for (p, o) in e.inbox.lowest() {
                hold(p, o);
            }
        }
        out
    }

    /// A stream's current status (tests).
    pub fn status(&self, id: Uuid) -> Option<Status> {
        let e = self.entries();
        let c = e.get(&id)?.cell.lock().ok()?;
        Some(c.status.clone())
    }

    /// Stops every worker.
    pub fn stop(&self) {
        for (_, e) in self.entries().drain() {
            let _ = e.tx.send(None);
            if let Some(t) = e.task {
                t.abort();
            }
        }
    }
}
