//! Kafka connection settings shared by producers and consumers.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

use crate::Secret;

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma separated.
    #[arg(
        long = "kafka-brokers",
        env = "TRAILHOUSE_KAFKA_BROKERS",
        default_value = "localhost:9092"
    )]
    pub brokers: String,
    /// Topic the audit events are written to and read from.
    #[arg(
        long = "kafka-topic",
        env = "TRAILHOUSE_KAFKA_TOPIC",
        default_value = "trailhouse.events"
    )]
    pub topic: String,
    /// How the connection is secured.
    #[arg(
        long = "kafka-security-protocol",
        env = "TRAILHOUSE_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext",
        value_enum,
        ignore_case = true
    )]
    pub security_protocol: SecurityProtocol,
    /// The SASL mechanism, when SASL is used.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "TRAILHOUSE_KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true
    )]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[arg(long = "kafka-sasl-username", env = "TRAILHOUSE_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    #[arg(
        long = "kafka-sasl-password",
        env = "TRAILHOUSE_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<Secret>,
    /// CA certificate file for TLS.
    #[arg(
        long = "kafka-ssl-ca-location",
        env = "TRAILHOUSE_KAFKA_SSL_CA_LOCATION"
    )]
    pub ssl_ca_location: Option<String>,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Kafka settings that cannot work together.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("kafka security protocol {} needs --kafka-sasl-mechanism, username and password", .0.as_str())]
    SaslIncomplete(SecurityProtocol),
    #[error("kafka topic must not be empty")]
    EmptyTopic,
}

impl KafkaArgs {
    /// Settings for a local, unauthenticated broker.
    pub fn local(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            topic: topic.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
        }
    }

    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.topic.trim().is_empty() {
            return Err(KafkaConfigError::EmptyTopic);
        }
        let p = self.security_protocol;
        if p.uses_sasl()
            && (self.sasl_mechanism.is_none()
                || self.sasl_username.is_none()
                || self.sasl_password.is_none())
        {
            return Err(KafkaConfigError::SaslIncomplete(p));
        }
        Ok(())
    }

    /// A client configuration with the connection and security settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("security.protocol", self.security_protocol.as_str());
        if let Some(m) = self.sasl_mechanism {
            c.set("sasl.mechanism", m.as_str());
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        c
    }
}

/// Creates a topic if it does not exist yet.
pub async fn ensure_topic(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&new], &opts).await?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("creating topic {t} failed: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_needs_credentials() {
        let mut k = KafkaArgs::local("b:9092", "t");
        assert!(k.validate().is_ok());
        k.security_protocol = SecurityProtocol::SaslSsl;
        assert!(matches!(
            k.validate(),
            Err(KafkaConfigError::SaslIncomplete(_))
        ));
        k.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        k.sasl_username = Some("u".into());
        k.sasl_password = Some(Secret::new("p"));
        assert!(k.validate().is_ok());
        assert!(!format!("{k:?}").contains("\"p\""));
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn protocol_and_mechanism_parse_into_their_types() {
        use clap::Parser;
        type Parsed = Result<(SecurityProtocol, Option<SaslMechanism>), &'static str>;
        let cases: &[(&[&str], Parsed)] = &[
            (&[], Ok((SecurityProtocol::Plaintext, None))),
            (
                &[
                    "--kafka-security-protocol",
                    "SASL_SSL",
                    "--kafka-sasl-mechanism",
                    "scram-sha-256",
                ],
                Ok((SecurityProtocol::SaslSsl, Some(SaslMechanism::ScramSha256))),
            ),
            (
                &["--kafka-security-protocol", "ssl"],
                Ok((SecurityProtocol::Ssl, None)),
            ),
            (
                &["--kafka-security-protocol", "carrier-pigeon"],
                Err("carrier-pigeon"),
            ),
            (&["--kafka-sasl-mechanism", "GSSAPI"], Err("GSSAPI")),
        ];
        for (args, want) in cases {
            let parsed = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()));
            match (parsed, want) {
                (Ok(c), Ok(w)) => assert_eq!(
                    (c.kafka.security_protocol, c.kafka.sasl_mechanism),
                    *w,
                    "{args:?}"
                ),
                (Err(e), Err(bad)) => assert!(e.to_string().contains(bad), "{e}"),
                (got, _) => panic!("{args:?}: {got:?}"),
            }
        }
        for p in SecurityProtocol::value_variants() {
            let name = p.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(p.as_str()));
        }
        for m in SaslMechanism::value_variants() {
            let name = m.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(m.as_str()));
        }
    }
}
