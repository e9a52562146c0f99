//! Kafka client security read from files, the way Strimzi hands it to its own clients: the
//! trusted certificates (a cluster CA's `ca.crt`), a client certificate and key (a KafkaUser's
//! `user.crt` and `user.key`), a SCRAM user's password (a KafkaUser's `password`). The operator
//! mounts the Secrets as files and passes their paths; every run reads them when it starts, so
//! a Secret Strimzi rotates reaches the next run. The values become librdkafka settings, never
//! arguments or environment.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The SASL mechanisms a password file can be used with.
pub const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// Where the client's security comes from; the flag each field is set by is named in errors.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// Connect over TLS even with no trusted certificates given (the system's CAs then).
    pub tls: bool,
    /// Trusted certificates (PEM): files, or glob patterns (`/dir/*.crt`) of files.
    pub trusted: Vec<String>,
    /// Client certificate (PEM), for mutual TLS; with `key`.
    pub certificate: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (one trailing newline is not part of it).
    pub sasl_password_file: Option<PathBuf>,
    pub sasl_mechanism: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {what} {path} ({flag}): {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("{path} ({flag}) holds no PEM {expected}")]
    NotPem {
        path: PathBuf,
        flag: &'static str,
        expected: &'static str,
    },
    #[error("{pattern} ({flag}) matches no file")]
    NoMatch { pattern: String, flag: &'static str },
    #[error("{pattern} ({flag}) is not a valid pattern: {problem}")]
    BadPattern {
        pattern: String,
        flag: &'static str,
        problem: String,
    },
    #[error("the SASL password file {path} (--sasl-password-file) is empty")]
    EmptyPassword { path: PathBuf },
    #[error("{given} needs {missing} as well")]
    Incomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "unknown SASL mechanism {0:?} (--sasl-mechanism): SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
    )]
    Mechanism(String),
}

impl KafkaSecurity {
    /// Whether anything is configured: without it the client talks plaintext, unchanged.
    pub fn is_set(&self) -> bool {
        self.tls
            || !self.trusted.is_empty()
            || self.certificate.is_some()
            || self.key.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password_file.is_some()
    }

    /// The librdkafka settings: `security.protocol` (SSL, SASL_SSL or SASL_PLAINTEXT, from what
    /// is given), the trusted certificates (`ssl.ca.pem`, all of them), the client certificate
    /// and key (`ssl.certificate.location`, `ssl.key.location`), the SASL mechanism, user and
    /// password. Every file is read now, and a missing or malformed one is named with its flag.
    pub fn settings(&self) -> Result<Vec<(String, String)>, SecurityError> {
        if !self.is_set() {
            return Ok(Vec::new());
        }
        let mut settings = Vec::new();
        let mut set = |k: &str, v: String| settings.push((k.to_owned(), v));
        let tls = self.tls || !self.trusted.is_empty() || self.certificate.is_some();
        let sasl = self.sasl_username.is_some();
        set(
            "security.protocol",
            match (tls, sasl) {
                (true, true) => "SASL_SSL",
                (false, true) => "SASL_PLAINTEXT",
                _ => "SSL",
            }
            .to_owned(),
        );
        if !self.trusted.is_empty() {
            set("ssl.ca.pem", self.trusted_pem()?);
        }
        let client = both((&self.certificate, "--tls-cert"), (&self.key, "--tls-key"))?;
        if let Some((cert, key)) = client {
            check_pem(cert, "--tls-cert", "certificate", "CERTIFICATE")?;
            check_pem(key, "--tls-key", "private key", "PRIVATE KEY")?;
            set("ssl.certificate.location", cert.display().to_string());
            set("ssl.key.location", key.display().to_string());
        }
        let user = both(
            (&self.sasl_username, "--sasl-username"),
            (&self.sasl_password_file, "--sasl-password-file"),
        )?;
        if let Some((user, file)) = user {
            if !SASL_MECHANISMS.contains(&self.sasl_mechanism.as_str()) {
                return Err(SecurityError::Mechanism(self.sasl_mechanism.clone()));
            }
            set("sasl.mechanism", self.sasl_mechanism.clone());
            set("sasl.username", user.clone());
            set("sasl.password", read_password(file)?);
        }
        Ok(settings)
    }

