//! The pipeline's services as real processes: started from their built
//! binaries, waited for until ready, sampled for memory, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free local port (bound and released at once).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Resident memory of a process in KiB: `(current, peak)` (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process has used so far (user + system), in seconds, from
/// `/proc/PID/stat`: the kernel's own counter, read the same way for our
/// services and for the engines beside them.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A running service.
pub struct Service {
    pub name: String,
    pub port: u16,
    child: Child,
    sampling: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
}

impl Service {
    /// Starts `bin` with `env`, logging to `log`, and waits until its
    /// `/health/ready` answers 200 on `port` (or `timeout`).
    pub async fn start(
        name: &str,
        bin: &Path,
        env: &[(&str, String)],
        port: u16,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Service> {
        let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} (build it first)", bin.display()))?;
        let sampling = Arc::new(AtomicBool::new(true));
        let peak_kib = Arc::new(AtomicU64::new(0));
        // VmHWM is the kernel's own peak; the sampler only keeps it readable
        // after the process is gone.
        std::thread::spawn({
            let (sampling, peak, pid) = (sampling.clone(), peak_kib.clone(), child.id());
            move || {
                while sampling.load(Ordering::Relaxed) {
                    if let Some((_, hwm)) = rss_kib(pid) {
                        peak.fetch_max(hwm, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let mut s = Service {
            name: name.into(),
            port,
            child,
            sampling,
            peak_kib,
        };
        let url = format!("http://127.0.0.1:{port}/health/ready");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                bail!("{name} exited ({status}); see {}", log.display());
            }
            let ok = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(s);
            }
            if Instant::now() > deadline {
                s.stop();
                bail!("{name} not ready after {timeout:?}; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the process has used so far.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid()).unwrap_or(f64::NAN)
    }

    /// Peak resident memory so far, in MiB.
    pub fn peak_mib(&self) -> f64 {
        let now = rss_kib(self.pid()).map_or(0, |(_, hwm)| hwm);
        self.peak_kib.fetch_max(now, Ordering::Relaxed).max(now) as f64 / 1024.0
    }

    /// SIGTERM, then SIGKILL after a short grace.
    pub fn stop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the service binaries are.
#[derive(Debug, Clone)]
pub struct Binaries(pub PathBuf);

impl Binaries {
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Runs a binary's helper command and returns its standard output.
    pub fn output(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new(self.path(name));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .with_context(|| format!("run {name} (build it first)"))?;
        if !out.status.success() {
            bail!(
                "{name} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
