//! `streamflow produce`: the mock upstream systems.
//!
//! [`EventGenerator`] is pure and seeded, so the same seed and start time give byte-identical
//! records (tests rely on that to know which records are good); [`produce`] sends what it
//! generates to Kafka, keyed by user id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use serde::Serialize;

use crate::events::{
    Device, EventKind, Geo, Item, Merchant, Page, Payment, Properties, TransactionEvent,
    TransactionStatus, UserEvent, UserEventType,
};

/// Malformed records the generator can inject, one of each kind in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadKind {
    NotJson,
    WrongTypes,
    MissingFields,
    Oversized,
}

const BAD_KINDS: [BadKind; 4] = [
    BadKind::NotJson,
    BadKind::WrongTypes,
    BadKind::MissingFields,
    BadKind::Oversized,
];

/// Size of an injected oversized record: above ingest's default limit, below the broker's
/// default `message.max.bytes` (1 MiB) so the broker accepts it.
pub const OVERSIZED_BYTES: usize = 600 * 1024;

/// One generated record, ready to send.
#[derive(Debug, Clone)]
pub struct GeneratedRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub timestamp: DateTime<Utc>,
    /// The event id, for good records.
    pub event_id: Option<String>,
    pub bad: Option<BadKind>,
}

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub start: DateTime<Utc>,
    /// Event-time distance between consecutive records of one topic.
    pub spacing: Duration,
    pub users: usize,
    /// Fraction of records, in [0, 1], that are malformed.
    pub bad_ratio: f64,
}

struct UserProfile {
    user_id: String,
    session_id: String,
    device: Device<'static>,
    geo: Geo<'static>,
}

/// A deterministic stream of events of one kind.
pub struct EventGenerator {
    kind: EventKind,
    rng: ChaCha8Rng,
    users: Vec<UserProfile>,
    config: GeneratorConfig,
    emitted: u64,
    bad_emitted: usize,
}

const COUNTRIES: [(&str, &str, f64, f64); 6] = [
    ("DE", "Berlin", 52.52, 13.40),
    ("US", "New York", 40.71, -74.01),
    ("GB", "London", 51.51, -0.13),
    ("FR", "Paris", 48.86, 2.35),
    ("IN", "Bengaluru", 12.97, 77.59),
    ("BR", "São Paulo", -23.55, -46.63),
];
const PAGES: [(&str, &str); 6] = [
    ("/", "Home"),
    ("/search", "Search"),
    ("/product/", "Product"),
    ("/cart", "Cart"),
    ("/checkout", "Checkout"),
    ("/account", "Account"),
];
const CATEGORIES: [&str; 5] = ["books", "electronics", "home", "fashion", "grocery"];
const MERCHANTS: [(&str, &str, &str); 4] = [
    ("m-001", "Northwind Books", "books"),
    ("m-002", "Volt Electronics", "electronics"),
    ("m-003", "Casa Living", "home"),
    ("m-004", "Atelier Nord", "fashion"),
];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

impl EventGenerator {
    pub fn new(kind: EventKind, config: GeneratorConfig) -> Self {
        // Both kinds draw the same user pool from the seed, so transactions and activity
        // share users; each kind then has its own stream of randomness.
        let mut pool_rng = ChaCha8Rng::seed_from_u64(config.seed);
        let users = (0..config.users.max(1))
            .map(|i| {
                let (country, city, lat, lon) =
                    *COUNTRIES.choose(&mut pool_rng).unwrap_or(&COUNTRIES[0]);
                let device_type = ["desktop", "mobile", "tablet"][pool_rng.random_range(0..3)];
                let (os, browser) = match device_type {
                    "desktop" => (
                        ["Windows", "macOS", "Linux"][pool_rng.random_range(0..3)],
                        "Chrome",
                    ),
                    _ => (["Android", "iOS"][pool_rng.random_range(0..2)], "Safari"),
                };
                UserProfile {
                    user_id: format!("u{:06}", i),
                    session_id: random_id(&mut pool_rng),
                    device: Device {
                        r#type: device_type.into(),
                        os: os.into(),
                        browser: browser.into(),
                    },
                    geo: Geo {
                        country: country.into(),
                        city: city.into(),
                        lat: round2(lat + pool_rng.random_range(-0.2..0.2)),
                        lon: round2(lon + pool_rng.random_range(-0.2..0.2)),
                    },
                }
            })
            .collect();
        let stream_seed = config.seed.wrapping_mul(31).wrapping_add(match kind {
            EventKind::User => 1,
            EventKind::Transaction => 2,
        });
        Self {
            kind,
            rng: ChaCha8Rng::seed_from_u64(stream_seed),
            users,
            config,
            emitted: 0,
            bad_emitted: 0,
        }
    }

