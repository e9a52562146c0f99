//! CSV text of Arrow record batches, byte for byte what Arrow's CSV writer writes with
//! [`csv_writer`]'s options: fields quoted only where needed (RFC 4180), nulls empty,
//! timestamps in [`TIMESTAMP_FORMAT`]. Arrow's writer formats every value through its generic
//! display machinery and copies it into a record before encoding: 17 % of the CPU samples of a
//! 10M-event run. Here the column types of the gold tables are written directly, rows picked by
//! index (a bucket's rows need no copy of the batch first); any other type goes through Arrow's
//! own formatter. A differential test holds the two writers to the same bytes.

use chrono::{Datelike as _, NaiveDate, Timelike as _};
use datafusion::arrow::array::{
    Array, AsArray as _, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int32Type, Int64Type, SchemaRef, TimeUnit,
    TimestampMicrosecondType, UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How timestamps are written: UTC, microseconds, `Z`; the same in every file of every table.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Arrow's CSV writer as the gold tables' header is written with, and the reference the
/// tests compare [`encode_rows`] with.
pub fn csv_writer(header: bool) -> WriterBuilder {
    WriterBuilder::new()
        .with_header(header)
        .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_owned())
}

/// The header line of a table's CSV files.
pub fn csv_header(schema: &SchemaRef) -> Result<Vec<u8>, ArrowError> {
    let mut writer = csv_writer(true).build(Vec::new());
    writer.write(&RecordBatch::new_empty(schema.clone()))?;
    Ok(writer.into_inner())
}

/// One column, with how its values are written.
enum Column<'a> {
    Text(&'a StringArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    UInt64(&'a UInt64Array),
    Decimal {
        values: &'a Decimal128Array,
        scale: u32,
    },
    Date(&'a Date32Array),
    UtcMicros(&'a TimestampMicrosecondArray),
    Other(ArrayFormatter<'a>),
}

impl<'a> Column<'a> {
    fn new(array: &'a dyn Array, options: &FormatOptions<'a>) -> Result<Self, ArrowError> {
        Ok(match array.data_type() {
            DataType::Utf8 => Column::Text(array.as_string::<i32>()),
            DataType::Int32 => Column::Int32(array.as_primitive::<Int32Type>()),
            DataType::Int64 => Column::Int64(array.as_primitive::<Int64Type>()),
            DataType::UInt64 => Column::UInt64(array.as_primitive::<UInt64Type>()),
            DataType::Decimal128(_, scale) if (0..=38).contains(scale) => Column::Decimal {
                values: array.as_primitive::<Decimal128Type>(),
                scale: u32::from(scale.unsigned_abs()),
            },
            DataType::Date32 => Column::Date(array.as_primitive::<Date32Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
                Column::UtcMicros(array.as_primitive::<TimestampMicrosecondType>())
            }
            nested if nested.is_nested() => {
                return Err(ArrowError::CsvError(format!(
                    "Nested type {nested} is not supported in CSV"
                )));
            }
            _ => Column::Other(ArrayFormatter::try_new(array, options)?),
        })
    }

    /// Appends the field of `row` (nothing for a null).
    fn write(&self, row: usize, out: &mut Vec<u8>, scratch: &mut String) -> Result<(), ArrowError> {
        let mut integer = itoa::Buffer::new();
        match self {
            Column::Text(values) if values.is_valid(row) => {
                push_field(out, values.value(row).as_bytes())
            }
            Column::Int32(values) if values.is_valid(row) => {
                out.extend_from_slice(integer.format(values.value(row)).as_bytes());
            }
            Column::Int64(values) if values.is_valid(row) => {
                out.extend_from_slice(integer.format(values.value(row)).as_bytes());
            }
            Column::UInt64(values) if values.is_valid(row) => {
                out.extend_from_slice(integer.format(values.value(row)).as_bytes());
            }
            Column::Decimal { values, scale } if values.is_valid(row) => {
                push_decimal(out, values.value(row), *scale);
            }
            Column::Date(values) if values.is_valid(row) => push_date(out, values.value(row))?,
            Column::UtcMicros(values) if values.is_valid(row) => {
                push_utc_micros(out, values.value(row))?;
            }
            Column::Other(formatter) => {
                scratch.clear();
                formatter
                    .value(row)
                    .write(scratch)
                    .map_err(|e| ArrowError::CsvError(format!("row {}: {e}", row + 1)))?;
                push_field(out, scratch.as_bytes());
            }
            // A null: an empty field.
            _ => {}
        }
        Ok(())
    }
}

/// Appends the CSV lines of `rows` of `batch`, in that order.
pub fn encode_rows(
    batch: &RecordBatch,
    rows: impl IntoIterator<Item = usize>,
    out: &mut Vec<u8>,
) -> Result<(), ArrowError> {
    let options = FormatOptions::default()
        .with_null("")
        .with_timestamp_tz_format(Some(TIMESTAMP_FORMAT));
    let columns = batch
        .columns()
        .iter()
        .map(|array| Column::new(array.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut scratch = String::new();
    for row in rows {
        let start = out.len();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            column.write(row, out, &mut scratch)?;
        }
        if out.len() == start && columns.len() == 1 {
            // A line of one empty field is written quoted, so it is not an empty line.
            out.extend_from_slice(b"\"\"");
        }
        out.push(b'\n');
    }
    Ok(())
}

/// Appends a field, quoted when it holds a comma, a quote or a line break (quotes doubled).
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    if !field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Appends an unscaled decimal as Arrow writes it: `-12.30` for -1230 at scale 2.
fn push_decimal(out: &mut Vec<u8>, value: i128, scale: u32) {
    if value < 0 {
        out.push(b'-');
    }
    let magnitude = value.unsigned_abs();
    let mut digits = itoa::Buffer::new();
    // At most 38 places ([`Column::new`]): 10^38 fits.
    let unit = 10u128.pow(scale);
    out.extend_from_slice(digits.format(magnitude / unit).as_bytes());
    if scale > 0 {
        out.push(b'.');
        let fraction = digits.format(magnitude % unit);
        out.extend(std::iter::repeat_n(b'0', scale as usize - fraction.len()));
        out.extend_from_slice(fraction.as_bytes());
    }
}

/// Arrow's DATE is days since 1970-01-01, which is `NaiveDate::default()`.
/// `None` beyond chrono's calendar.
pub fn date_of(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(days)))
}

/// Appends a date as `YYYY-MM-DD`; years beyond four digits take chrono's formatting.
fn push_date(out: &mut Vec<u8>, days: i32) -> Result<(), ArrowError> {
    let date = date_of(days).ok_or_else(|| {
        ArrowError::CsvError(format!("date {days} days from 1970 is out of range"))
    })?;
    if !(0..=9999).contains(&date.year()) {
        out.extend_from_slice(date.to_string().as_bytes());
        return Ok(());
    }
    push_digits(out, date.year() as u32, 4);
    out.push(b'-');
    push_digits(out, date.month(), 2);
    out.push(b'-');
    push_digits(out, date.day(), 2);
    Ok(())
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
    }
}

