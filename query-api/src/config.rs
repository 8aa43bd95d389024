//! The configuration of the query API. Values are parsed into their types
//! by clap (a bad value is a CLI error naming it); [`QueryConfig::validate`]
//! keeps the rules that span fields or guard secrets, whose values a CLI
//! error would print.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use clap::Args;
use ipnet::IpNet;
use trailhouse_common::clickhouse::ClickHouseArgs;
use trailhouse_common::ratelimit::{OrgRateLimiter, RateOverrides, RateSetting};
use trailhouse_common::Secret;

use crate::access::{self, DetailHeaders, RolePermissions};
use crate::auth::{self, JwtAlgorithm};
use crate::guard::Guard;
use crate::store::ClickHouseLimits;
use crate::viewer_token::{self, ViewerKey};
use crate::Error;

/// Configuration of the query API.
#[derive(Debug, Clone, Args)]
pub struct QueryConfig {
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Secret that signs page cursors (at least 16 bytes; required to
    /// serve, checked by [`QueryConfig::validate`] so that the token
    /// subcommands do not need it).
    #[arg(long, env = "TRAILHOUSE_CURSOR_SECRET", hide_env_values = true)]
    pub cursor_secret: Option<Secret>,
    /// Role → permission grants, `role:permission` pairs separated by commas.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_ROLE_PERMISSIONS",
        default_value = access::DEFAULT_ROLE_PERMISSIONS,
        value_parser = RolePermissions::parse
    )]
    pub role_permissions: RolePermissions,
    /// Request headers any API may return: the native list, show and export
    /// and the organisation log's details (comma separated; `Authorization`,
    /// `Cookie`, `Set-Cookie` and `Proxy-Authorization` never are).
    // Every list parses: clap takes `DetailHeaders: From<&str>`.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_DETAIL_HEADERS",
        default_value = access::DEFAULT_DETAIL_HEADERS
    )]
    pub detail_headers: DetailHeaders,
    /// Base of absolute URLs in responses (e.g. `https://audit.example.com`);
    /// from the request's Host / X-Forwarded-* headers when unset.
    #[arg(long, env = "TRAILHOUSE_QUERY_PUBLIC_URL", value_parser = PublicUrl::parse)]
    pub public_url: Option<PublicUrl>,
    /// Proxies (CIDRs, comma separated) whose `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are believed; from any other peer they are
    /// ignored. Empty: none.
    #[arg(long, env = "TRAILHOUSE_QUERY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Serve the viewer (the audit log page and its element) at `/ui/`.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_VIEWER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub viewer: bool,
    /// Origins whose pages may call the API from a browser (CORS), comma
    /// separated: the admin portals that embed the viewer.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_CORS_ALLOWED_ORIGINS",
        default_value = ""
    )]
    pub cors_allowed_origins: CorsOrigins,
    #[command(flatten)]
    pub limits: QueryLimits,
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub shutdown_timeout_secs: u64,
}

/// What bounds the work one request, one org and the whole service may
/// cause (see the README's table for each setting).
#[derive(Debug, Clone, Args)]
pub struct QueryLimits {
    /// The most bytes of events one page reads (the page is shortened and
    /// its cursor continues after its last row; at least one row).
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_MAX_PAGE_BYTES",
        default_value_t = 4 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024..=1 << 30)
    )]
    pub max_page_bytes: u64,
    /// Queries the service runs at once; more are answered 503.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_MAX_IN_FLIGHT",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_in_flight: u32,
    /// Queries one org runs at once; more are answered 429.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_MAX_IN_FLIGHT_PER_ORG",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_in_flight_per_org: u32,
    /// Requests per org: `COUNT/UNIT[:BURST]` (`s`, `min`, `hour`) or `off`.
    #[arg(long, env = "TRAILHOUSE_QUERY_RATE_LIMIT", default_value = "600/min")]
    pub rate_limit: RateSetting,
    /// Per-org rates, `org=RATE` pairs separated by commas.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_RATE_LIMIT_OVERRIDES",
        default_value = ""
    )]
    pub rate_limit_overrides: RateOverrides,
    /// ClickHouse's `max_execution_time` for every query (below the 30 s
    /// request timeout).
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_MAX_EXECUTION_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=29)
    )]
    pub max_execution_secs: u64,
    /// ClickHouse's `max_result_rows` for every query.
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_MAX_RESULT_ROWS",
        default_value_t = 10_000
    )]
    pub max_result_rows: u64,
    /// ClickHouse's `max_result_bytes` for every query.
    #[arg(long, env = "TRAILHOUSE_QUERY_MAX_RESULT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_result_bytes: u64,
    /// Send `readonly=1` with every query (keep it on; off only for a
    /// ClickHouse front that cannot take it).
    #[arg(
        long,
        env = "TRAILHOUSE_QUERY_CLICKHOUSE_READONLY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub clickhouse_readonly: bool,
}