    /// The next record: good, or with probability `bad_ratio` a malformed one.
    pub fn next_record(&mut self) -> GeneratedRecord {
        let n = self.emitted;
        self.emitted += 1;
        let spacing_ms = self.config.spacing.as_millis().max(1) as i64;
        let jitter = self.rng.random_range(0..spacing_ms);
        let timestamp =
            self.config.start + chrono::Duration::milliseconds(n as i64 * spacing_ms + jitter);
        let user = self.rng.random_range(0..self.users.len());
        let bad = self.rng.random_bool(self.config.bad_ratio.clamp(0.0, 1.0));
        let (event_id, value) = match self.kind {
            EventKind::User => {
                let e = self.user_event(user, timestamp);
                (e.event_id.clone(), serde_json::to_vec(&e))
            }
            EventKind::Transaction => {
                let e = self.transaction_event(user, timestamp);
                (e.event_id.clone(), serde_json::to_vec(&e))
            }
        };
        // Serializing our own plain structs cannot fail; an empty value would be quarantined.
        let value = value.unwrap_or_default();
        let key = self.users[user].user_id.clone();
        if bad {
            let kind = BAD_KINDS[self.bad_emitted % BAD_KINDS.len()];
            self.bad_emitted += 1;
            return GeneratedRecord {
                key,
                value: corrupt(kind, &value),
                timestamp,
                event_id: None,
                bad: Some(kind),
            };
        }
        GeneratedRecord {
            key,
            value,
            timestamp,
            event_id: Some(event_id.into_owned()),
            bad: None,
        }
    }