    /// Every trusted certificate, concatenated: librdkafka's `ssl.ca.pem` takes them all.
    fn trusted_pem(&self) -> Result<String, SecurityError> {
        const FLAG: &str = "--tls-ca";
        let mut pem = String::new();
        for entry in &self.trusted {
            let files: Vec<PathBuf> = if entry.contains(['*', '?', '[']) {
                let mut files: Vec<PathBuf> = glob::glob(entry)
                    .map_err(|e| SecurityError::BadPattern {
                        pattern: entry.clone(),
                        flag: FLAG,
                        problem: e.to_string(),
                    })?
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(SecurityError::NoMatch {
                        pattern: entry.clone(),
                        flag: FLAG,
                    });
                }
                files
            } else {
                vec![PathBuf::from(entry)]
            };
            for file in files {
                let text = check_pem(&file, FLAG, "trusted certificate", "CERTIFICATE")?;
                pem.push_str(text.trim_end());
                pem.push('\n');
            }
        }
        Ok(pem)
    }
}

/// Two settings that go together: both or neither.
fn both<'a, A, B>(
    (a, a_flag): (&'a Option<A>, &'static str),
    (b, b_flag): (&'a Option<B>, &'static str),
) -> Result<Option<(&'a A, &'a B)>, SecurityError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(SecurityError::Incomplete {
            given: a_flag,
            missing: b_flag,
        }),
        (None, Some(_)) => Err(SecurityError::Incomplete {
            given: b_flag,
            missing: a_flag,
        }),
    }
}

/// Reads a PEM file, checking it holds a `-----BEGIN <label>-----` block (`PRIVATE KEY` also
/// matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn check_pem(
    path: &Path,
    flag: &'static str,
    what: &'static str,
    label: &'static str,
) -> Result<String, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_owned(),
        flag,
        source,
    })?;
    let has_block = text.lines().any(|l| {
        l.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !has_block {
        return Err(SecurityError::NotPem {
            path: path.to_owned(),
            flag,
            expected: what,
        });
    }
    Ok(text)
}

fn read_password(path: &Path) -> Result<String, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        what: "the SASL password",
        path: path.to_owned(),
        flag: "--sasl-password-file",
        source,
    })?;
    // A file written by hand ends in a newline; a Secret's key usually does not.
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(SecurityError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// The broker refused the client: its TLS handshake or SASL authentication failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect securely to Kafka at {bootstrap}: {reason}; check the credentials \
     (--sasl-username, --sasl-password-file, --tls-cert, --tls-key) and the trusted \
     certificates (--tls-ca)"
)]
pub struct LoginError {
    pub bootstrap: String,
    pub reason: String,
}

/// Records the client's connection errors, which librdkafka reports through its error callback
/// while the request that needed the connection just waits (and retries).
#[derive(Default)]
struct LoginContext {
    errors: Mutex<Errors>,
}

#[derive(Default, Clone)]
struct Errors {
    /// A TLS handshake or SASL authentication the broker refused: retrying will not help.
    refused: Option<String>,
    last: Option<String>,
}

impl LoginContext {
    fn record(&self, refused: bool, reason: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            if refused {
                errors.refused.get_or_insert_with(|| reason.to_owned());
            }
            errors.last = Some(reason.to_owned());
        }
    }
}

/// Whether a connection failure is the broker refusing the client's TLS or SASL. A refused
/// client certificate reaches the client as a failed receive (a TLS alert), with the
/// transport's error code: the reason says what it was.
fn is_refusal(reason: &str) -> bool {
    reason.contains("SSL") || reason.contains("SASL")
}

impl ClientContext for LoginContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) || is_refusal(reason);
        self.record(refused, reason);
    }

    // A failed certificate verification is only logged (`FAIL`), not passed to `error`.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error};
        if facility == "FAIL" && matches!(level, Emerg | Alert | Critical | Error) {
            self.record(is_refusal(message), message);
        }
    }
}

impl ConsumerContext for LoginContext {}

