//! Where a run's ingest reads: Kafka's bootstrap servers, topics and consumer group, and how it
//! connects (TLS, Strimzi-style authentication by Secrets).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secret in the run's namespace, by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SecretRef {
    pub name: String,
}

/// CEL: the topic of each schema, as the job image defaults them (docs/events.md).
const USER_TOPIC: &str = "(has(self.userEventsTopic) ? self.userEventsTopic : 'user_events')";
const TRANSACTION_TOPIC: &str =
    "(has(self.transactionEventsTopic) ? self.transactionEventsTopic : 'transaction_events')";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.authentication) || self.authentication.type != 'tls' || has(self.tls)").message("kafka.authentication: type tls (client certificates) needs kafka.tls"))]
#[x_kube(validation = Rule::new(format!("!has(self.topics) || self.topics.all(t, t == {USER_TOPIC} || t == {TRANSACTION_TOPIC})")).message("kafka.topics: each topic must be the user events or the transaction events topic (kafka.userEventsTopic, kafka.transactionEventsTopic; user_events and transaction_events when unset): the job image refuses a topic without a schema"))]
#[x_kube(validation = Rule::new(format!("{USER_TOPIC} != {TRANSACTION_TOPIC}")).message("kafka.userEventsTopic and kafka.transactionEventsTopic name the same topic: each schema needs a topic of its own"))]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port]`.
    #[schemars(length(min = 1))]
    pub bootstrap: String,
    /// Topics to drain, of the two below; unset means both. An empty list is refused: leave
    /// the field out for both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 2), inner(length(min = 1, max = 249)))]
    pub topics: Vec<String>,
    /// The topic of user events (docs/events.md); unset means `user_events`. Every stage
    /// reads it by that schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub user_events_topic: Option<String>,
    /// The topic of transaction events (docs/events.md); unset means `transaction_events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub transaction_events_topic: Option<String>,
    /// Consumer group: when set, ingest drains up to the high watermarks and commits
    /// (watermark mode); when unset, it lands exactly the records of the interval (interval mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A Secret whose keys become the ingest container's environment (SASL/TLS settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Connect over TLS, as Strimzi's clients' (`KafkaConnect`) `tls`; without
    /// `trustedCertificates`, the image's system CAs are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// How ingest authenticates, as Strimzi's clients' `authentication`: `scram-sha-512` (a
    /// KafkaUser's password) or `tls` (its client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<KafkaAuthentication>,
}

/// A Secret's key or a file name pattern: what Kubernetes allows as a Secret's key.
const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A Secret's name (a DNS subdomain).
const SECRET_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Certificates to trust (a Strimzi cluster's `<cluster>-cluster-ca-cert`, key `ca.crt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub trusted_certificates: Vec<CertSecretSource>,
}

/// Certificates in a Secret: one key (`certificate`), or every key matching a glob `pattern`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.certificate) != has(self.pattern)").message("kafka.tls.trustedCertificates: give either certificate (a key) or pattern (a glob of keys), not both"))]
pub struct CertSecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the certificate (PEM), e.g. `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub certificate: Option<String>,
    /// A glob of keys (`*.crt`): every matching key's certificate is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[-._a-zA-Z0-9*?\[\]]+$")
    )]
    pub pattern: Option<String>,
}

/// Strimzi's client authentication, with the fields of the two types it supports here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'scram-sha-512' || (has(self.username) && has(self.passwordSecret) && !has(self.certificateAndKey))").message("kafka.authentication: type scram-sha-512 takes username and passwordSecret (and no certificateAndKey)"))]
#[x_kube(validation = Rule::new("self.type != 'tls' || (has(self.certificateAndKey) && !has(self.username) && !has(self.passwordSecret))").message("kafka.authentication: type tls takes certificateAndKey (and no username or passwordSecret)"))]
pub struct KafkaAuthentication {
    #[serde(rename = "type")]
    pub type_: AuthenticationType,
    /// The SCRAM user (a KafkaUser's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub username: Option<String>,
    /// The Secret and key holding the SCRAM user's password (a KafkaUser's Secret, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecretSource>,
    /// The Secret and keys of the client certificate and its key (a KafkaUser's Secret,
    /// `user.crt` and `user.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_and_key: Option<CertAndKeySecretSource>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticationType {
    /// SASL SCRAM-SHA-512 with a user name and password.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Mutual TLS with a client certificate.
    #[serde(rename = "tls")]
    Tls,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the password.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub password: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertAndKeySecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the client certificate (PEM).
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub certificate: String,
    /// The key holding the certificate's private key (PEM).
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}
