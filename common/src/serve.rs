//! Running an HTTP service with the shutdown order every service follows.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::health::Health;
use crate::shutdown::Shutdown;

/// Serves `router` until `shutdown` fires: readiness goes false, the listener
/// stops accepting, and in-flight requests get up to `deadline` to finish.
/// Handlers can read the peer's address (`ConnectInfo<SocketAddr>`).
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    health: Health,
    deadline: Duration,
) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, service).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            health.set_ready(false);
        }
    });
    let server = tokio::spawn(async move { serve.await });
    shutdown.wait().await;
    match tokio::time::timeout(deadline, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish before the deadline"),
    }
}

/// Keeps `health` in step with `check`, run every `every` until shutdown.
pub fn spawn_probe<F, Fut>(
    health: Health,
    shutdown: Shutdown,
    every: Duration,
    check: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        while !shutdown.is_triggered() {
            let ok = check().await;
            health.set_ready(ok && !shutdown.is_triggered());
            tokio::select! {
                _ = tokio::time::sleep(every) => {},
                _ = shutdown.wait() => {},
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_follows_the_check_and_stops_on_shutdown() {
        let (health, shutdown) = (Health::new(), Shutdown::new());
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = flag.clone();
        let task = spawn_probe(
            health.clone(),
            shutdown.clone(),
            Duration::from_millis(5),
            move || {
                let f = f.clone();
                async move { f.load(std::sync::atomic::Ordering::Relaxed) }
            },
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(health.is_ready());
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!health.is_ready());
        shutdown.trigger();
        task.await.expect("probe ends");
    }
}
