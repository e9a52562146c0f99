//! The two event schemas, field by field as in docs/events.md.
//!
//! The same types serialize the mock producers' events and check records on ingest: a record
//! that does not deserialize into its topic's type is quarantined with serde's message, which
//! names the field and what was wrong with it. Records in the producers' own form are checked
//! first by a faster scan that gives the same answers (`canonical`).

mod canonical;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The default topic of each schema: the topics are named after their schemas.
pub const USER_EVENTS: &str = "user_events";
pub const TRANSACTION_EVENTS: &str = "transaction_events";

/// Which schema a topic's records follow; in configuration files by the schema's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum EventKind {
    #[serde(rename = "user_events")]
    User,
    #[serde(rename = "transaction_events")]
    Transaction,
}

impl EventKind {
    /// The schema's name, as docs/events.md and configuration files call it.
    pub fn schema(self) -> &'static str {
        match self {
            EventKind::User => USER_EVENTS,
            EventKind::Transaction => TRANSACTION_EVENTS,
        }
    }
}

/// The topic that carries each schema's events, configured once for every stage
/// (`--user-events-topic`, `--transaction-events-topic`; a PipelineRun's
/// `kafka.userEventsTopic`, `kafka.transactionEventsTopic`). The defaults are named after the
/// schemas. A topic that is neither has no schema, and a stage given one refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    user_events: String,
    transaction_events: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            user_events: USER_EVENTS.to_owned(),
            transaction_events: TRANSACTION_EVENTS.to_owned(),
        }
    }
}

/// A topic configuration that cannot be followed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicsError {
    #[error(
        "topic {topic} has no schema: it is neither the user events topic ({user_events}) nor the transaction events topic ({transaction_events}). Say which schema it carries with --user-events-topic {topic} or --transaction-events-topic {topic} (STREAMFLOW_USER_EVENTS_TOPIC, STREAMFLOW_TRANSACTION_EVENTS_TOPIC; kafka.userEventsTopic or kafka.transactionEventsTopic in a PipelineRun)"
    )]
    NoSchema {
        topic: String,
        user_events: String,
        transaction_events: String,
    },
    #[error(
        "topic {topic} is named as the topic of both schemas (--user-events-topic and --transaction-events-topic): each schema needs a topic of its own"
    )]
    Shared { topic: String },
    #[error("the topic of {schema} is empty")]
    Empty { schema: &'static str },
}

impl Topics {
    pub fn new(user_events: &str, transaction_events: &str) -> Result<Self, TopicsError> {
        for (schema, topic) in [
            (USER_EVENTS, user_events),
            (TRANSACTION_EVENTS, transaction_events),
        ] {
            if topic.is_empty() {
                return Err(TopicsError::Empty { schema });
            }
        }
        if user_events == transaction_events {
            return Err(TopicsError::Shared {
                topic: user_events.to_owned(),
            });
        }
        Ok(Self {
            user_events: user_events.to_owned(),
            transaction_events: transaction_events.to_owned(),
        })
    }