    fn user_event(&mut self, user: usize, at: DateTime<Utc>) -> UserEvent<'static> {
        let event_type = match self.rng.random_range(0..100) {
            0..=4 => UserEventType::Login,
            5..=7 => UserEventType::Logout,
            8..=54 => UserEventType::PageView,
            55..=79 => UserEventType::Click,
            80..=89 => UserEventType::Search,
            _ => UserEventType::AddToCart,
        };
        if event_type == UserEventType::Login {
            self.users[user].session_id = random_id(&mut self.rng);
        }
        let (path, title) = *PAGES.choose(&mut self.rng).unwrap_or(&PAGES[0]);
        let product = format!("p{:05}", self.rng.random_range(0..5000));
        let url = if path == "/product/" {
            format!("https://shop.example.com{path}{product}")
        } else {
            format!("https://shop.example.com{path}")
        };
        let properties = match event_type {
            UserEventType::Search => Some(Properties {
                query: Some(
                    CATEGORIES
                        .choose(&mut self.rng)
                        .copied()
                        .unwrap_or("books")
                        .into(),
                ),
                product_id: None,
                element: None,
            }),
            UserEventType::AddToCart => Some(Properties {
                query: None,
                product_id: Some(product.into()),
                element: None,
            }),
            UserEventType::Click => Some(Properties {
                query: None,
                product_id: None,
                element: Some(
                    ["button.buy", "a.nav", "img.hero"][self.rng.random_range(0..3)].into(),
                ),
            }),
            _ => None,
        };
        let profile = &self.users[user];
        UserEvent {
            event_id: random_id(&mut self.rng).into(),
            event_type,
            event_time: at,
            user_id: profile.user_id.clone().into(),
            session_id: profile.session_id.clone().into(),
            page: Page {
                url: url.into(),
                referrer: self
                    .rng
                    .random_bool(0.3)
                    .then(|| "https://search.example.org/".into()),
                title: title.into(),
            },
            device: profile.device.clone(),
            geo: profile.geo.clone(),
            properties,
        }
    }

    fn transaction_event(&mut self, user: usize, at: DateTime<Utc>) -> TransactionEvent<'static> {
        let n_items = self.rng.random_range(1..=4);
        let items: Vec<Item> = (0..n_items)
            .map(|_| {
                let category = *CATEGORIES.choose(&mut self.rng).unwrap_or(&"books");
                let sku = format!("sku-{:05}", self.rng.random_range(0..5000));
                Item {
                    name: format!("{category} item {}", &sku[4..]).into(),
                    sku: sku.into(),
                    category: category.into(),
                    quantity: self.rng.random_range(1..=3),
                    unit_price: self.rng.random_range(199..=49_999) as f64 / 100.0,
                }
            })
            .collect();
        // The total is computed in cents so it is exact to two decimals.
        let cents: i64 = items
            .iter()
            .map(|i| (i.unit_price * 100.0).round() as i64 * i.quantity as i64)
            .sum();
        let status = match self.rng.random_range(0..100) {
            0..=84 => TransactionStatus::Completed,
            85..=91 => TransactionStatus::Pending,
            92..=97 => TransactionStatus::Failed,
            _ => TransactionStatus::Refunded,
        };
        let method =
            ["card", "card", "paypal", "bank_transfer", "wallet"][self.rng.random_range(0..5)];
        let (merchant_id, name, category) =
            *MERCHANTS.choose(&mut self.rng).unwrap_or(&MERCHANTS[0]);
        let profile = &self.users[user];
        TransactionEvent {
            event_id: random_id(&mut self.rng).into(),
            event_time: at,
            transaction_id: format!("t-{}", random_id(&mut self.rng)).into(),
            user_id: profile.user_id.clone().into(),
            session_id: self
                .rng
                .random_bool(0.9)
                .then(|| profile.session_id.clone().into()),
            amount: cents as f64 / 100.0,
            currency: CURRENCIES
                .choose(&mut self.rng)
                .copied()
                .unwrap_or("EUR")
                .into(),
            status,
            payment: Payment {
                method: method.into(),
                card_brand: (method == "card")
                    .then(|| ["visa", "mastercard", "amex"][self.rng.random_range(0..3)].into()),
                card_last4: (method == "card")
                    .then(|| format!("{:04}", self.rng.random_range(0..10_000)).into()),
            },
            merchant: Merchant {
                merchant_id: merchant_id.into(),
                name: name.into(),
                category: category.into(),
                country: profile.geo.country.clone(),
            },
            items,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn random_id(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// Turns a good record into a malformed one of the given kind.
fn corrupt(kind: BadKind, good: &[u8]) -> Vec<u8> {
    match kind {
        BadKind::NotJson => good[..good.len() / 2].to_vec(),
        BadKind::WrongTypes => {
            let mut v: serde_json::Value = serde_json::from_slice(good).unwrap_or_default();
            v["event_time"] = serde_json::json!(1_764_000_000);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        BadKind::MissingFields => {
            let mut v: serde_json::Value = serde_json::from_slice(good).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("event_id");
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        BadKind::Oversized => {
            let mut v: serde_json::Value = serde_json::from_slice(good).unwrap_or_default();
            v["padding"] = serde_json::json!("x".repeat(OVERSIZED_BYTES));
            serde_json::to_vec(&v).unwrap_or_default()
        }
    }
}

/// Counts deliveries the broker refused.
#[derive(Default)]
struct DeliveryCounter {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

struct CountingContext(Arc<DeliveryCounter>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.0.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProduceConfig {
    pub bootstrap: String,
    /// The topics to produce to, each with the schema of the events it gets.
    pub topics: Vec<(String, EventKind)>,
    /// Stop after this many records per topic.
    pub count: Option<u64>,
    /// Stop after this much wall time.
    pub duration: Option<Duration>,
    /// Records per second per topic; 0 is as fast as the broker takes them.
    pub rate: u64,
    pub generator: GeneratorConfig,
    /// Extra librdkafka settings (`-X key=value`), e.g. for SASL.
    pub kafka_overrides: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProduceSummary {
    pub stage: &'static str,
    pub records: u64,
    pub bad: u64,
    pub failed: u64,
    pub per_topic: std::collections::BTreeMap<String, u64>,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer for {bootstrap}: {source}")]
    Client {
        bootstrap: String,
        source: KafkaError,
    },
    #[error("cannot send to topic {topic}: {source}")]
    Send { topic: String, source: KafkaError },
    #[error(
        "{failed} records were not delivered to {bootstrap} (last error: {last}); check that the broker is up and the topics exist"
    )]
    Undelivered {
        failed: u64,
        bootstrap: String,
        last: String,
    },
    #[error("neither --count nor --duration given: the producer would never stop")]
    Unbounded,
}

/// Builds the Kafka client settings shared by producer and consumer.
pub fn kafka_config(bootstrap: &str, overrides: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in overrides {
        c.set(k, v);
    }
    c
}

/// Sends generated events to each topic, interleaved, until the count or duration is reached.
pub fn produce(config: &ProduceConfig) -> Result<ProduceSummary, ProduceError> {
    if config.count.is_none() && config.duration.is_none() {
        return Err(ProduceError::Unbounded);
    }
    let counter = Arc::new(DeliveryCounter::default());
    let mut client = kafka_config(&config.bootstrap, &[]);
    client
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("message.max.bytes", "2000000")
        .set("queue.buffering.max.messages", "500000")
        // The Java client's partitioner, so a user lands on the same partition whoever
        // produces, and the two topics stay co-partitioned.
        .set("partitioner", "murmur2_random");
    for (k, v) in &config.kafka_overrides {
        client.set(k, v);
    }
    let producer: BaseProducer<CountingContext> = client
        .create_with_context(CountingContext(counter.clone()))
        .map_err(|source| ProduceError::Client {
            bootstrap: config.bootstrap.clone(),
            source,
        })?;
    let mut generators: Vec<(String, EventGenerator)> = config
        .topics
        .iter()
        .map(|(topic, kind)| {
            (
                topic.clone(),
                EventGenerator::new(*kind, config.generator.clone()),
            )
        })
        .collect();
    let started = Instant::now();
    let mut summary = ProduceSummary {
        stage: "produce",
        ..Default::default()
    };
    let mut sent_per_topic = 0u64;
    loop {
        if config.count.is_some_and(|c| sent_per_topic >= c)
            || config.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        for (topic, generator) in &mut generators {
            let record = generator.next_record();
            send(&producer, topic, &record)?;
            summary.records += 1;
            summary.bad += u64::from(record.bad.is_some());
            *summary.per_topic.entry(topic.clone()).or_default() += 1;
        }
        sent_per_topic += 1;
        if config.rate > 0 {
            // Pace against the start, not the previous send, so the rate holds on average.
            let due = Duration::from_secs_f64(sent_per_topic as f64 / config.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                producer.poll(wait);
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|source| ProduceError::Send {
            topic: generators
                .iter()
                .map(|(topic, _)| topic.as_str())
                .collect::<Vec<_>>()
                .join(","),
            source,
        })?;
    summary.failed = counter.failed.load(Ordering::Relaxed);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if summary.failed > 0 {
        let last = counter
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        return Err(ProduceError::Undelivered {
            failed: summary.failed,
            bootstrap: config.bootstrap.clone(),
            last,
        });
    }
    Ok(summary)
}

/// Sends one record, waiting for room when the local queue is full.
fn send(
    producer: &BaseProducer<CountingContext>,
    topic: &str,
    record: &GeneratedRecord,
) -> Result<(), ProduceError> {
    let mut base = BaseRecord::to(topic)
        .key(record.key.as_bytes())
        .payload(record.value.as_slice())
        .timestamp(record.timestamp.timestamp_millis());
    loop {
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                base = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((source, _)) => {
                return Err(ProduceError::Send {
                    topic: topic.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Rejection, check_record};

    fn config(bad_ratio: f64) -> GeneratorConfig {
        GeneratorConfig {
            seed: 7,
            start: "2026-11-25T00:00:00Z".parse().unwrap(),
            spacing: Duration::from_millis(100),
            users: 50,
            bad_ratio,
        }
    }

    #[test]
    fn same_seed_same_records() {
        for kind in [EventKind::User, EventKind::Transaction] {
            let mut a = EventGenerator::new(kind, config(0.1));
            let mut b = EventGenerator::new(kind, config(0.1));
            for _ in 0..200 {
                let (x, y) = (a.next_record(), b.next_record());
                assert_eq!((x.key, x.value, x.timestamp), (y.key, y.value, y.timestamp));
            }
        }
    }

    #[test]
    fn good_records_pass_the_ingest_check_and_bad_ones_fail_it() {
        for kind in [EventKind::User, EventKind::Transaction] {
            let mut g = EventGenerator::new(kind, config(0.2));
            let mut seen_bad = std::collections::BTreeSet::new();
            for _ in 0..400 {
                let r = g.next_record();
                let checked = check_record(kind, Some(r.key.as_bytes()), &r.value, 512 * 1024);
                match r.bad {
                    None => {
                        let ok = checked.unwrap();
                        assert_eq!(
                            ok.event_time.timestamp_millis(),
                            r.timestamp.timestamp_millis()
                        );
                    }
                    Some(bad) => {
                        seen_bad.insert(format!("{bad:?}"));
                        let err = checked.unwrap_err();
                        let expected = match bad {
                            BadKind::NotJson => "not_json",
                            BadKind::WrongTypes | BadKind::MissingFields => "schema",
                            BadKind::Oversized => "oversized",
                        };
                        assert_eq!(err.kind(), expected, "{bad:?}: {err}");
                    }
                }
            }
            assert_eq!(
                seen_bad.len(),
                BAD_KINDS.len(),
                "every kind of bad record injected"
            );
        }
    }

    #[test]
    fn transaction_amount_is_the_exact_sum_of_its_items() {
        let mut g = EventGenerator::new(EventKind::Transaction, config(0.0));
        for _ in 0..100 {
            let r = g.next_record();
            let t: TransactionEvent = serde_json::from_slice(&r.value).unwrap();
            let cents: i64 = t
                .items
                .iter()
                .map(|i| (i.unit_price * 100.0).round() as i64 * i.quantity as i64)
                .sum();
            assert_eq!((t.amount * 100.0).round() as i64, cents);
            // At most two decimals in the JSON text itself.
            let text = String::from_utf8(r.value.clone()).unwrap();
            let amount = text
                .split("\"amount\":")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            assert!(
                amount.split('.').nth(1).is_none_or(|d| d.len() <= 2),
                "{amount}"
            );
            assert_eq!(t.user_id, r.key);
        }
    }

    #[test]
    fn missing_key_is_rejected() {
        let mut g = EventGenerator::new(EventKind::User, config(0.0));
        let r = g.next_record();
        assert_eq!(
            check_record(EventKind::User, None, &r.value, 1 << 20),
            Err(Rejection::MissingKey)
        );
    }
}
