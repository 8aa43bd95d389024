//! The ingest service's configuration: flags and environment variables,
//! parsed into typed values at the command line.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::Args;
use trailhouse_common::kafka::KafkaArgs;
use trailhouse_common::ratelimit::{RateOverrides, RateSetting};
use trailhouse_layer::redact::{OpaqueBody, Rules};
use trailhouse_layer::{Compression, Redactor};
use trailhouse_schemas::retention::{
    RetentionConfigError, RetentionPolicy, DEFAULT_RETENTION_DAYS, RETENTION_CLASSES,
};

use crate::auth::{KeyList, KeyStore};
use crate::Error;

/// Configuration of the ingest service.
#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    /// Address to listen on.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Per-org API keys as `org:sha256hex,...` (see `trailhouse-ingest new-key`).
    #[arg(long, env = "TRAILHOUSE_INGEST_KEYS", default_value = "")]
    pub keys: KeyList,
    /// Service keys allowed to write any org, as `name:sha256hex,...`.
    #[arg(long, env = "TRAILHOUSE_INGEST_SERVICE_KEYS", default_value = "")]
    pub service_keys: KeyList,
    #[arg(long, env = "TRAILHOUSE_INGEST_MAX_BODY_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_MAX_BATCH_EVENTS",
        default_value_t = 1000
    )]
    pub max_batch_events: usize,
    /// The largest Kafka message the producer sends (`message.max.bytes`;
    /// keep it at or under the topic's `max.message.bytes`). An event whose
    /// message would be larger is refused with 413 at validation.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_MAX_MESSAGE_BYTES",
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u32).range(4096..=1_000_000_000).map(|v| v as usize)
    )]
    pub max_message_bytes: usize,
    /// Refuse events older than this many days (400), on top of the org's
    /// retention, which always applies. Unset: only the retention.
    #[arg(long, env = "TRAILHOUSE_INGEST_MAX_BACKFILL_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_backfill_days: Option<u32>,
    /// Kafka compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, env = "TRAILHOUSE_INGEST_COMPRESSION", default_value = "lz4")]
    pub compression: Compression,
    /// How long an event may wait for Kafka's acknowledgement.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_ACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub ack_timeout_ms: u64,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_MAX_IN_FLIGHT",
        default_value_t = 256,
        value_parser = at_least_one
    )]
    pub max_in_flight: usize,
    /// Redaction rules, e.g. `defaults, mask body:ssn, drop headers:x-debug`
    /// or `keep body:auth_type, defaults` (see the ingest README).
    #[arg(long, env = "TRAILHOUSE_INGEST_REDACT", default_value = "defaults")]
    pub redact: Rules,
    /// What to do with a `request.body` that is neither JSON nor form data:
    /// `mask` (replace it) or `keep`.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_REDACT_OPAQUE_BODY",
        default_value = "mask"
    )]
    pub redact_opaque_body: OpaqueBody,
    /// Retention class (days) of orgs not listed in `retention_orgs`; one of
    /// 7, 30, 90, 180, 365, 730, 1095, 2555.
    #[arg(long, env = "TRAILHOUSE_RETENTION_DEFAULT_DAYS", default_value_t = RetentionClass::default())]
    pub retention_default_days: RetentionClass,
    /// Per-org retention classes: `acme=365,globex=30`.
    #[arg(long, env = "TRAILHOUSE_RETENTION_ORGS", default_value = "")]
    pub retention_orgs: OrgRetention,
    /// Requests per org (org keys; service keys are not limited):
    /// `COUNT/UNIT[:BURST]` (`s`, `min`, `hour`) or `off`.
    #[arg(long, env = "TRAILHOUSE_INGEST_RATE_LIMIT", default_value = "6000/min")]
    pub rate_limit: RateSetting,
    /// Per-org rates, `org=RATE` pairs separated by commas.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_RATE_LIMIT_OVERRIDES",
        default_value = ""
    )]
    pub rate_limit_overrides: RateOverrides,
    /// Deadline for draining requests and flushing the producer on shutdown.
    #[arg(
        long,
        env = "TRAILHOUSE_INGEST_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub shutdown_timeout_secs: u64,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A retention class in days: one of [`RETENTION_CLASSES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionClass(u16);

impl RetentionClass {
    pub fn days(self) -> u16 {
        self.0
    }
}

impl Default for RetentionClass {
    fn default() -> Self {
        RetentionClass(DEFAULT_RETENTION_DAYS)
    }
}

impl fmt::Display for RetentionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<u16> for RetentionClass {
    type Error = RetentionConfigError;

    fn try_from(days: u16) -> Result<Self, Self::Error> {
        if RETENTION_CLASSES.contains(&days) {
            Ok(RetentionClass(days))
        } else {
            Err(RetentionConfigError::NotAClass(days))
        }
    }
}

/// A `--retention-default-days` value that is not a retention class.
#[derive(Debug, thiserror::Error)]
pub enum RetentionClassError {
    #[error("{0:?} is not a number of days")]
    NotANumber(String),
    #[error(transparent)]
    NotAClass(#[from] RetentionConfigError),
}

impl FromStr for RetentionClass {
    type Err = RetentionClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let days: u16 = s
            .trim()
            .parse()
            .map_err(|_| RetentionClassError::NotANumber(s.to_string()))?;
        Ok(RetentionClass::try_from(days)?)
    }
}

/// Per-org retention classes, `org=days,...`, checked when parsed (every
/// entry well formed, every org once, every number a retention class).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgRetention(String);