    /// The topic that carries `kind`'s events.
    pub fn topic(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::User => &self.user_events,
            EventKind::Transaction => &self.transaction_events,
        }
    }

    /// Both topics with their schemas, user events first.
    pub fn all(&self) -> [(String, EventKind); 2] {
        [EventKind::User, EventKind::Transaction].map(|k| (self.topic(k).to_owned(), k))
    }

    /// The schema `topic` carries; a topic that is neither schema's is an error naming it.
    pub fn kind_of(&self, topic: &str) -> Result<EventKind, TopicsError> {
        [EventKind::User, EventKind::Transaction]
            .into_iter()
            .find(|&k| self.topic(k) == topic)
            .ok_or_else(|| TopicsError::NoSchema {
                topic: topic.to_owned(),
                user_events: self.user_events.clone(),
                transaction_events: self.transaction_events.clone(),
            })
    }

    /// `topics` with their schemas, or both topics when `topics` is empty.
    pub fn select(&self, topics: &[String]) -> Result<Vec<(String, EventKind)>, TopicsError> {
        if topics.is_empty() {
            return Ok(self.all().to_vec());
        }
        topics
            .iter()
            .map(|t| Ok((t.clone(), self.kind_of(t)?)))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserEventType {
    Login,
    Logout,
    PageView,
    Click,
    Search,
    AddToCart,
}

/// Text fields are `Cow<'a, str>` spelled out, with `#[serde(borrow)]`: serde's derive borrows a
/// `Cow` from the record only when it sees that type by name (through an alias it always
/// allocated a `String`). Checking a record then allocates nothing for required strings without
/// escapes; an optional one (`Option<Cow>`) is still a `String` when present, as serde does not
/// borrow through `Option`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEvent<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    pub event_type: UserEventType,
    #[serde(deserialize_with = "rfc3339")]
    pub event_time: DateTime<Utc>,
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    #[serde(borrow)]
    pub page: Page<'a>,
    #[serde(borrow)]
    pub device: Device<'a>,
    #[serde(borrow)]
    pub geo: Geo<'a>,
    /// Search text for `search`, product for `add_to_cart`, target element for `click`.
    #[serde(default, borrow)]
    pub properties: Option<Properties<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    #[serde(default, borrow)]
    pub referrer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub title: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device<'a> {
    /// desktop, mobile or tablet.
    #[serde(borrow)]
    pub r#type: Cow<'a, str>,
    #[serde(borrow)]
    pub os: Cow<'a, str>,
    #[serde(borrow)]
    pub browser: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geo<'a> {
    /// ISO 3166-1 alpha-2.
    #[serde(borrow)]
    pub country: Cow<'a, str>,
    #[serde(borrow)]
    pub city: Cow<'a, str>,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Properties<'a> {
    #[serde(default, borrow)]
    pub query: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub product_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub element: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Completed,
    Pending,
    Failed,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionEvent<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(deserialize_with = "rfc3339")]
    pub event_time: DateTime<Utc>,
    #[serde(borrow)]
    pub transaction_id: Cow<'a, str>,
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub session_id: Option<Cow<'a, str>>,
    /// Total in major units with at most two decimals; the ETL reads it as a decimal.
    pub amount: f64,
    /// ISO 4217.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    pub status: TransactionStatus,
    #[serde(borrow)]
    pub payment: Payment<'a>,
    #[serde(borrow)]
    pub merchant: Merchant<'a>,
    #[serde(borrow)]
    pub items: Vec<Item<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment<'a> {
    /// card, paypal, bank_transfer, wallet.
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    #[serde(default, borrow)]
    pub card_brand: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub card_last4: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merchant<'a> {
    #[serde(borrow)]
    pub merchant_id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub category: Cow<'a, str>,
    #[serde(borrow)]
    pub country: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item<'a> {
    #[serde(borrow)]
    pub sku: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub category: Cow<'a, str>,
    pub quantity: u32,
    pub unit_price: f64,
}

/// What ingest needs from a good record: where it goes in the landing layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    pub event_time: DateTime<Utc>,
}

/// Why a record is quarantined instead of landed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("empty value")]
    Empty,
    #[error("oversized: {size} bytes > limit {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("not UTF-8: {0}")]
    NotUtf8(String),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error("missing key: records are keyed by user id")]
    MissingKey,
    #[error("key {key:?} differs from user_id {user_id:?}")]
    KeyMismatch { key: String, user_id: String },
    #[error("negative amount {0}")]
    NegativeAmount(String),
}

impl Rejection {
    /// A short stable label for counting reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::Oversized { .. } => "oversized",
            Rejection::NotUtf8(_) => "not_utf8",
            Rejection::NotJson(_) => "not_json",
            Rejection::Schema(_) => "schema",
            Rejection::MissingKey => "missing_key",
            Rejection::KeyMismatch { .. } => "key_mismatch",
            Rejection::NegativeAmount(_) => "negative_amount",
        }
    }
}

/// Checks one Kafka record against its topic's schema.
///
/// Records in the form the producers write take a fast path (`canonical`), which answers only
/// where serde would give the same answer (tests hold the two to it); any other text is parsed
/// by serde into the event types, which accepts it or says what is wrong with it.
pub fn check_record(
    kind: EventKind,
    key: Option<&[u8]>,
    value: &[u8],
    max_bytes: usize,
) -> Result<Checked, Rejection> {
    let text = record_text(value, max_bytes)?;
    match canonical::check(kind, text) {
        Some(event) => {
            check_key(key, event.user_id)?;
            Ok(Checked {
                event_time: event.event_time,
            })
        }
        None => check_with_serde(kind, key, text),
    }
}

