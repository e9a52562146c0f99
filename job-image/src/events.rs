//! The two event schemas, field by field as in docs/events.md.
//!
//! The same types serialize the mock producers' events and check records on ingest: a record
//! that does not deserialize into its topic's type is quarantined with serde's message, which
//! names the field and what was wrong with it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const USER_EVENTS: &str = "user_events";
pub const TRANSACTION_EVENTS: &str = "transaction_events";
pub const TOPICS: [&str; 2] = [USER_EVENTS, TRANSACTION_EVENTS];

/// Which schema a topic's records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    User,
    Transaction,
}

impl EventKind {
    /// Topics named after the two schemas map to them; any other topic name (tests use
    /// unique ones) says its kind by containing `transaction`.
    pub fn for_topic(topic: &str) -> Self {
        if topic.contains("transaction") {
            EventKind::Transaction
        } else {
            EventKind::User
        }
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEvent {
    pub event_id: String,
    pub event_type: UserEventType,
    pub event_time: DateTime<Utc>,
    pub user_id: String,
    pub session_id: String,
    pub page: Page,
    pub device: Device,
    pub geo: Geo,
    /// Search text for `search`, product for `add_to_cart`, target element for `click`.
    #[serde(default)]
    pub properties: Option<Properties>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub url: String,
    #[serde(default)]
    pub referrer: Option<String>,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// desktop, mobile or tablet.
    pub r#type: String,
    pub os: String,
    pub browser: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub element: Option<String>,
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
pub struct TransactionEvent {
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    pub transaction_id: String,
    pub user_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    /// Total in major units with at most two decimals; the ETL reads it as a decimal.
    pub amount: f64,
    /// ISO 4217.
    pub currency: String,
    pub status: TransactionStatus,
    pub payment: Payment,
    pub merchant: Merchant,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// card, paypal, bank_transfer, wallet.
    pub method: String,
    #[serde(default)]
    pub card_brand: Option<String>,
    #[serde(default)]
    pub card_last4: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merchant {
    pub merchant_id: String,
    pub name: String,
    pub category: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub category: String,
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
pub fn check_record(
    kind: EventKind,
    key: Option<&[u8]>,
    value: &[u8],
    max_bytes: usize,
) -> Result<Checked, Rejection> {
    if value.is_empty() {
        return Err(Rejection::Empty);
    }
    if value.len() > max_bytes {
        return Err(Rejection::Oversized {
            size: value.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(value).map_err(|e| Rejection::NotUtf8(e.to_string()))?;
    let (event_time, user_id) = match kind {
        EventKind::User => {
            let e: UserEvent = serde_json::from_str(text).map_err(rejection_of)?;
            (e.event_time, e.user_id)
        }
        EventKind::Transaction => {
            let e: TransactionEvent = serde_json::from_str(text).map_err(rejection_of)?;
            if e.amount < 0.0 {
                return Err(Rejection::NegativeAmount(e.amount.to_string()));
            }
            (e.event_time, e.user_id)
        }
    };
    let key = key.ok_or(Rejection::MissingKey)?;
    if key != user_id.as_bytes() {
        return Err(Rejection::KeyMismatch {
            key: String::from_utf8_lossy(key).into_owned(),
            user_id,
        });
    }
    Ok(Checked { event_time })
}

/// One parse does both checks: serde says whether the text was not JSON at all (syntax, end
/// of input) or JSON of the wrong shape (data).
fn rejection_of(e: serde_json::Error) -> Rejection {
    match e.classify() {
        serde_json::error::Category::Data => Rejection::Schema(e.to_string()),
        _ => Rejection::NotJson(e.to_string()),
    }
}
