//! The fast path of the schema check: a single forward scan that accepts a record only when
//! it is in the simple form every producer here writes, and otherwise gives way to serde.
//!
//! serde_json's typed parse was 41 % of a compressed drain's CPU samples, and a drain that
//! skipped the check took the perf tool's time or less (docs/benchmarks.md, "Hand-written code
//! and what it buys", has what the scan gained). Most of that parse is generic machinery
//! (visitors, field matching through `str`, escape handling); this scan only compares bytes
//! against the schema tables below.
//!
//! The rule that keeps it right: it answers `Some` only for text that serde accepts into the
//! same event (same event time, same user id), and `None` for everything else — unknown or
//! escaped names, escapes or control characters in strings, numbers with exponents or leading
//! signs where a sign matters, anything serde would reject. `None` is not a rejection: the
//! record then takes serde's path, which accepts it or says why not. The tables mirror the
//! types in `events.rs`; a test compares their field and enum names with the names serde's
//! derive sees, and a differential test feeds both paths mutated records.

use chrono::{DateTime, Utc};

use super::EventKind;

/// What the fast path found in an accepted record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Canonical<'a> {
    pub event_time: DateTime<Utc>,
    pub user_id: &'a str,
}

/// The JSON a field holds.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A string without escapes.
    Text,
    /// One of the enum's snake_case names.
    OneOf(&'static [&'static str]),
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as `parse_utc_fast` reads it.
    Time,
    /// A number without exponent and with at most 15 integer digits (always a finite f64).
    Decimal,
    /// A number of at most 9 digits, no sign, no fraction (always a u32).
    Count,
    Object(&'static Schema),
    /// An array of objects.
    Objects(&'static Schema),
}

/// What the check needs from a field besides its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    EventTime,
    UserId,
    /// Negative amounts are rejected: any leading `-` goes to serde's path.
    Amount,
}

/// An object's fields, and which of them must be present (bit `i` for field `i`).
#[derive(Debug)]
struct Schema {
    fields: &'static [Field],
    required: u32,
}

const fn schema(fields: &'static [Field]) -> Schema {
    assert!(fields.len() <= 32, "a field per bit of the masks");
    let (mut required, mut i) = (0, 0);
    while i < fields.len() {
        if !fields[i].optional {
            required |= 1 << i;
        }
        i += 1;
    }
    Schema { fields, required }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    /// The name as it opens the member in compact JSON: `"name":`.
    member: &'static [u8],
    shape: Shape,
    /// An `Option` field in the types: may be missing or `null`.
    optional: bool,
    role: Role,
}

const fn field(member: &'static [u8], shape: Shape) -> Field {
    Field {
        member,
        shape,
        optional: false,
        role: Role::Plain,
    }
}

const fn optional(member: &'static [u8], shape: Shape) -> Field {
    Field {
        member,
        shape,
        optional: true,
        role: Role::Plain,
    }
}

const fn with_role(field: Field, role: Role) -> Field {
    Field { role, ..field }
}

impl Field {
    fn name(&self) -> &'static [u8] {
        &self.member[1..self.member.len() - 2]
    }
}

/// `UserEventType`'s and `TransactionStatus`'s names, as serde reads them.
const EVENT_TYPES: &[&str] = &[
    "login",
    "logout",
    "page_view",
    "click",
    "search",
    "add_to_cart",
];
const STATUSES: &[&str] = &["completed", "pending", "failed", "refunded"];

