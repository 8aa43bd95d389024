//! Shutdown signals: the first SIGTERM or Ctrl-C starts a graceful shutdown,
//! a second one exits at once.

use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT. After it fires, a second signal
/// exits the process with status 130.
pub async fn signal() {
    wait_one().await;
    tracing::info!("shutdown signal received, draining (send again to force exit)");
    tokio::spawn(async {
        wait_one().await;
        tracing::warn!("second shutdown signal, exiting now");
        std::process::exit(130);
    });
}

async fn wait_one() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM, using Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A shutdown trigger that can be cloned into every task and fired once,
/// by a signal in production or by a test.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    /// Fires the shutdown.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the shutdown has fired.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Fires this shutdown when the process receives a signal.
    pub fn on_signal(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            signal().await;
            this.trigger();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_after_trigger() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.trigger();
        waiter.await.expect("join");
        assert!(s.is_triggered());
        s.wait().await;
    }
}