/// The checks before the schema: a value, not too large, UTF-8.
fn record_text(value: &[u8], max_bytes: usize) -> Result<&str, Rejection> {
    if value.is_empty() {
        return Err(Rejection::Empty);
    }
    if value.len() > max_bytes {
        return Err(Rejection::Oversized {
            size: value.len(),
            limit: max_bytes,
        });
    }
    std::str::from_utf8(value).map_err(|e| Rejection::NotUtf8(e.to_string()))
}

/// The schema check by serde, for any text: the reference the fast path must agree with.
fn check_with_serde(kind: EventKind, key: Option<&[u8]>, text: &str) -> Result<Checked, Rejection> {
    let event_time = match kind {
        EventKind::User => {
            let e: UserEvent = serde_json::from_str(text).map_err(rejection_of)?;
            check_key(key, &e.user_id)?;
            e.event_time
        }
        EventKind::Transaction => {
            let e: TransactionEvent = serde_json::from_str(text).map_err(rejection_of)?;
            if e.amount < 0.0 {
                return Err(Rejection::NegativeAmount(e.amount.to_string()));
            }
            check_key(key, &e.user_id)?;
            e.event_time
        }
    };
    Ok(Checked { event_time })
}

/// The user id is compared where it lies in the record: no copy per record.
fn check_key(key: Option<&[u8]>, user_id: &str) -> Result<(), Rejection> {
    let key = key.ok_or(Rejection::MissingKey)?;
    if key == user_id.as_bytes() {
        return Ok(());
    }
    Err(Rejection::KeyMismatch {
        key: String::from_utf8_lossy(key).into_owned(),
        user_id: user_id.to_owned(),
    })
}