/// Appends `micros` (since the epoch, UTC) as [`TIMESTAMP_FORMAT`] does: chrono splits the
/// calendar, the fixed-width digits are written here; years beyond four digits take chrono's
/// formatting.
fn push_utc_micros(out: &mut Vec<u8>, micros: i64) -> Result<(), ArrowError> {
    let time = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ArrowError::CsvError(format!("timestamp {micros} µs is out of range")))?;
    if !(0..=9999).contains(&time.year()) {
        out.extend_from_slice(time.format(TIMESTAMP_FORMAT).to_string().as_bytes());
        return Ok(());
    }
    let fields = [
        (time.year() as u32, 4, b'-'),
        (time.month(), 2, b'-'),
        (time.day(), 2, b'T'),
        (time.hour(), 2, b':'),
        (time.minute(), 2, b':'),
        (time.second(), 2, b'.'),
        (time.nanosecond() / 1000, 6, b'Z'),
    ];
    for (value, width, then) in fields {
        push_digits(out, value, width);
        out.push(then);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array};
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    /// What Arrow's CSV writer writes for `batch`: the reference.
    fn by_arrow(batch: &RecordBatch) -> String {
        let mut writer = csv_writer(false).build(Vec::new());
        writer.write(batch).unwrap();
        String::from_utf8(writer.into_inner()).unwrap()
    }

    fn by_us(batch: &RecordBatch) -> String {
        let mut out = Vec::new();
        encode_rows(batch, 0..batch.num_rows(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn maybe<T>(rng: &mut rand_chacha::ChaCha8Rng, value: T) -> Option<T> {
        (!rng.random_bool(0.1)).then_some(value)
    }

    /// Random text from pieces that need quoting and pieces that do not.
    fn text(rng: &mut rand_chacha::ChaCha8Rng) -> String {
        const PIECES: &[&str] = &[
            "a", "Zürich", ",", "\"", "\n", "\r", " ", "'", "é", "日本", "x y", ";", "\t", "",
        ];
        (0..rng.random_range(0..5))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    #[test]
    fn rows_are_written_as_arrows_csv_writer_writes_them() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 5_000;
        let day = 86_400_000_000i64;
        let mut micros: Vec<Option<i64>> = vec![
            Some(0),
            Some(-1),
            Some(1),
            Some(951_782_400_000_000),     // 2000-02-29T00:00:00Z
            Some(-62_167_219_200_000_000), // 0000-01-01T00:00:00Z
            Some(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999Z
            Some(253_402_300_800_000_000), // year 10000: chrono's own formatting
            Some(-62_167_219_200_000_001), // year -1
        ];
        while micros.len() < n {
            let at = rng.random_range(-2_208_988_800_000_000i64..4_102_444_800_000_000)
                + rng.random_range(0..day);
            micros.push(maybe(&mut rng, at));
        }
        let mut days: Vec<Option<i32>> = vec![Some(0), Some(-1), Some(-719_528), Some(2_932_896)];
        while days.len() < n {
            let d = rng.random_range(-800_000..3_000_000);
            days.push(maybe(&mut rng, d));
        }
        let mut cents: Vec<Option<i128>> = vec![Some(0), Some(-5), Some(5), Some(-100), Some(100)];
        while cents.len() < n {
            let c = rng.random_range(-10_000_000_000i128..10_000_000_000);
            cents.push(maybe(&mut rng, c));
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "text",
                Arc::new(StringArray::from_iter((0..n).map(|_| {
                    let t = text(&mut rng);
                    maybe(&mut rng, t)
                }))),
            ),
            (
                "int32",
                Arc::new(Int32Array::from_iter((0..n).map(|_| {
                    let v = rng.random::<i32>() >> rng.random_range(0..31);
                    maybe(&mut rng, v)
                }))),
            ),
            (
                "int64",
                Arc::new(Int64Array::from_iter((0..n).map(|_| {
                    let v = rng.random::<i64>() >> rng.random_range(0..63);
                    maybe(&mut rng, v)
                }))),
            ),
            (
                "uint64",
                Arc::new(UInt64Array::from_iter((0..n).map(|_| {
                    let v = rng.random::<u64>() >> rng.random_range(0..63);
                    maybe(&mut rng, v)
                }))),
            ),
            (
                "money",
                Arc::new(
                    Decimal128Array::from(cents.clone())
                        .with_precision_and_scale(28, 2)
                        .unwrap(),
                ),
            ),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from(cents.clone())
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ),
            ),
            (
                "whole",
                Arc::new(
                    Decimal128Array::from(cents)
                        .with_precision_and_scale(20, 0)
                        .unwrap(),
                ),
            ),
            ("date", Arc::new(Date32Array::from(days))),
            (
                "time",
                Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC")),
            ),
            (
                "local_time",
                Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("+01:00")),
            ),
            (
                "float",
                Arc::new(Float64Array::from_iter((0..n).map(|_| {
                    let v = rng.random_range(-1e6..1e6) / 7.0;
                    maybe(&mut rng, v)
                }))),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from_iter((0..n).map(|_| {
                    let v = rng.random_bool(0.5);
                    maybe(&mut rng, v)
                }))),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        assert_eq!(by_us(&batch), by_arrow(&batch));

        // Every column alone too: a line of one empty field is the edge case.
        for i in 0..batch.num_columns() {
            let alone = batch.project(&[i]).unwrap();
            assert_eq!(by_us(&alone), by_arrow(&alone), "column {i}");
        }
    }

    #[test]
    fn rows_are_picked_by_index_in_the_order_given() {
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![10, 11, 12])) as ArrayRef,
        )])
        .unwrap();
        let mut out = Vec::new();
        encode_rows(&batch, [2, 0], &mut out).unwrap();
        assert_eq!(out, b"12\n10\n");
    }

    #[test]
    fn arrow_days_are_dates() {
        assert_eq!(date_of(0), NaiveDate::from_ymd_opt(1970, 1, 1));
        assert_eq!(date_of(i32::MAX), None);
        assert_eq!(date_of(20_417), NaiveDate::from_ymd_opt(2025, 11, 25));
    }
}