impl Default for QueryLimits {
    /// The defaults of the flags.
    fn default() -> Self {
        QueryLimits {
            max_page_bytes: 4 * 1024 * 1024,
            max_in_flight: 64,
            max_in_flight_per_org: 8,
            rate_limit: RateSetting("600/min".parse::<RateSetting>().map_or(None, |r| r.0)),
            rate_limit_overrides: RateOverrides::default(),
            max_execution_secs: 10,
            max_result_rows: 10_000,
            max_result_bytes: 256 * 1024 * 1024,
            clickhouse_readonly: true,
        }
    }
}

impl QueryLimits {
    /// The ClickHouse settings of every query.
    pub fn clickhouse(&self) -> ClickHouseLimits {
        ClickHouseLimits {
            max_execution_secs: self.max_execution_secs,
            max_result_rows: self.max_result_rows,
            max_result_bytes: self.max_result_bytes,
            readonly: self.clickhouse_readonly,
        }
    }

    /// The rate limits and query slots.
    pub fn guard(&self) -> Guard {
        Guard::new(
            OrgRateLimiter::new(self.rate_limit, &self.rate_limit_overrides),
            self.max_in_flight as usize,
            self.max_in_flight_per_org as usize,
        )
    }

    pub fn max_page_bytes(&self) -> usize {
        usize::try_from(self.max_page_bytes).unwrap_or(usize::MAX)
    }
}

/// CIDRs of trusted proxies, comma separated (a plain address is one host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// A trusted-proxy list that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("trusted proxy {0:?} is not a CIDR (e.g. 10.0.0.0/8) or an address")]
pub struct TrustedProxiesError(String);

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| TrustedProxiesError(p.to_string()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Origins (`scheme://host[:port]`, comma separated) whose pages may call
/// the API from a browser: the admin portals that embed the viewer. Empty:
/// none (same-origin only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins(pub Vec<String>);

/// An origin that is not `http(s)://host[:port]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CORS origin {0:?} is not an origin such as https://admin.example.com (a scheme, a host, an optional port; no path, no `*`)")]
pub struct CorsOriginError(String);

impl FromStr for CorsOrigins {
    type Err = CorsOriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                let rest = o
                    .strip_prefix("https://")
                    .or_else(|| o.strip_prefix("http://"));
                let host_ok = rest.is_some_and(|r| {
                    !r.is_empty()
                        && r.bytes().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                        })
                });
                if host_ok {
                    Ok(o.to_ascii_lowercase())
                } else {
                    Err(CorsOriginError(o.to_string()))
                }
            })
            .collect::<Result<_, _>>()
            .map(CorsOrigins)
    }
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 shared secret (local use).
    #[arg(
        long = "jwt-hs256-secret",
        env = "TRAILHOUSE_JWT_HS256_SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<Secret>,
    /// PEM file with the RS256/ES256 public key (production).
    #[arg(long = "jwt-public-key-file", env = "TRAILHOUSE_JWT_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<std::path::PathBuf>,
    /// `RS256` or `ES256`, with --jwt-public-key-file.
    #[arg(
        long = "jwt-algorithm",
        env = "TRAILHOUSE_JWT_ALGORITHM",
        default_value = "RS256"
    )]
    pub algorithm: JwtAlgorithm,
    #[arg(long = "jwt-issuer", env = "TRAILHOUSE_JWT_ISSUER")]
    pub issuer: Option<String>,
    #[arg(long = "jwt-audience", env = "TRAILHOUSE_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// The longest a token may still be valid: one whose `exp` is further
    /// away than this is refused (a token that never expires is a stolen
    /// token that never expires).
    #[arg(
        long = "jwt-max-lifetime-secs",
        env = "TRAILHOUSE_JWT_MAX_LIFETIME_SECS",
        default_value_t = auth::MAX_LIFETIME_SECS,
        value_parser = clap::value_parser!(i64).range(60..=31_622_400)
    )]
    pub max_lifetime_secs: i64,
    /// The secret of viewer tokens (HS256, at least 32 bytes, not the
    /// secret above): shared with the platform's backend only, which mints
    /// short-lived read-only tokens for the embedded viewer. Unset: viewer
    /// tokens are refused.
    #[arg(
        long = "viewer-token-secret",
        env = "TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub viewer_secret: Option<Secret>,
    /// The previous viewer token secret, still accepted while the
    /// platform's backends move to the new one (a rotation).
    #[arg(
        long = "viewer-token-previous-secret",
        env = "TRAILHOUSE_QUERY_VIEWER_TOKEN_PREVIOUS_SECRET",
        hide_env_values = true
    )]
    pub viewer_previous_secret: Option<Secret>,
    /// The longest a viewer token may still be valid.
    #[arg(
        long = "viewer-token-max-lifetime-secs",
        env = "TRAILHOUSE_QUERY_VIEWER_TOKEN_MAX_LIFETIME_SECS",
        default_value_t = viewer_token::DEFAULT_VIEWER_LIFETIME_SECS,
        value_parser = clap::value_parser!(i64).range(60..=3600)
    )]
    pub viewer_max_lifetime_secs: i64,
}