const USER_EVENT: Schema = schema(&[
    field(b"\"event_id\":", Shape::Text),
    field(b"\"event_type\":", Shape::OneOf(EVENT_TYPES)),
    with_role(field(b"\"event_time\":", Shape::Time), Role::EventTime),
    with_role(field(b"\"user_id\":", Shape::Text), Role::UserId),
    field(b"\"session_id\":", Shape::Text),
    field(b"\"page\":", Shape::Object(&PAGE)),
    field(b"\"device\":", Shape::Object(&DEVICE)),
    field(b"\"geo\":", Shape::Object(&GEO)),
    optional(b"\"properties\":", Shape::Object(&PROPERTIES)),
]);
const PAGE: Schema = schema(&[
    field(b"\"url\":", Shape::Text),
    optional(b"\"referrer\":", Shape::Text),
    field(b"\"title\":", Shape::Text),
]);
const DEVICE: Schema = schema(&[
    field(b"\"type\":", Shape::Text),
    field(b"\"os\":", Shape::Text),
    field(b"\"browser\":", Shape::Text),
]);
const GEO: Schema = schema(&[
    field(b"\"country\":", Shape::Text),
    field(b"\"city\":", Shape::Text),
    field(b"\"lat\":", Shape::Decimal),
    field(b"\"lon\":", Shape::Decimal),
]);
const PROPERTIES: Schema = schema(&[
    optional(b"\"query\":", Shape::Text),
    optional(b"\"product_id\":", Shape::Text),
    optional(b"\"element\":", Shape::Text),
]);

const TRANSACTION_EVENT: Schema = schema(&[
    field(b"\"event_id\":", Shape::Text),
    with_role(field(b"\"event_time\":", Shape::Time), Role::EventTime),
    field(b"\"transaction_id\":", Shape::Text),
    with_role(field(b"\"user_id\":", Shape::Text), Role::UserId),
    optional(b"\"session_id\":", Shape::Text),
    with_role(field(b"\"amount\":", Shape::Decimal), Role::Amount),
    field(b"\"currency\":", Shape::Text),
    field(b"\"status\":", Shape::OneOf(STATUSES)),
    field(b"\"payment\":", Shape::Object(&PAYMENT)),
    field(b"\"merchant\":", Shape::Object(&MERCHANT)),
    field(b"\"items\":", Shape::Objects(&ITEM)),
]);
const PAYMENT: Schema = schema(&[
    field(b"\"method\":", Shape::Text),
    optional(b"\"card_brand\":", Shape::Text),
    optional(b"\"card_last4\":", Shape::Text),
]);
const MERCHANT: Schema = schema(&[
    field(b"\"merchant_id\":", Shape::Text),
    field(b"\"name\":", Shape::Text),
    field(b"\"category\":", Shape::Text),
    field(b"\"country\":", Shape::Text),
]);
const ITEM: Schema = schema(&[
    field(b"\"sku\":", Shape::Text),
    field(b"\"name\":", Shape::Text),
    field(b"\"category\":", Shape::Text),
    field(b"\"quantity\":", Shape::Count),
    field(b"\"unit_price\":", Shape::Decimal),
]);

fn schema_of(kind: EventKind) -> &'static Schema {
    match kind {
        EventKind::User => &USER_EVENT,
        EventKind::Transaction => &TRANSACTION_EVENT,
    }
}

/// Checks `text` on the fast path; `None` means "ask serde", not "bad".
pub(super) fn check(kind: EventKind, text: &str) -> Option<Canonical<'_>> {
    // Escapes and raw control characters (serde rejects the latter inside strings) are left to
    // serde; one pass over the whole record finds them, so strings are then scanned for their
    // closing quote alone.
    let special = text
        .bytes()
        .fold(false, |found, b| found | (b < 0x20) | (b == b'\\'));
    if special {
        return None;
    }
    let mut scan = Scan {
        text,
        bytes: text.as_bytes(),
        at: 0,
        event_time: None,
        user_id: None,
    };
    scan.object(schema_of(kind))?;
    scan.skip_whitespace();
    if scan.at != scan.bytes.len() {
        return None;
    }
    Some(Canonical {
        event_time: scan.event_time?,
        user_id: scan.user_id?,
    })
}

/// `bytes.starts_with(prefix)` for the short prefixes of the tables, in 8-byte words (the last
/// one overlapping) instead of a call to `memcmp`, which was 4 % of a drain's samples.
fn has_prefix(bytes: &[u8], prefix: &[u8]) -> bool {
    let Some(bytes) = bytes.get(..prefix.len()) else {
        return false;
    };
    if prefix.len() < 8 {
        return bytes == prefix;
    }
    let word = |s: &[u8], at: usize| s.get(at..).and_then(<[u8]>::first_chunk::<8>).copied();
    let last = prefix.len() - 8;
    (0..last)
        .step_by(8)
        .all(|at| word(bytes, at) == word(prefix, at))
        && word(bytes, last) == word(prefix, last)
}

struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    event_time: Option<DateTime<Utc>>,
    user_id: Option<&'a str>,
}

impl<'a> Scan<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, token: u8) -> Option<()> {
        (self.next_token()? == token).then_some(())
    }

    /// A string's content; the opening quote is already consumed. The record has no escapes
    /// or control characters ([`check`] made sure), so the next quote closes the string. Bounds
    /// as `&str` because the whole record is UTF-8 and quotes are ASCII.
    fn string_body(&mut self) -> Option<&'a str> {
        let start = self.at;
        let end = start + memchr::memchr(b'"', &self.bytes[start..])?;
        self.at = end + 1;
        self.text.get(start..end)
    }

    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        self.string_body()
    }

    /// `{ "name": value, ... }` with each name of `fields` at most once, in any order, and
    /// every required one present.
    fn object(&mut self, schema: &'static Schema) -> Option<()> {
        let fields = schema.fields;
        self.expect(b'{')?;
        let mut seen = 0u32;
        self.skip_whitespace();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
        } else {
            // Producers write the members in the types' order: the member after the last one
            // is tried first, as one comparison of its `"name":`.
            let mut expected = 0;
            loop {
                let index = self.member(fields, expected)?;
                let bit = 1u32 << index;
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
                expected = index + 1;
                self.value(&fields[index])?;
                match self.next_token()? {
                    b',' => self.skip_whitespace(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        (seen & schema.required == schema.required).then_some(())
    }

    /// A member's name and colon: which of `fields` it names.
    fn member(&mut self, fields: &'static [Field], expected: usize) -> Option<usize> {
        if let Some(field) = fields.get(expected)
            && has_prefix(&self.bytes[self.at..], field.member)
        {
            self.at += field.member.len();
            return Some(expected);
        }
        let name = self.string()?.as_bytes();
        let index = fields.iter().position(|f| f.name() == name)?;
        self.expect(b':')?;
        Some(index)
    }

    fn value(&mut self, field: &Field) -> Option<()> {
        self.skip_whitespace();
        let rest = &self.bytes[self.at..];
        if field.optional && rest.starts_with(b"null") {
            self.at += 4;
            return Some(());
        }
        match field.shape {
            Shape::Text => {
                let text = self.string()?;
                if field.role == Role::UserId {
                    self.user_id = Some(text);
                }
            }
            Shape::OneOf(names) => {
                let text = self.string()?;
                if !names.contains(&text) {
                    return None;
                }
            }
            Shape::Time => {
                let time = super::parse_utc_fast(self.string()?)?;
                if field.role == Role::EventTime {
                    self.event_time = Some(time);
                }
            }
            Shape::Decimal => self.decimal(field.role == Role::Amount)?,
            Shape::Count => self.count()?,
            Shape::Object(fields) => self.object(fields)?,
            Shape::Objects(fields) => {
                self.expect(b'[')?;
                self.skip_whitespace();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                } else {
                    loop {
                        self.object(fields)?;
                        match self.next_token()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// Digits from `at`; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]{0,14})(\.[0-9]+)?`, then a byte that cannot continue a number.
    fn decimal(&mut self, unsigned: bool) -> Option<()> {
        if self.bytes.get(self.at) == Some(&b'-') {
            if unsigned {
                return None;
            }
            self.at += 1;
        }
        self.integer_part(15)?;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        self.number_ends()
    }

    /// `0|[1-9][0-9]{0,8}`, then a byte that cannot continue a number.
    fn count(&mut self) -> Option<()> {
        self.integer_part(9)?;
        self.number_ends()
    }

    fn integer_part(&mut self, max_digits: usize) -> Option<()> {
        let leading_zero = self.bytes.get(self.at) == Some(&b'0');
        let n = self.digits();
        (n >= 1 && n <= max_digits && !(leading_zero && n > 1)).then_some(())
    }

    /// Exponents and fractions where they are not read here are serde's to judge.
    fn number_ends(&self) -> Option<()> {
        match self.bytes.get(self.at) {
            Some(b'.' | b'e' | b'E' | b'+' | b'-') => None,
            _ => Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;
    use crate::events::{
        Device, Geo, Item, Merchant, Page, Payment, Properties, TransactionEvent,
        TransactionStatus, UserEvent, UserEventType, check_record, check_with_serde, record_text,
    };
    use crate::produce::{EventGenerator, GeneratorConfig};

    const MAX_BYTES: usize = 1 << 20;
    const KINDS: [EventKind; 2] = [EventKind::User, EventKind::Transaction];

    /// Good records as the producers write them: (key, value).
    fn produced(kind: EventKind, seed: u64, count: usize) -> Vec<(String, String)> {
        let mut generator = EventGenerator::new(
            kind,
            GeneratorConfig {
                seed,
                start: "2026-11-25T23:59:58Z".parse().unwrap(),
                spacing: std::time::Duration::from_millis(250),
                users: 7,
                bad_ratio: 0.0,
            },
        );
        (0..count)
            .map(|_| {
                let record = generator.next_record();
                (record.key, String::from_utf8(record.value).unwrap())
            })
            .collect()
    }

    /// `check_record` against the serde-only check on the same bytes; true when the fast path
    /// took the record.
    fn assert_agrees(kind: EventKind, key: &str, value: &[u8]) -> bool {
        let reference = record_text(value, MAX_BYTES)
            .and_then(|text| check_with_serde(kind, Some(key.as_bytes()), text));
        let checked = check_record(kind, Some(key.as_bytes()), value, MAX_BYTES);
        assert_eq!(
            checked,
            reference,
            "{kind:?} record {}",
            String::from_utf8_lossy(value)
        );
        std::str::from_utf8(value).is_ok_and(|text| check(kind, text).is_some())
    }

    #[test]
    fn every_produced_record_takes_the_fast_path_with_serdes_answer() {
        for kind in KINDS {
            for seed in [1, 2, 3] {
                for (key, value) in produced(kind, seed, 400) {
                    let event = check(kind, &value);
                    assert!(event.is_some(), "{kind:?} record not fast: {value}");
                    assert!(assert_agrees(kind, &key, value.as_bytes()));
                    // With another key both paths reject it the same way.
                    assert!(assert_agrees(kind, "u-other", value.as_bytes()));
                }
            }
        }
    }

    /// Every byte position of a few records replaced by, or preceded by, bytes that matter to
    /// JSON, deleted, or the record cut there: each text gets serde's answer.
    #[test]
    fn byte_edits_get_serdes_answer() {
        const BYTES: &[u8] = b"\"\\,:{}[]0019-+.eE nlx\t\x01";
        let (mut fast, mut slow) = (0, 0);
        for kind in KINDS {
            for (key, value) in produced(kind, 5, 3) {
                let value = value.into_bytes();
                let mut count = |edited: &[u8]| {
                    if assert_agrees(kind, &key, edited) {
                        fast += 1;
                    } else {
                        slow += 1;
                    }
                };
                for at in 0..=value.len() {
                    count(&value[..at]);
                    if at < value.len() {
                        count(&[&value[..at], &value[at + 1..]].concat());
                    }
                    for &b in BYTES {
                        count(&[&value[..at], &[b], &value[at..]].concat());
                        if at < value.len() {
                            count(&[&value[..at], &[b], &value[at + 1..]].concat());
                        }
                    }
                }
            }
        }
        // Both paths were exercised: edits inside strings keep a record valid and fast.
        assert!(fast > 1000 && slow > 1000, "fast {fast}, slow {slow}");
    }

    /// Each member (at any depth) removed, set to another JSON type or value, duplicated, and
    /// an unknown member added: each text gets serde's answer.
    #[test]
    fn member_edits_get_serdes_answer() {
        let replacements = [
            "null",
            "0",
            "-1",
            "1.5",
            "-0.0",
            "1e2",
            "4294967296",
            "true",
            "\"x\"",
            "\"\"",
            "\"2026-11-25T10:00:00+01:00\"",
            "\"login\"",
            "\"completed\"",
            "[]",
            "[{}]",
            "{}",
        ];
        let mut fast = 0;
        for kind in KINDS {
            for (key, value) in produced(kind, 9, 4) {
                let record: Value = serde_json::from_str(&value).unwrap();
                for edited in member_edits(&record, &replacements) {
                    if assert_agrees(kind, &key, edited.as_bytes()) {
                        fast += 1;
                    }
                }
                // A member twice, and an unknown member (serde ignores it).
                let body = &value[1..];
                for member in [r#""user_id":"u000001","#, r#""extra":{"a":[1]},"#] {
                    assert_agrees(kind, &key, format!("{{{member}{body}").as_bytes());
                }
            }
        }
        assert!(fast > 100, "fast {fast}");
    }

    /// The record's text with one member at some depth removed or replaced.
    fn member_edits(record: &Value, replacements: &[&str]) -> Vec<String> {
        let mut edits = Vec::new();
        let mut path = Vec::new();
        edit_members(record, record, &mut path, replacements, &mut edits);
        edits
    }

    fn edit_members(
        root: &Value,
        here: &Value,
        path: &mut Vec<String>,
        replacements: &[&str],
        edits: &mut Vec<String>,
    ) {
        let children: Vec<(String, &Value)> = match here {
            Value::Object(members) => members.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (name, child) in children {
            path.push(name);
            let mut removed = root.clone();
            if let Some((last, parent)) = path.split_last()
                && let Some(parent) = pointer_mut(&mut removed, parent)
            {
                match parent {
                    Value::Object(m) => {
                        m.remove(last);
                    }
                    Value::Array(a) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => {}
                }
            }
            edits.push(removed.to_string());
            for replacement in replacements {
                let mut replaced = root.clone();
                if let Some(slot) = pointer_mut(&mut replaced, path) {
                    *slot = serde_json::from_str(replacement).unwrap();
                }
                edits.push(replaced.to_string());
            }
            edit_members(root, child, path, replacements, edits);
            path.pop();
        }
    }

    fn pointer_mut<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        value.pointer_mut(&pointer)
    }

    /// Captures the names serde's derive passes to `deserialize_struct` (fields) or
    /// `deserialize_enum` (variants).
    struct FieldsOf(Option<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for &mut FieldsOf {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(serde::de::Error::custom("captured"))
        }

        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(variants);
            Err(serde::de::Error::custom("captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            identifier ignored_any
        }
    }

    fn serde_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        let mut fields = FieldsOf(None);
        let _ = T::deserialize(&mut fields);
        fields.0.unwrap_or_default().to_vec()
    }

    fn table_fields(table: &Schema) -> Vec<&str> {
        table
            .fields
            .iter()
            .map(|f| std::str::from_utf8(f.name()).unwrap())
            .collect()
    }

    #[test]
    fn the_tables_name_the_fields_and_variants_serde_sees_in_its_order() {
        assert_eq!(table_fields(&USER_EVENT), serde_fields::<UserEvent>());
        assert_eq!(table_fields(&PAGE), serde_fields::<Page>());
        assert_eq!(table_fields(&DEVICE), serde_fields::<Device>());
        assert_eq!(table_fields(&GEO), serde_fields::<Geo>());
        assert_eq!(table_fields(&PROPERTIES), serde_fields::<Properties>());
        assert_eq!(
            table_fields(&TRANSACTION_EVENT),
            serde_fields::<TransactionEvent>()
        );
        assert_eq!(table_fields(&PAYMENT), serde_fields::<Payment>());
        assert_eq!(table_fields(&MERCHANT), serde_fields::<Merchant>());
        assert_eq!(table_fields(&ITEM), serde_fields::<Item>());
        assert_eq!(EVENT_TYPES, serde_fields::<UserEventType>());
        assert_eq!(STATUSES, serde_fields::<TransactionStatus>());
    }
}