/// Connects with `settings` and asks for the cluster's metadata, so that a refused TLS
/// handshake or a wrong password fails the command at once with the broker's reason, instead
/// of as a timeout later (librdkafka keeps retrying a refused connection).
pub fn check_login(
    bootstrap: &str,
    settings: &[(String, String)],
    timeout: Duration,
) -> Result<(), LoginError> {
    let fail = |reason: String| LoginError {
        bootstrap: bootstrap.to_owned(),
        reason,
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in settings {
        config.set(k, v);
    }
    let consumer: BaseConsumer<LoginContext> = config
        .create_with_context(LoginContext::default())
        .map_err(|e| fail(e.to_string()))?;
    let started = Instant::now();
    loop {
        let attempt = consumer.fetch_metadata(None, Duration::from_millis(500));
        // Serves the queue that carries the error callbacks (nothing is subscribed: no records).
        let _ = consumer.poll(Duration::ZERO);
        let errors = consumer
            .context()
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        if let Some(reason) = errors.refused {
            return Err(fail(reason));
        }
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() >= timeout => {
                return Err(fail(errors.last.unwrap_or_else(|| e.to_string())));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn get<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn nothing_set_is_plaintext_unchanged() {
        assert_eq!(KafkaSecurity::default().settings().unwrap(), Vec::new());
    }

    #[test]
    fn mutual_tls_reads_every_trusted_certificate_and_names_the_client_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.crt", CERT);
        write(dir.path(), "a.crt", &CERT.replace("MIIB", "AAAA"));
        write(dir.path(), "b.crt", &CERT.replace("MIIB", "BBBB"));
        write(dir.path(), "notes.txt", "not a certificate");
        let cert = write(dir.path(), "user.crt", CERT);
        let key = write(dir.path(), "user.key", KEY);
        let security = KafkaSecurity {
            trusted: vec![
                ca.display().to_string(),
                format!("{}/[ab].crt", dir.path().display()),
            ],
            certificate: Some(cert.clone()),
            key: Some(key.clone()),
            ..Default::default()
        };
        let settings = security.settings().unwrap();
        assert_eq!(get(&settings, "security.protocol"), Some("SSL"));
        let pem = get(&settings, "ssl.ca.pem").unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 3, "{pem}");
        assert!(pem.find("AAAA").unwrap() < pem.find("BBBB").unwrap());
        assert_eq!(
            get(&settings, "ssl.certificate.location"),
            Some(cert.to_str().unwrap())
        );
        assert_eq!(
            get(&settings, "ssl.key.location"),
            Some(key.to_str().unwrap())
        );
        assert_eq!(get(&settings, "sasl.mechanism"), None);
    }

    #[test]
    fn scram_reads_the_password_file_and_picks_the_protocol_by_tls() {
        let dir = tempfile::tempdir().unwrap();
        let password = write(dir.path(), "password", "s3cret\n");
        let ca = write(dir.path(), "ca.crt", CERT);
        let mut security = KafkaSecurity {
            sasl_username: Some("svc".into()),
            sasl_password_file: Some(password),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            ..Default::default()
        };
        let plain = security.settings().unwrap();
        assert_eq!(get(&plain, "security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(get(&plain, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&plain, "sasl.username"), Some("svc"));
        assert_eq!(get(&plain, "sasl.password"), Some("s3cret"));
        security.trusted = vec![ca.display().to_string()];
        let tls = security.settings().unwrap();
        assert_eq!(get(&tls, "security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn errors_name_the_file_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = KafkaSecurity {
            trusted: vec![missing.display().to_string()],
            ..Default::default()
        }
        .settings()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(missing.to_str().unwrap()) && err.contains("--tls-ca"),
            "{err}"
        );
        let not_pem = write(dir.path(), "user.key", "hunter2");
        let cert = write(dir.path(), "user.crt", CERT);
        let err = KafkaSecurity {
            certificate: Some(cert.clone()),
            key: Some(not_pem.clone()),
            ..Default::default()
        }
        .settings()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(not_pem.to_str().unwrap()) && err.contains("--tls-key"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "never the contents: {err}");
        let err = KafkaSecurity {
            certificate: Some(cert),
            ..Default::default()
        }
        .settings()
        .unwrap_err()
        .to_string();
        assert_eq!(err, "--tls-cert needs --tls-key as well");
        let pattern = format!("{}/*.pem", dir.path().display());
        let err = KafkaSecurity {
            trusted: vec![pattern.clone()],
            ..Default::default()
        }
        .settings()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&pattern) && err.contains("matches no file"),
            "{err}"
        );
        let empty = write(dir.path(), "password", "\n");
        let err = KafkaSecurity {
            sasl_username: Some("u".into()),
            sasl_password_file: Some(empty.clone()),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            ..Default::default()
        }
        .settings()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(empty.to_str().unwrap()) && err.contains("empty"),
            "{err}"
        );
    }
}