/// An absolute `http://` or `https://` URL base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

/// A public URL that is not `http://` or `https://`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the public URL must start with http:// or https://")]
pub struct PublicUrlError;

impl PublicUrl {
    pub fn parse(s: &str) -> Result<Self, PublicUrlError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(PublicUrl(s.to_string()))
        } else {
            Err(PublicUrlError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl QueryConfig {
    /// The rules clap cannot check on one value: the ClickHouse settings
    /// together, and the cursor secret's length (a secret is never echoed).
    /// The JWT key rules are checked by [`JwtArgs::verifier`].
    pub fn validate(&self) -> Result<(), Error> {
        self.clickhouse
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        match &self.cursor_secret {
            None => Err(Error::Config(
                "the cursor secret is required (--cursor-secret or TRAILHOUSE_CURSOR_SECRET)"
                    .into(),
            )),
            Some(s) if s.expose().len() < 16 => Err(Error::Config(
                "the cursor secret must be at least 16 bytes".into(),
            )),
            Some(_) => Ok(()),
        }
    }
}

impl JwtArgs {
    /// The verifier of the configured key: an HS256 secret of at least 16
    /// bytes or a public key file, not both.
    pub fn verifier(&self) -> Result<auth::Verifier, Error> {
        let v = match (&self.hs256_secret, &self.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "configure either an HS256 secret or a public key, not both".into(),
                ))
            }
            (Some(s), None) if s.expose().len() >= 16 => {
                auth::Verifier::hs256(s.expose().as_bytes())
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "the HS256 secret must be at least 16 bytes".into(),
                ))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)?;
                auth::Verifier::public_key(self.algorithm, &pem)
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            (None, None) => return Err(Error::Config("no JWT key configured".into())),
        };
        Ok(
            v.expect_issuer_audience(self.issuer.as_deref(), self.audience.as_deref())
                .max_lifetime(self.max_lifetime_secs)
                .with_viewer(self.viewer_key()?),
        )
    }

    /// The viewer-token key, when a viewer secret is configured.
    fn viewer_key(&self) -> Result<Option<ViewerKey>, Error> {
        let Some(secret) = &self.viewer_secret else {
            return Ok(None);
        };
        let previous = self
            .viewer_previous_secret
            .as_ref()
            .map(|s| s.expose().as_bytes());
        for (name, bytes) in std::iter::once(("viewer token secret", secret.expose().as_bytes()))
            .chain(previous.map(|p| ("previous viewer token secret", p)))
        {
            if bytes.len() < viewer_token::MIN_SECRET_BYTES {
                return Err(Error::Config(format!(
                    "the {name} must be at least {} bytes",
                    viewer_token::MIN_SECRET_BYTES
                )));
            }
            if self
                .hs256_secret
                .as_ref()
                .is_some_and(|s| s.expose().as_bytes() == bytes)
            {
                return Err(Error::Config(format!(
                    "the {name} must differ from the JWT secret"
                )));
            }
        }
        Ok(Some(ViewerKey::rotating(
            secret.expose().as_bytes(),
            previous,
            self.viewer_max_lifetime_secs,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: QueryConfig,
    }

    fn parse(args: &[&str]) -> Result<QueryConfig, String> {
        let all = ["query-api", "--cursor-secret", "0123456789abcdef"];
        Cli::try_parse_from(all.iter().chain(args))
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_parse_into_their_types() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.jwt.algorithm, JwtAlgorithm::Rs256);
        assert_eq!(c.role_permissions, RolePermissions::default());
        assert_eq!(c.detail_headers, DetailHeaders::default());
        assert_eq!(c.public_url, None);
        assert_eq!(c.trusted_proxies, TrustedProxies::default());
        assert!(c.viewer, "the viewer is served unless turned off");
        for (value, on) in [("false", false), ("off", false), ("true", true)] {
            let c = parse(&["--viewer", value]).expect("viewer");
            assert_eq!(c.viewer, on, "{value}");
        }
        assert!(parse(&["--viewer", "maybe"]).is_err());
        let d = QueryLimits::default();
        let l = &c.limits;
        assert_eq!(
            (l.max_page_bytes, l.max_in_flight, l.max_in_flight_per_org),
            (d.max_page_bytes, d.max_in_flight, d.max_in_flight_per_org)
        );
        assert_eq!(
            (l.rate_limit, &l.rate_limit_overrides),
            (d.rate_limit, &d.rate_limit_overrides)
        );
        assert_eq!(l.clickhouse(), d.clickhouse());
        assert!(l.clickhouse().readonly);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn values_parse_into_their_types() {
        let c = parse(&[
            "--jwt-algorithm",
            "ES256",
            "--role-permissions",
            "auditor:viewAuditLog",
            "--detail-headers",
            "X-Request-Id",
            "--public-url",
            "https://audit.example.com",
            "--trusted-proxies",
            "10.0.0.0/8, 192.168.1.1",
            "--rate-limit",
            "1750/hour",
            "--rate-limit-overrides",
            "big=off",
            "--max-page-bytes",
            "65536",
            "--clickhouse-readonly",
            "false",
            "--cors-allowed-origins",
            "https://Admin.example.com, http://localhost:3000",
        ])
        .expect("config");
        assert_eq!(
            c.cors_allowed_origins.0,
            vec!["https://admin.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.jwt.algorithm, JwtAlgorithm::Es256);
        assert_eq!(
            c.role_permissions.0.get("auditor"),
            Some(&vec!["viewAuditLog".to_string()])
        );
        assert_eq!(c.detail_headers.0, vec!["x-request-id"]);
        assert_eq!(
            c.public_url.as_ref().map(PublicUrl::as_str),
            Some("https://audit.example.com")
        );
        assert_eq!(c.trusted_proxies.0.len(), 2);
        assert!(c.trusted_proxies.contains("10.1.2.3".parse().expect("ip")));
        assert!(c
            .trusted_proxies
            .contains("::ffff:192.168.1.1".parse().expect("ip")));
        assert!(!c
            .trusted_proxies
            .contains("192.168.1.2".parse().expect("ip")));
        assert_eq!(
            c.limits.rate_limit.0.map(|r| r.to_string()).as_deref(),
            Some("1750/hour")
        );
        assert_eq!(c.limits.rate_limit_overrides.0.get("big"), Some(&None));
        assert_eq!(c.limits.max_page_bytes(), 65536);
        assert!(!c.limits.clickhouse().readonly);
    }

    #[test]
    fn bad_values_are_cli_errors_that_name_them() {
        for (args, bad) in [
            (["--jwt-algorithm", "HS512"], "HS512"),
            (["--jwt-algorithm", "rs256"], "rs256"),
            (["--role-permissions", "admin"], "admin"),
            (["--public-url", "audit.example.com"], "audit.example.com"),
            (["--trusted-proxies", "10.0.0.0/33"], "10.0.0.0/33"),
            (["--rate-limit", "600/day"], "600/day"),
            (["--max-execution-secs", "60"], "60"),
            (
                ["--cors-allowed-origins", "https://a.example.com/x"],
                "https://a.example.com/x",
            ),
            (["--cors-allowed-origins", "*"], "*"),
            (["--viewer-token-max-lifetime-secs", "7200"], "7200"),
        ] {
            let e = parse(&args).expect_err(bad);
            assert!(e.contains(&format!("invalid value '{bad}'")), "{e}");
            assert!(e.contains(args[0]), "{e}");
        }
        let e = parse(&["--jwt-algorithm", "HS512"]).expect_err("algorithm");
        assert!(e.contains("RS256") && e.contains("ES256"), "{e}");
    }

    #[test]
    fn validate_keeps_the_rules_clap_cannot_check() {
        let mut c = parse(&[]).expect("defaults");
        c.cursor_secret = Some(Secret::new("short"));
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cursor secret"), "{e}");
        assert!(!e.contains("short"), "{e}");
        c.cursor_secret = None;
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("TRAILHOUSE_CURSOR_SECRET"), "{e}");
        let mut jwt = c.jwt.clone();
        assert!(jwt.verifier().is_err(), "no key");
        jwt.hs256_secret = Some(Secret::new("0123456789abcdef"));
        assert!(jwt.verifier().is_ok());
        jwt.public_key_file = Some("key.pem".into());
        assert!(jwt.verifier().is_err(), "both");
        jwt.public_key_file = None;
        jwt.hs256_secret = Some(Secret::new("short"));
        assert!(jwt.verifier().is_err(), "short secret");
        jwt.hs256_secret = Some(Secret::new("0123456789abcdef0123456789abcdef"));
        jwt.viewer_secret = Some(Secret::new("0123456789abcdef"));
        assert!(jwt.verifier().is_err(), "short viewer secret");
        jwt.viewer_secret = jwt.hs256_secret.clone();
        assert!(
            jwt.verifier().is_err(),
            "the viewer secret is the JWT secret"
        );
        jwt.viewer_secret = Some(Secret::new("fedcba9876543210fedcba9876543210"));
        assert!(jwt.verifier().is_ok());
    }
}
