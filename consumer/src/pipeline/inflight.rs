//! How many insert tasks each partition has running, so that a revoke can
//! wait for them: a partition must not move to another member while one of
//! its batches is still being recorded or inserted here, or the new owner
//! could plan its batches without seeing that range.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Running insert tasks per partition, shared by the pipeline (which starts
/// them) and the Kafka adapter's revoke callback (which waits for them).
#[derive(Default)]
pub struct InFlightCounts {
    counts: Mutex<BTreeMap<i32, usize>>,
    changed: Condvar,
}

impl InFlightCounts {
    /// Counts a task of `partition` until the returned guard is dropped
    /// (when the task ends, or is aborted).
    pub fn start(self: &Arc<Self>, partition: i32) -> InFlightGuard {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(partition).or_default() += 1;
        }
        InFlightGuard {
            counts: self.clone(),
            partition,
        }
    }

    /// Tasks of `partition` running now.
    pub fn running(&self, partition: i32) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(&partition).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Waits until no task of `partitions` runs, at most `deadline`;
    /// returns whether they all finished.
    pub fn wait_idle(&self, partitions: &[i32], deadline: Duration) -> bool {
        let busy = |c: &BTreeMap<i32, usize>| {
            partitions
                .iter()
                .any(|p| c.get(p).copied().unwrap_or(0) > 0)
        };
        let Ok(guard) = self.counts.lock() else {
            return false;
        };
        match self
            .changed
            .wait_timeout_while(guard, deadline, |c| busy(c))
        {
            Ok((c, _)) => !busy(&c),
            Err(_) => false,
        }
    }
}

/// One running task of a partition; dropping it ends the count.
pub struct InFlightGuard {
    counts: Arc<InFlightCounts>,
    partition: i32,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.counts.lock() {
            if let Some(n) = c.get_mut(&self.partition) {
                *n = n.saturating_sub(1);
            }
        }
        self.counts.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revokes_wait_for_the_partitions_in_flight_tasks_only() {
        let counts = Arc::new(InFlightCounts::default());
        let a = counts.start(1);
        let b = counts.start(1);
        let other = counts.start(2);
        assert_eq!(counts.running(1), 2);
        assert!(!counts.wait_idle(&[1], Duration::from_millis(20)));
        assert!(counts.wait_idle(&[3], Duration::from_millis(20)));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(a);
            std::thread::sleep(Duration::from_millis(30));
            drop(b);
        });
        assert!(counts.wait_idle(&[1], Duration::from_secs(5)));
        assert!(!counts.wait_idle(&[1, 2], Duration::from_millis(20)));
        drop(other);
        assert!(counts.wait_idle(&[1, 2], Duration::from_millis(20)));
        t.join().expect("thread");
    }
}
