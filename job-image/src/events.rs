//! The two event schemas, field by field as in docs/events.md.
//!
//! The same types serialize the mock producers' events and check records on ingest: a record
//! that does not deserialize into its topic's type is quarantined with serde's message, which
//! names the field and what was wrong with it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Text that borrows from the record when it can: checking a record allocates nothing for
/// strings without escapes.
pub type Text<'a> = Cow<'a, str>;

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
pub struct UserEvent<'a> {
    #[serde(borrow)]
    pub event_id: Text<'a>,
    pub event_type: UserEventType,
    pub event_time: DateTime<Utc>,
    #[serde(borrow)]
    pub user_id: Text<'a>,
    #[serde(borrow)]
    pub session_id: Text<'a>,
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
    pub url: Text<'a>,
    #[serde(default, borrow)]
    pub referrer: Option<Text<'a>>,
    #[serde(borrow)]
    pub title: Text<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device<'a> {
    /// desktop, mobile or tablet.
    pub r#type: Text<'a>,
    #[serde(borrow)]
    pub os: Text<'a>,
    #[serde(borrow)]
    pub browser: Text<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geo<'a> {
    /// ISO 3166-1 alpha-2.
    #[serde(borrow)]
    pub country: Text<'a>,
    #[serde(borrow)]
    pub city: Text<'a>,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Properties<'a> {
    #[serde(default, borrow)]
    pub query: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub product_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub element: Option<Text<'a>>,
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
    pub event_id: Text<'a>,
    pub event_time: DateTime<Utc>,
    #[serde(borrow)]
    pub transaction_id: Text<'a>,
    #[serde(borrow)]
    pub user_id: Text<'a>,
    #[serde(default, borrow)]
    pub session_id: Option<Text<'a>>,
    /// Total in major units with at most two decimals; the ETL reads it as a decimal.
    pub amount: f64,
    /// ISO 4217.
    #[serde(borrow)]
    pub currency: Text<'a>,
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
    pub method: Text<'a>,
    #[serde(default, borrow)]
    pub card_brand: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub card_last4: Option<Text<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merchant<'a> {
    #[serde(borrow)]
    pub merchant_id: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub category: Text<'a>,
    #[serde(borrow)]
    pub country: Text<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item<'a> {
    #[serde(borrow)]
    pub sku: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub category: Text<'a>,
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
            (e.event_time, e.user_id.into_owned())
        }
        EventKind::Transaction => {
            let e: TransactionEvent = serde_json::from_str(text).map_err(rejection_of)?;
            if e.amount < 0.0 {
                return Err(Rejection::NegativeAmount(e.amount.to_string()));
            }
            (e.event_time, e.user_id.into_owned())
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