impl FromStr for OrgRetention {
    type Err = RetentionConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetentionPolicy::parse(DEFAULT_RETENTION_DAYS, s)?;
        Ok(OrgRetention(s.to_string()))
    }
}

impl IngestConfig {
    /// The rules that involve more than one setting; each setting on its own
    /// was checked when it was parsed.
    pub fn validate(&self) -> Result<(), Error> {
        self.kafka
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.keys.is_empty() && self.service_keys.is_empty() {
            return Err(Error::Config(
                "no ingest keys configured (TRAILHOUSE_INGEST_KEYS or TRAILHOUSE_INGEST_SERVICE_KEYS)"
                    .into(),
            ));
        }
        if self.request_timeout() <= Duration::from_millis(self.ack_timeout_ms) {
            return Err(Error::Config(
                "request timeout must exceed the ack timeout".into(),
            ));
        }
        Ok(())
    }

    /// Every configured key.
    pub fn key_store(&self) -> KeyStore {
        KeyStore::new(&self.keys, &self.service_keys)
    }

    /// The redaction applied to every event.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.redact.clone(), self.redact_opaque_body)
    }

    /// Each org's retention class.
    pub fn retention(&self) -> Result<RetentionPolicy, Error> {
        RetentionPolicy::parse(self.retention_default_days.days(), &self.retention_orgs.0)
            .map_err(|e| Error::Config(e.to_string()))
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms) + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_key;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: IngestConfig,
    }

    fn parse(args: &[&str]) -> Result<IngestConfig, String> {
        let argv = std::iter::once("ingest").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn settings_parse_into_types() {
        let key = format!("acme:{}", hash_key("k"));
        let c = parse(&[
            "--keys",
            &key,
            "--compression",
            "zstd",
            "--redact",
            "defaults, mask body:ssn",
            "--redact-opaque-body",
            "keep",
            "--retention-default-days",
            "30",
            "--retention-orgs",
            "acme=365",
        ])
        .expect("parses");
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.redact_opaque_body, OpaqueBody::Keep);
        assert_eq!(
            c.redactor().rules().len(),
            Redactor::default().rules().len() + 1
        );
        assert_eq!(c.retention_default_days.days(), 30);
        let retention = c.retention().expect("policy");
        assert_eq!(retention.days_for("acme"), 365);
        assert_eq!(retention.days_for("globex"), 30);
        assert!(c.key_store().verify("k").is_some());
        c.validate().expect("valid");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]).expect("parses");
        assert_eq!(c.compression, Compression::Lz4);
        assert_eq!(c.redactor(), Redactor::default());
        assert_eq!(c.retention_default_days.days(), DEFAULT_RETENTION_DAYS);
        assert_eq!(c.retention().expect("policy"), RetentionPolicy::default());
        assert_eq!(c.max_in_flight, 256);
        assert!(c.validate().is_err(), "no keys configured");
    }

    #[test]
    fn a_bad_value_is_a_cli_error_naming_the_flag_and_the_reason() {
        let cases: [(&[&str], &str, &str); 8] = [
            (
                &["--compression", "brotli"],
                "--compression",
                "not one of none, gzip",
            ),
            (
                &["--redact", "hide password"],
                "--redact",
                "redaction rule \"hide password\"",
            ),
            (
                &["--redact-opaque-body", "sometimes"],
                "--redact-opaque-body",
                "`mask` or `keep`",
            ),
            (
                &["--retention-default-days", "31"],
                "--retention-default-days",
                "not a retention class",
            ),
            (
                &["--retention-default-days", "a"],
                "--retention-default-days",
                "not a number of days",
            ),
            (
                &["--retention-orgs", "acme=31"],
                "--retention-orgs",
                "not a retention class",
            ),
            (
                &["--keys", "acme:zz"],
                "--keys",
                "is not `<name>:<sha256 hex>`",
            ),
            (
                &["--max-in-flight", "0"],
                "--max-in-flight",
                "must be at least 1",
            ),
        ];
        for (args, flag, reason) in cases {
            let err = parse(args).err().unwrap_or_default();
            assert!(err.contains(flag), "{args:?}: {err}");
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }

    #[test]
    fn retention_values_parse() {
        let classes = [
            ("7", Some(7)),
            (" 90 ", Some(90)),
            ("2555", Some(2555)),
            ("0", None),
            ("31", None),
            ("-7", None),
            ("ninety", None),
        ];
        for (input, want) in classes {
            let got = input
                .parse::<RetentionClass>()
                .ok()
                .map(RetentionClass::days);
            assert_eq!(got, want, "{input:?}");
        }
        let orgs = [
            ("", true),
            ("acme=365, globex=30", true),
            ("acme", false),
            ("acme=365,acme=30", false),
            ("=30", false),
            ("acme=31", false),
        ];
        for (input, ok) in orgs {
            assert_eq!(input.parse::<OrgRetention>().is_ok(), ok, "{input:?}");
        }
    }

    #[test]
    fn the_help_text_of_each_flag_is_its_own() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        // The lines after a flag's line, up to the next flag.
        let section = |flag: &str| -> String {
            help.lines()
                .skip_while(|l| !l.trim_start().starts_with(flag))
                .skip(1)
                .take_while(|l| !l.trim_start().starts_with('-'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(section("--shutdown-timeout-secs").contains("Deadline for draining"));
        let retention = section("--retention-default-days");
        assert!(retention.contains("Retention class"), "{retention}");
        assert!(!retention.contains("Deadline"), "{retention}");
    }
}