/// Reads an event time as chrono's own `Deserialize` does (same accepted texts, values and
/// messages), with a fast path for the form every producer here writes,
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: chrono's general parser was ~3 % of a drain's CPU.
fn rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            match parse_utc_fast(value) {
                Some(t) => Ok(t),
                None => value
                    .parse::<DateTime<chrono::FixedOffset>>()
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(E::custom),
            }
        }
    }
    deserializer.deserialize_str(Visitor)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` exactly, or `None` for anything else (leap seconds
/// included), which then takes chrono's general path.
fn parse_utc_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = num(20..20 + digits.len())?;
            n * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if sec > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, min, sec, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// One parse does both checks: serde says whether the text was not JSON at all (syntax, end
/// of input) or JSON of the wrong shape (data).
fn rejection_of(e: serde_json::Error) -> Rejection {
    match e.classify() {
        serde_json::error::Category::Data => Rejection::Schema(e.to_string()),
        _ => Rejection::NotJson(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::{EventGenerator, GeneratorConfig};

    fn generated(kind: EventKind) -> Vec<u8> {
        let config = GeneratorConfig {
            seed: 3,
            start: "2026-11-25T00:00:00Z".parse().unwrap(),
            spacing: std::time::Duration::from_secs(1),
            users: 5,
            bad_ratio: 0.0,
        };
        EventGenerator::new(kind, config).next_record().value
    }

    fn assert_borrowed(texts: &[&Cow<str>], record: &[u8]) {
        let owned: Vec<_> = texts
            .iter()
            .filter(|t| matches!(t, Cow::Owned(_)))
            .collect();
        assert!(
            owned.is_empty(),
            "owned: {owned:?} in {}",
            String::from_utf8_lossy(record)
        );
    }

    #[test]
    fn checking_a_record_borrows_its_text_fields() {
        let value = generated(EventKind::User);
        // As check_record reads a record: from the text.
        let e: UserEvent = serde_json::from_str(std::str::from_utf8(&value).unwrap()).unwrap();
        let texts = [
            &e.event_id,
            &e.user_id,
            &e.session_id,
            &e.page.url,
            &e.page.title,
            &e.device.r#type,
            &e.device.os,
            &e.device.browser,
            &e.geo.country,
            &e.geo.city,
        ];
        assert_borrowed(&texts, &value);
        let value = generated(EventKind::Transaction);
        let t: TransactionEvent =
            serde_json::from_str(std::str::from_utf8(&value).unwrap()).unwrap();
        let mut texts = vec![
            &t.event_id,
            &t.transaction_id,
            &t.user_id,
            &t.currency,
            &t.payment.method,
            &t.merchant.merchant_id,
            &t.merchant.name,
            &t.merchant.category,
            &t.merchant.country,
        ];
        texts.extend(t.items.iter().flat_map(|i| [&i.sku, &i.name, &i.category]));
        assert_borrowed(&texts, &value);
    }

    #[test]
    fn the_fast_event_time_path_agrees_with_chrono() {
        for text in [
            "2026-11-01T06:21:08.770Z",
            "2026-11-01T06:21:08Z",
            "2026-11-01T23:59:59.999999999Z",
            "2024-02-29T00:00:00.1Z",
            "1970-01-01T00:00:00.000Z",
        ] {
            let chrono: DateTime<Utc> = text.parse().unwrap();
            assert_eq!(parse_utc_fast(text), Some(chrono), "{text}");
        }
        // Valid for chrono but not the fast form: the general path takes them.
        for text in [
            "2026-11-01T06:21:08+02:00",
            "2026-11-01t06:21:08z",
            "2026-11-01 06:21:08Z",
            "2016-12-31T23:59:60Z",
            "2026-11-01T06:21:08.1234567891Z",
        ] {
            assert_eq!(parse_utc_fast(text), None, "{text}");
            assert!(text.parse::<DateTime<Utc>>().is_ok(), "{text}");
        }
        for text in [
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T06:21:08.Z",
            "2026-11-01T06:21:0xZ",
            "+2026-11-01T06:21:08Z",
        ] {
            assert_eq!(parse_utc_fast(text), None, "{text}");
        }
    }

    #[test]
    fn event_times_deserialize_as_with_chrono_and_fail_with_its_message() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "rfc3339")]
            t: DateTime<Utc>,
        }
        let ours: T = serde_json::from_str(r#"{"t":"2026-11-01T06:21:08+02:00"}"#).unwrap();
        assert_eq!(
            ours.t,
            "2026-11-01T04:21:08Z".parse::<DateTime<Utc>>().unwrap()
        );
        for bad in [r#"{"t":1764000000}"#, r#"{"t":"yesterday"}"#] {
            let ours = serde_json::from_str::<T>(bad).err().map(|e| e.to_string());
            #[derive(Deserialize)]
            #[allow(dead_code)]
            struct C {
                t: DateTime<Utc>,
            }
            let chrono = serde_json::from_str::<C>(bad).err().map(|e| e.to_string());
            assert!(ours.is_some());
            assert_eq!(ours, chrono, "{bad}");
        }
    }

    #[test]
    fn the_key_is_checked_after_the_schema() {
        let value = br#"{"event_id":"e","event_type":"login","event_time":"2026-11-01T00:00:00Z","user_id":"u1","session_id":"s","page":{"url":"/","title":"t"},"device":{"type":"mobile","os":"iOS","browser":"Safari"},"geo":{"country":"DE","city":"Berlin","lat":1.0,"lon":2.0}}"#;
        let at = "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let check = |key: Option<&[u8]>| check_record(EventKind::User, key, value, 1 << 20);
        assert_eq!(check(Some(b"u1")), Ok(Checked { event_time: at }));
        assert_eq!(check(None), Err(Rejection::MissingKey));
        assert_eq!(
            check(Some(b"u2")),
            Err(Rejection::KeyMismatch {
                key: "u2".to_owned(),
                user_id: "u1".to_owned()
            })
        );
        let broken = check_record(EventKind::User, None, b"{\"event_id\":", 1 << 20);
        assert_eq!(broken.map_err(|e| e.kind()), Err("not_json"));
    }

    #[test]
    fn topics_map_each_schema_to_its_topic_and_refuse_a_topic_without_one() {
        let defaults = Topics::default();
        assert_eq!(
            defaults.select(&[]).unwrap(),
            vec![
                ("user_events".to_owned(), EventKind::User),
                ("transaction_events".to_owned(), EventKind::Transaction)
            ]
        );
        let renamed = Topics::new("clicks", "payments").unwrap();
        assert_eq!(renamed.kind_of("payments"), Ok(EventKind::Transaction));
        assert_eq!(renamed.kind_of("clicks"), Ok(EventKind::User));
        assert_eq!(renamed.topic(EventKind::Transaction), "payments");
        // Nothing is guessed from a name any more.
        let err = renamed.kind_of("transaction_events").unwrap_err();
        assert!(
            matches!(&err, TopicsError::NoSchema { topic, .. } if topic == "transaction_events")
        );
        let message = renamed
            .select(&["clicks".to_owned(), "refunds".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("topic refunds has no schema")
                && message.contains("--transaction-events-topic refunds"),
            "{message}"
        );
        assert_eq!(
            Topics::new("events", "events"),
            Err(TopicsError::Shared {
                topic: "events".to_owned()
            })
        );
        assert!(Topics::new("", "payments").is_err());
    }
}
