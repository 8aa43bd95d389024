//! Kafka connection settings shared by producers and consumers.

use std::time::Duration;

use clap::Args;
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
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(
        long = "kafka-security-protocol",
        env = "TRAILHOUSE_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext"
    )]
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` when SASL is used.
    #[arg(long = "kafka-sasl-mechanism", env = "TRAILHOUSE_KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
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

/// Kafka settings that cannot work together.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error(
        "unknown kafka security protocol {0:?}; use plaintext, ssl, sasl_plaintext or sasl_ssl"
    )]
    Protocol(String),
    #[error("kafka security protocol {0} needs --kafka-sasl-mechanism, username and password")]
    SaslIncomplete(String),
    #[error("kafka topic must not be empty")]
    EmptyTopic,
}

impl KafkaArgs {
    /// Settings for a local, unauthenticated broker.
    pub fn local(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            topic: topic.into(),
            security_protocol: "plaintext".into(),
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
        let p = self.security_protocol.to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&p.as_str()) {
            return Err(KafkaConfigError::Protocol(self.security_protocol.clone()));
        }
        if p.starts_with("sasl")
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
            .set("security.protocol", &self.security_protocol);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
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
        k.security_protocol = "sasl_ssl".into();
        assert!(matches!(
            k.validate(),
            Err(KafkaConfigError::SaslIncomplete(_))
        ));
        k.sasl_mechanism = Some("SCRAM-SHA-512".into());
        k.sasl_username = Some("u".into());
        k.sasl_password = Some(Secret::new("p"));
        assert!(k.validate().is_ok());
        assert!(!format!("{k:?}").contains("\"p\""));
        k.security_protocol = "carrier-pigeon".into();
        assert!(matches!(k.validate(), Err(KafkaConfigError::Protocol(_))));
    }
}
