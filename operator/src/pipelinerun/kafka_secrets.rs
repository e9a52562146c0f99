//! Kafka's TLS and authentication Secrets in an ingest Job, the way Strimzi's own clients take
//! them: each Secret mounted read-only as files under `/etc/streamflow/kafka/<secret>/<key>`,
//! and the files' paths passed to the job image, which reads them when it starts. So no secret
//! value is in the Job, and a Secret Strimzi rotates reaches the next Job (the kubelet also
//! refreshes a running pod's files).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

use crate::Error;
use crate::api::kafka::{AuthenticationType, KafkaSpec};

/// Where the Secrets are mounted, one directory per Secret.
pub const KAFKA_SECRETS_DIR: &str = "/etc/streamflow/kafka";

/// What the ingest container gets: the job image's flags, and the volumes they point into.
#[derive(Debug, Default, PartialEq)]
pub struct KafkaSecretFiles {
    pub args: Vec<String>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

/// The keys of one Secret a run reads: these, or all of them (a trusted-certificate pattern).
#[derive(Default)]
struct Keys {
    named: BTreeSet<String>,
    all: bool,
}

/// The flags, volumes and mounts of `kafka.tls` and `kafka.authentication`.
pub fn kafka_secret_files(kafka: &KafkaSpec) -> Result<KafkaSecretFiles, Error> {
    let mut files = KafkaSecretFiles::default();
    if kafka.tls.is_some() {
        files.args.push("--tls".to_owned());
    }
    let mut secrets: BTreeMap<String, Keys> = BTreeMap::new();
    let mut file = |secret: &str, key: &str| {
        secrets
            .entry(secret.to_owned())
            .or_default()
            .named
            .insert(key.to_owned());
        format!("{KAFKA_SECRETS_DIR}/{secret}/{key}")
    };
    let mut flag = |name: &str, value: String| {
        files.args.push(name.to_owned());
        files.args.push(value);
    };
    if let Some(tls) = &kafka.tls {
        for trusted in &tls.trusted_certificates {
            match (&trusted.certificate, &trusted.pattern) {
                (Some(key), None) => flag("--tls-ca", file(&trusted.secret_name, key)),
                (None, Some(pattern)) => flag(
                    "--tls-ca",
                    format!("{KAFKA_SECRETS_DIR}/{}/{pattern}", trusted.secret_name),
                ),
                _ => {
                    return Err(Error::InvalidSpec {
                        field: "kafka.tls.trustedCertificates",
                        message: format!(
                            "{}: give either certificate or pattern",
                            trusted.secret_name
                        ),
                    });
                }
            }
        }
    }
    if let Some(auth) = &kafka.authentication {
        let invalid = |message: &str| Error::InvalidSpec {
            field: "kafka.authentication",
            message: message.to_owned(),
        };
        match auth.type_ {
            AuthenticationType::ScramSha512 => {
                let (Some(username), Some(password)) = (&auth.username, &auth.password_secret)
                else {
                    return Err(invalid(
                        "type scram-sha-512 needs username and passwordSecret",
                    ));
                };
                flag("--sasl-mechanism", "SCRAM-SHA-512".to_owned());
                flag("--sasl-username", username.clone());
                flag(
                    "--sasl-password-file",
                    file(&password.secret_name, &password.password),
                );
            }
            AuthenticationType::Tls => {
                let Some(pair) = &auth.certificate_and_key else {
                    return Err(invalid("type tls needs certificateAndKey"));
                };
                if kafka.tls.is_none() {
                    return Err(invalid("type tls needs kafka.tls"));
                }
                flag("--tls-cert", file(&pair.secret_name, &pair.certificate));
                flag("--tls-key", file(&pair.secret_name, &pair.key));
            }
        }
    }
    // A pattern reads whatever keys the Secret has: all of them are mounted.
    for trusted in kafka.tls.iter().flat_map(|t| &t.trusted_certificates) {
        if trusted.pattern.is_some() {
            secrets.entry(trusted.secret_name.clone()).or_default().all = true;
        }
    }
    for (index, (secret, keys)) in secrets.into_iter().enumerate() {
        let name = format!("kafka-secret-{index}");
        let items = (!keys.all).then(|| {
            keys.named
                .iter()
                .map(|key| KeyToPath {
                    key: key.clone(),
                    path: key.clone(),
                    ..Default::default()
                })
                .collect()
        });
        files.volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items,
                // A missing Secret or key keeps the pod from starting, which the run reports,
                // rather than the stage failing on a missing file.
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        files.mounts.push(VolumeMount {
            name,
            mount_path: format!("{KAFKA_SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stage::Stage;
    use crate::pipelinerun::jobs::build_job;
    use crate::pipelinerun::jobs::tests::run;

    /// A Strimzi cluster `events` (its cluster CA Secret) and KafkaUsers' Secrets.
    fn kafka(security: serde_json::Value) -> serde_json::Value {
        let mut kafka = serde_json::json!({"bootstrap": "events-kafka-bootstrap:9093"});
        for (k, v) in security.as_object().unwrap() {
            kafka[k] = v.clone();
        }
        serde_json::json!({ "kafka": kafka })
    }

    fn pod(spec: serde_json::Value, stage: Stage) -> k8s_openapi::api::core::v1::PodSpec {
        build_job(&run(spec), stage, 1)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    fn pairs(args: &[String]) -> Vec<(String, String)> {
        args.windows(2)
            .filter(|w| w[0].starts_with("--") && !w[1].starts_with("--"))
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    #[test]
    fn scram_mounts_the_password_key_and_passes_its_path() {
        let spec = kafka(serde_json::json!({
            "tls": {"trustedCertificates": [{"secretName": "events-cluster-ca-cert",
                "certificate": "ca.crt"}]},
            "authentication": {"type": "scram-sha-512", "username": "ingest",
                "passwordSecret": {"secretName": "ingest", "password": "password"}},
        }));
        let pod = pod(spec, Stage::Ingest);
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap();
        assert!(args.contains(&"--tls".to_owned()), "{args:?}");
        let pairs = pairs(&args);
        for (flag, value) in [
            (
                "--tls-ca",
                "/etc/streamflow/kafka/events-cluster-ca-cert/ca.crt",
            ),
            ("--sasl-mechanism", "SCRAM-SHA-512"),
            ("--sasl-username", "ingest"),
            (
                "--sasl-password-file",
                "/etc/streamflow/kafka/ingest/password",
            ),
        ] {
            assert!(
                pairs.contains(&(flag.to_owned(), value.to_owned())),
                "{flag} {value} not in {args:?}"
            );
        }
        let volumes: BTreeMap<String, SecretVolumeSource> = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|v| Some((v.name, v.secret?)))
            .collect();
        let by_secret: BTreeMap<String, (String, Vec<(String, String)>)> = volumes
            .iter()
            .map(|(name, s)| {
                let items = s
                    .items
                    .iter()
                    .flatten()
                    .map(|i| (i.key.clone(), i.path.clone()))
                    .collect();
                (s.secret_name.clone().unwrap(), (name.clone(), items))
            })
            .collect();
        assert_eq!(
            by_secret["events-cluster-ca-cert"].1,
            [("ca.crt".to_owned(), "ca.crt".to_owned())]
        );
        assert_eq!(
            by_secret["ingest"].1,
            [("password".to_owned(), "password".to_owned())]
        );
        // Each Secret's volume is mounted read-only at the directory the paths point into.
        let mounts = c.volume_mounts.clone().unwrap();
        for (secret, (volume, _)) in &by_secret {
            let mount = mounts.iter().find(|m| &m.name == volume).unwrap();
            assert_eq!(mount.mount_path, format!("{KAFKA_SECRETS_DIR}/{secret}"));
            assert_eq!(mount.read_only, Some(true));
        }
        assert!(volumes.values().all(|s| s.optional == Some(false)));
        // The values stay in the Secrets: nothing in the pod spec takes one.
        let json = serde_json::to_string(&pod).unwrap();
        assert!(!json.contains("secretKeyRef"), "{json}");
        assert!(
            c.env_from
                .iter()
                .flatten()
                .all(|e| e.secret_ref.as_ref().unwrap().name == "s3")
        );
    }

    #[test]
    fn tls_authentication_mounts_certificate_and_key_of_one_secret_once() {
        let spec = kafka(serde_json::json!({
            "tls": {"trustedCertificates": [
                {"secretName": "events-cluster-ca-cert", "certificate": "ca.crt"},
                {"secretName": "extra-cas", "pattern": "*.crt"},
            ]},
            "authentication": {"type": "tls", "certificateAndKey":
                {"secretName": "ingest", "certificate": "user.crt", "key": "user.key"}},
        }));
        let pod = pod(spec, Stage::Ingest);
        let args = pod.containers[0].args.clone().unwrap();
        let pairs = pairs(&args);
        for (flag, value) in [
            (
                "--tls-ca",
                "/etc/streamflow/kafka/events-cluster-ca-cert/ca.crt",
            ),
            ("--tls-ca", "/etc/streamflow/kafka/extra-cas/*.crt"),
            ("--tls-cert", "/etc/streamflow/kafka/ingest/user.crt"),
            ("--tls-key", "/etc/streamflow/kafka/ingest/user.key"),
        ] {
            assert!(
                pairs.contains(&(flag.to_owned(), value.to_owned())),
                "{flag} {value} not in {args:?}"
            );
        }
        assert!(!args.iter().any(|a| a.starts_with("--sasl")), "{args:?}");
        let secrets: Vec<SecretVolumeSource> = pod
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| v.secret)
            .collect();
        assert_eq!(secrets.len(), 3, "one volume per Secret: {secrets:?}");
        let ingest = secrets
            .iter()
            .find(|s| s.secret_name.as_deref() == Some("ingest"))
            .unwrap();
        let keys: Vec<&str> = ingest
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["user.crt", "user.key"]);
        // A pattern matches keys the operator cannot know: the whole Secret is mounted.
        let extra = secrets
            .iter()
            .find(|s| s.secret_name.as_deref() == Some("extra-cas"))
            .unwrap();
        assert_eq!(extra.items, None);
    }

    #[test]
    fn only_ingest_gets_the_kafka_secrets_and_none_without_them() {
        let spec = kafka(serde_json::json!({
            "tls": {},
            "authentication": {"type": "scram-sha-512", "username": "u",
                "passwordSecret": {"secretName": "u", "password": "password"}},
        }));
        for stage in [Stage::Etl, Stage::Validate] {
            let pod = pod(spec.clone(), stage);
            let args = pod.containers[0].args.clone().unwrap();
            assert!(
                !args
                    .iter()
                    .any(|a| a.starts_with("--tls") || a.starts_with("--sasl"))
            );
            assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()));
        }
        // `tls: {}`: TLS with the image's CAs.
        let args = pod(spec, Stage::Ingest).containers[0].args.clone().unwrap();
        assert!(args.contains(&"--tls".to_owned()));
        assert!(!args.contains(&"--tls-ca".to_owned()));
        let plain = pod(kafka(serde_json::json!({})), Stage::Ingest);
        let args = plain.containers[0].args.clone().unwrap();
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--tls") || a.starts_with("--sasl"))
        );
        assert!(plain.volumes.iter().flatten().all(|v| v.secret.is_none()));
    }

    #[test]
    fn an_incomplete_authentication_is_refused() {
        let spec = kafka(serde_json::json!({
            "authentication": {"type": "tls", "certificateAndKey":
                {"secretName": "u", "certificate": "user.crt", "key": "user.key"}},
        }));
        let err = build_job(&run(spec), Stage::Ingest, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.tls"), "{err}");
    }
}
