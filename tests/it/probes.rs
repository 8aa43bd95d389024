//! The consumer's readiness means something: it stays ready through a short
//! broker outage, turns not ready once no broker has been reachable for
//! `broker_not_ready_secs`, keeps its partitions' lag series meanwhile, and
//! is ready again as soon as the broker is back.

use std::time::{Duration, Instant};

use trailhouse_tests::faults::Broker;
use trailhouse_tests::scrape::scrape;
use trailhouse_tests::TestEnv;

async fn ready(env: &TestEnv, url: &str) -> bool {
    env.http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn wait_ready(env: &TestEnv, url: &str, want: bool, secs: u64) -> Duration {
    let started = Instant::now();
    while ready(env, url).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "readiness never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_is_not_ready_while_no_broker_is_reachable() {
    if !trailhouse_tests::faults::needs_durable_broker(
        "the_consumer_is_not_ready_while_no_broker_is_reachable",
    ) {
        return;
    }
    let mut broker = Broker::start();
    let mut env = TestEnv::with_brokers("consumer_probe", &broker.address(), 1).await;
    let url = env
        .start_consumer_serving_with(|c| c.broker_not_ready_secs = 3)
        .await;
    wait_ready(&env, &url, true, 30).await;
    use trailhouse_consumer::metrics as m;
    let assigned = Instant::now() + Duration::from_secs(60);
    while scrape(&env.http, &url)
        .await
        .value(m::LAG_SECONDS, &[("partition", "0")])
        .is_none()
    {
        assert!(Instant::now() < assigned, "partition 0 was never assigned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.kill9();
    let took = wait_ready(&env, &url, false, 30).await;
    assert!(
        took >= Duration::from_secs(3),
        "not ready after {took:?}, before the configured 3 s"
    );
    let s = scrape(&env.http, &url).await;
    assert_eq!(s.value(m::BROKER_UP, &[]), Some(0.0));
    assert_eq!(s.value("trailhouse_ready", &[]), Some(0.0));
    assert!(
        s.value(m::LAG_SECONDS, &[("partition", "0")]).is_some(),
        "the partition's series stay while it is assigned:\n{}",
        s.text
    );
    broker.restart();
    wait_ready(&env, &url, true, 60).await;
    let s = scrape(&env.http, &url).await;
    assert_eq!(s.value(m::BROKER_UP, &[]), Some(1.0));
    env.stop().await;
}
