//! Events to the bytes of one Parquet file: zstd, page statistics and page indexes, row groups
//! of 128 Ki rows.
//!
//! `json` mode: the columns are the events' fields plus `_timestamp` (UTC), `_partition` and
//! `_offset`. A raw event's body is read as a JSON object (one that is not becomes
//! `{"message": body}`); raw JSON bodies are decoded straight into Arrow, without a JSON value
//! per row. The schema is inferred per file, so new fields add columns in later files; a field
//! whose values have different types within one file is written as JSON text, logged, never an
//! error. With a declared schema, exactly those columns are written and a value that does not
//! fit is written as null and counted.
//!
//! `raw` mode has fixed columns for any data: key, value, headers, timestamp, topic, partition,
//! offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::types::Float64Type;
use arrow_array::{
    cast::AsArray, Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::Value;
use trib_pipelines::config::sinks::{LakeColumn, LakeMode, LakeType};
use trib_pipelines::event::Event;

/// How events become columns.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub mode: LakeMode,
    /// Declared columns (json mode); empty: inferred.
    pub schema: Vec<LakeColumn>,
}

/// A file's bytes and the values that did not fit the declared schema.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub rejected: u64,
}

/// Rows sampled to guess a file's schema before decoding all of it.
const SAMPLE_ROWS: usize = 1024;

/// The Parquet bytes of `events`, encoded `ENCODE_CHUNK` rows at a time (`FileEncoder`).
pub fn encode(events: &[Event], enc: &Encoding) -> anyhow::Result<Encoded> {
    let mut file = FileEncoder::new(Arc::new(enc.clone()));
    for chunk in events.chunks(ENCODE_CHUNK) {
        file.add(chunk);
    }
    file.finish(events)
}

/// One file encoded as its events arrive, a chunk (up to `ENCODE_CHUNK` rows) at a time, so a
/// roll is mostly encoded by the time it is full.
///
/// In json mode with an inferred schema and raw JSON bodies (the common case), each chunk is
/// decoded straight into Arrow, with the schema sampled from the first chunk, and written; the
/// decoder's buffers stay small and are reused. Anything else (a declared schema, raw mode,
/// structured events, a chunk the first chunk's schema does not fit) is encoded whole by
/// `finish`, from all the file's events, as `record_batch` has it.
pub struct FileEncoder {
    enc: Arc<Encoding>,
    state: Stream,
}

enum Stream {
    /// No chunk yet.
    Empty,
    /// Chunks so far decoded and written.
    Writing(Box<Writing>),
    /// Encoded whole by `finish`.
    Whole,
}

/// A file's decoder and writer on the fast path.
struct Writing {
    json: FastJson,
    writer: ArrowWriter<Vec<u8>>,
}

impl FileEncoder {
    pub fn new(enc: Arc<Encoding>) -> Self {
        Self {
            enc,
            state: Stream::Empty,
        }
    }

    /// Encodes the file's next `chunk` of events (at most `ENCODE_CHUNK`), or leaves the file
    /// to be encoded whole.
    pub fn add(&mut self, chunk: &[Event]) {
        if chunk.is_empty() {
            return;
        }
        self.state = match std::mem::replace(&mut self.state, Stream::Whole) {
            Stream::Empty if self.enc.mode == LakeMode::Json && self.enc.schema.is_empty() => {
                let started = FastJson::start(chunk, ENCODE_CHUNK, has_offsets(chunk)).and_then(
                    |mut json| {
                        let b = json.decode(chunk).ok()??;
                        let mut writer = ArrowWriter::try_new(
                            Vec::new(),
                            b.schema(),
                            Some(writer_properties_for(&b)),
                        )
                        .ok()?;
                        writer.write(&b).ok()?;
                        Some(Stream::Writing(Box::new(Writing { json, writer })))
                    },
                );
                started.unwrap_or(Stream::Whole)
            }
            // `_partition` and `_offset` are written when the first chunk has offsets.
            Stream::Writing(mut w) if w.json.offsets || !has_offsets(chunk) => {
                match w.json.decode(chunk) {
                    Ok(Some(b)) if w.writer.write(&b).is_ok() => Stream::Writing(w),
                    _ => Stream::Whole,
                }
            }
            _ => Stream::Whole,
        };
    }

    /// Whether `finish` encodes the file whole and so needs its events (when they were not
    /// all written chunk by chunk).
    pub fn needs_events(&self) -> bool {
        !matches!(self.state, Stream::Writing(_))
    }

    /// The file's bytes; `events` are all its events, in the order they were added (only read
    /// when `needs_events`). A written file that cannot be finished is an error, never a file
    /// encoded from `events` again: a caller that was told `needs_events` is false may pass none.
    pub fn finish(self, events: &[Event]) -> anyhow::Result<Encoded> {
        if let Stream::Writing(w) = self.state {
            let Writing { json, mut writer } = *w;
            // The file is the bytes written so far, the buffered row group and the footer:
            // sized once, not doubled (and copied) as the row group is flushed into it.
            let size = writer.bytes_written() + writer.in_progress_size();
            let out = writer.inner_mut();
            out.reserve_exact(size.saturating_sub(out.len()) + size / 64 + FOOTER_SLACK);
            let bytes = writer.into_inner()?;
            json.retire();
            return Ok(Encoded { bytes, rejected: 0 });
        }
        let (batch, rejected) = record_batch(events, &self.enc)?;
        Ok(Encoded {
            bytes: write_parquet(&batch)?,
            rejected,
        })
    }
}

/// Rows decoded and written at a time by `FileEncoder`.
pub const ENCODE_CHUNK: usize = 8192;

/// Room for a file's footer (schema, row group and page index metadata) beyond its pages.
const FOOTER_SLACK: usize = 256 << 10;

/// The rows of `events` as a lake file has them, and how many values did not fit the declared
/// schema.
pub fn record_batch(events: &[Event], enc: &Encoding) -> anyhow::Result<(RecordBatch, u64)> {
    let mut rejected = 0;
    let batch = match enc.mode {
        LakeMode::Raw => raw_batch(events)?,
        LakeMode::Json if !enc.schema.is_empty() => {
            let (b, r) = declared_batch(events, &enc.schema)?;
            rejected = r;
            b
        }
        LakeMode::Json => json_batch(events).or_else(|e| {
            tracing::warn!(error = %e, rows = events.len(), "lake: rows do not fit one schema; this file is written in raw mode");
            raw_batch(events)
        })?,
    };
    Ok((batch, rejected))
}

/// The writer settings of every lake file.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// `writer_properties`, without dictionary encoding for the columns of `first` whose values are
/// nearly all different: identifiers, timestamps, offsets, measurements, free text. There a
/// dictionary is as large as the values and costs a hash per value to build (or, past its page
/// limit, is built only to be abandoned), and readers pay a lookup per value. Judged on up to
/// 256 sampled values: at most 1% repeated, or for long text (64 bytes or more on average) at
/// most 10%.
pub fn writer_properties_for(first: &RecordBatch) -> WriterProperties {
    let mut b = writer_properties().into_builder();
    for (field, column) in first.schema().fields().iter().zip(first.columns()) {
        if let Some(sample) = sample_values(column.as_ref()) {
            if sample.nearly_all_different() {
                b = b.set_column_dictionary_enabled(field.name().as_str().into(), false);
            }
        }
    }
    b.build()
}

/// What `writer_properties_for` learns from a column's first values.
struct Sample {
    values: usize,
    distinct: usize,
    bytes: usize,
}

impl Sample {
    fn nearly_all_different(&self) -> bool {
        const SAMPLE: usize = 256;
        if self.values < SAMPLE / 2 {
            return false;
        }
        let repeated = self.values - self.distinct;
        let long = self.bytes >= self.values * 64;
        repeated * 100 <= self.values || (long && repeated * 10 <= self.values)
    }
}

/// The first 256 non-null values of a text or fixed-width column, as bytes (None: another
/// type, whose encoding is left to Parquet).
fn sample_values(column: &dyn Array) -> Option<Sample> {
    const SAMPLE: usize = 256;
    let data = column.to_data();
    let values: Vec<&[u8]> = if let Some(text) = column.as_string_opt::<i32>() {
        text.iter()
            .flatten()
            .take(SAMPLE)
            .map(str::as_bytes)
            .collect()
    } else {
        let width = column.data_type().primitive_width()?;
        let buffer = data.buffers().first()?.as_slice();
        (0..column.len())
            .filter(|&i| column.is_valid(i))
            .take(SAMPLE)
            .filter_map(|i| {
                buffer.get((data.offset() + i) * width..(data.offset() + i + 1) * width)
            })
            .collect()
    };
    let distinct = values
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    Some(Sample {
        values: values.len(),
        distinct,
        bytes: values.iter().map(|v| v.len()).sum(),
    })
}

fn write_parquet(batch: &RecordBatch) -> anyhow::Result<Vec<u8>> {
    let mut w = ArrowWriter::try_new(
        Vec::new(),
        batch.schema(),
        Some(writer_properties_for(batch)),
    )?;
    w.write(batch)?;
    Ok(w.into_inner()?)
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
}

/// Whether json mode writes `_partition` and `_offset`: when any event came from Kafka.
fn has_offsets(events: &[Event]) -> bool {
    events.iter().any(|e| e.meta.offset.is_some())
}

/// The metadata columns of json mode, appended to the fields' columns; `offsets`: with
/// `_partition` and `_offset` (`has_offsets` of the whole file).
fn with_metadata(
    fields: RecordBatch,
    events: &[Event],
    offsets: bool,
) -> anyhow::Result<RecordBatch> {
    let mut schema: Vec<Field> = fields
        .schema()
        .fields()
        .iter()
        .filter(|f| !f.name().starts_with('_'))
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = fields
        .schema()
        .fields()
        .iter()
        .zip(fields.columns())
        .filter(|(f, _)| !f.name().starts_with('_'))
        .map(|(_, c)| c.clone())
        .collect();
    schema.push(Field::new("_timestamp", timestamp_type(), false));
    columns.push(Arc::new(
        TimestampMillisecondArray::from_iter_values(events.iter().map(|e| e.timestamp_ms))
            .with_timezone("+00:00"),
    ));
    if offsets {
        schema.push(Field::new("_partition", DataType::Int32, true));
        columns.push(Arc::new(Int32Array::from_iter(
            events.iter().map(|e| e.meta.partition),
        )));
        schema.push(Field::new("_offset", DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from_iter(
            events.iter().map(|e| e.meta.offset),
        )));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(schema)),
        columns,
    )?)
}

/// Json mode, inferred schema. Raw JSON bodies go straight through Arrow's JSON decoder with
/// a schema guessed from a sample; anything else (structured events, non-JSON bodies, a row the
/// guess does not fit) takes the slow path of one JSON value per row.
fn json_batch(events: &[Event]) -> anyhow::Result<RecordBatch> {
    if let Some(mut json) = FastJson::start(events, events.len().max(1), has_offsets(events)) {
        if let Some(b) = json.decode(events)? {
            return Ok(b);
        }
    }
    let mut rows: Vec<Value> = events.iter().map(row_of).collect();
    let schema = match trib_pipelines::arrow::infer_rows_schema(&rows) {
        Ok(s) => s,
        Err(_) => {
            let conflicts = as_text_where_types_conflict(&mut rows);
            tracing::warn!(fields = ?conflicts, rows = rows.len(), "lake: fields with values of different types are written as JSON text in this file");
            trib_pipelines::arrow::infer_rows_schema(&rows)?
        }
    };
    let b = trib_pipelines::arrow::rows_to_record_batch(&rows, Arc::new(schema))?;
    with_metadata(b, events, has_offsets(events))
}

/// An event as a JSON object row.
fn row_of(e: &Event) -> Value {
    if e.fields.is_empty() {
        if let Some(raw) = &e.raw {
            if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(raw) {
                return v;
            }
        }
    }
    e.to_json()
}

/// Raw JSON object bodies decoded into Arrow without a JSON value per row, with a schema
/// sampled from the first events it sees; each batch gets the metadata columns.
struct FastJson {
    decoder: arrow_json::reader::Decoder,
    /// The fields' schema `decoder` decodes.
    schema: SchemaRef,
    /// Rows per batch, at most.
    rows: usize,
    /// Whether batches get `_partition` and `_offset`.
    offsets: bool,
}

/// Decoders of finished files, kept for the next file of the same schema: a decoder's buffers
/// (a chunk's text, its tape) grow to a chunk's size once, instead of from empty (copied at
/// each doubling, into new memory) for every file.
static IDLE_DECODERS: Mutex<Vec<(SchemaRef, arrow_json::reader::Decoder)>> = Mutex::new(Vec::new());

/// Idle decoders kept at most; the oldest go first.
const IDLE_KEPT: usize = 8;

impl FastJson {
    /// A decoder for bodies like up to `SAMPLE_ROWS` sampled across `events`, for batches of up
    /// to `rows`; None when these events cannot take this path (structured events, a body that
    /// is not a JSON object, no schema common to the sample).
    fn start(events: &[Event], rows: usize, offsets: bool) -> Option<Self> {
        if events.is_empty()
            || events
                .iter()
                .any(|e| !e.fields.is_empty() || e.raw.is_none())
        {
            return None;
        }
        let sample: Option<Vec<Value>> = events
            .iter()
            .filter_map(|e| e.raw.as_ref())
            .step_by((events.len() / SAMPLE_ROWS).max(1))
            .map(|b| {
                serde_json::from_slice::<Value>(b)
                    .ok()
                    .filter(Value::is_object)
            })
            .collect();
        let schema = Arc::new(trib_pipelines::arrow::infer_rows_schema(&sample?).ok()?);
        let idle = (rows == ENCODE_CHUNK)
            .then(|| {
                let mut idle = IDLE_DECODERS.lock().ok()?;
                let at = idle.iter().rposition(|(s, _)| *s == schema)?;
                Some(idle.swap_remove(at).1)
            })
            .flatten();
        let decoder = match idle {
            Some(d) => d,
            // Strict: a field the sample did not show is an error, so nothing is dropped
            // silently. Integers are read as floats, then checked (`exact_integers`).
            None => arrow_json::ReaderBuilder::new(Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| floats_for_integers(f))
                    .collect::<Vec<_>>(),
            )))
            .with_batch_size(rows)
            .with_strict_mode(true)
            .build_decoder()
            .ok()?,
        };
        Some(Self {
            decoder,
            schema,
            rows,
            offsets,
        })
    }

    /// Keeps the decoder for a later file; only called after a batch was flushed whole, so it
    /// holds no rows.
    fn retire(self) {
        if self.rows != ENCODE_CHUNK {
            return;
        }
        if let Ok(mut idle) = IDLE_DECODERS.lock() {
            if idle.len() >= IDLE_KEPT {
                idle.remove(0);
            }
            idle.push((self.schema, self.decoder));
        }
    }

    /// The rows of `part` (at most the `rows` given to `start`) with their metadata columns;
    /// Ok(None) when they do not take this path (a structured event, a body that is not a JSON
    /// object, a field the sample did not show, a number that is not the integer the sample
    /// typed its field as). The decoder is not to be used after that.
    fn decode(&mut self, part: &[Event]) -> anyhow::Result<Option<RecordBatch>> {
        for e in part {
            let Some(body) = e.raw.as_ref().filter(|_| e.fields.is_empty()) else {
                return Ok(None);
            };
            let trimmed = body.trim_ascii();
            if trimmed.first() != Some(&b'{')
                || self.decoder.decode(trimmed).ok() != Some(trimmed.len())
            {
                return Ok(None);
            }
        }
        let batch = match self.decoder.flush() {
            Ok(Some(batch)) if batch.num_rows() == part.len() => batch,
            _ => return Ok(None),
        };
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            if !exact_integers(column.as_ref(), field.data_type()) {
                return Ok(None);
            }
            columns.push(if column.data_type() == field.data_type() {
                column.clone()
            } else {
                arrow_cast::cast(column, field.data_type())?
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Some(with_metadata(batch, part, self.offsets)?))
    }
}

/// `field` with every Int64 in it, at any depth, read as Float64 instead: arrow-json reads a
/// fraction into an integer column by cutting it (1.5 becomes 1), and the sample that typed
/// the field may not have shown the fraction. Read as a float, `exact_integers` can tell.
fn floats_for_integers(field: &Field) -> Field {
    let t = match field.data_type() {
        DataType::Int64 => DataType::Float64,
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| floats_for_integers(f))
                .collect::<Vec<_>>()
                .into(),
        ),
        DataType::List(item) => DataType::List(Arc::new(floats_for_integers(item))),
        other => other.clone(),
    };
    field.clone().with_data_type(t)
}

/// Whether every value of `column` (read by `floats_for_integers`'s field) that is an Int64 in
/// `target` is a whole number of magnitude below 2^53, so exactly the integer in the text;
/// a fraction, or an integer a float cannot hold exactly, sends the rows to the slow path,
/// which types them from all their values.
fn exact_integers(column: &dyn Array, target: &DataType) -> bool {
    const EXACT: f64 = (1u64 << 53) as f64;
    match target {
        DataType::Int64 => column.as_primitive_opt::<Float64Type>().is_some_and(|a| {
            a.iter()
                .flatten()
                .all(|v| v.fract() == 0.0 && v.abs() < EXACT)
        }),
        DataType::Struct(fields) => column.as_struct_opt().is_some_and(|s| {
            fields
                .iter()
                .zip(s.columns())
                .all(|(f, c)| exact_integers(c.as_ref(), f.data_type()))
        }),
        DataType::List(item) => column
            .as_list_opt::<i32>()
            .is_some_and(|l| exact_integers(l.values().as_ref(), item.data_type())),
        _ => true,
    }
}

fn as_text_where_types_conflict(rows: &mut [Value]) -> Vec<String> {
    let mut kinds: BTreeMap<String, u8> = BTreeMap::new();
    for r in rows.iter() {
        if let Value::Object(m) = r {
            for (k, v) in m {
                let kind = match v {
                    Value::Null => 0,
                    Value::Bool(_) => 1,
                    Value::Number(_) => 2,
                    Value::String(_) => 4,
                    Value::Array(_) => 8,
                    Value::Object(_) => 16,
                };
                *kinds.entry(k.clone()).or_default() |= kind;
            }
        }
    }
    let conflicts: Vec<String> = kinds
        .into_iter()
        .filter(|(_, k)| k.count_ones() > 1)
        .map(|(f, _)| f)
        .collect();
    for r in rows.iter_mut() {
        if let Value::Object(m) = r {
            for f in &conflicts {
                if let Some(v) = m.get_mut(f) {
                    if !v.is_string() && !v.is_null() {
                        *v = Value::String(v.to_string());
                    }
                }
            }
        }
    }
    conflicts
}

/// Json mode with declared columns; returns the batch and how many values did not fit.
fn declared_batch(events: &[Event], columns: &[LakeColumn]) -> anyhow::Result<(RecordBatch, u64)> {
    let rows: Vec<Value> = events.iter().map(row_of).collect();
    let mut rejected = 0u64;
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for c in columns {
        let values = rows.iter().map(|r| r.get(&c.name).filter(|v| !v.is_null()));
        let mut miss = |ok: bool| {
            if !ok {
                rejected += 1;
            }
        };
        let (ty, array): (DataType, ArrayRef) = match c.ty {
            LakeType::String => {
                let mut b = StringBuilder::new();
                for v in values {
                    match v {
                        None => b.append_null(),
                        Some(Value::String(s)) => b.append_value(s),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                            b.append_value(v.to_string())
                        }
                        Some(_) => {
                            miss(false);
                            b.append_null()
                        }
                    }
                }
                (DataType::Utf8, Arc::new(b.finish()))
            }
            LakeType::Json => {
                let mut b = StringBuilder::new();
                for v in values {
                    match v {
                        None => b.append_null(),
                        Some(v) => b.append_value(v.to_string()),
                    }
                }
                (DataType::Utf8, Arc::new(b.finish()))
            }
            LakeType::Int64 => {
                let mut b = Int64Builder::new();
                for v in values {
                    let x = v.map(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
                    miss(!matches!(x, Some(None)));
                    b.append_option(x.flatten());
                }
                (DataType::Int64, Arc::new(b.finish()))
            }
            LakeType::Float64 => {
                let mut b = Float64Builder::new();
                for v in values {
                    let x = v.map(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
                    miss(!matches!(x, Some(None)));
                    b.append_option(x.flatten());
                }
                (DataType::Float64, Arc::new(b.finish()))
            }
            LakeType::Boolean => {
                let mut b = BooleanBuilder::new();
                for v in values {
                    let x = v.map(Value::as_bool);
                    miss(!matches!(x, Some(None)));
                    b.append_option(x.flatten());
                }
                (DataType::Boolean, Arc::new(b.finish()))
            }
            LakeType::Timestamp => {
                let mut out = Vec::with_capacity(rows.len());
                for v in values {
                    let x = v.map(|v| match v {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => parse_rfc3339_ms(s),
                        _ => None,
                    });
                    miss(!matches!(x, Some(None)));
                    out.push(x.flatten());
                }
                (
                    timestamp_type(),
                    Arc::new(TimestampMillisecondArray::from(out).with_timezone("+00:00")),
                )
            }
        };
        fields.push(Field::new(&c.name, ty, true));
        arrays.push(array);
    }
    let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    Ok((with_metadata(b, events, has_offsets(events))?, rejected))
}

/// Milliseconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.250Z`,
/// `…+02:00`).
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let padded: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = padded.parse::<i64>().ok()?;
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600
                + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1000 + ms)
}

fn raw_batch(events: &[Event]) -> anyhow::Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, false),
        Field::new("headers", DataType::Utf8, true),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("topic", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
    ]));
    let bodies: Vec<bytes::Bytes> = events.iter().map(Event::body).collect();
    let headers: Vec<Option<String>> = events
        .iter()
        .map(|e| {
            (!e.headers.is_empty()).then(|| {
                let m: serde_json::Map<String, Value> = e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into()))
                    .collect();
                Value::Object(m).to_string()
            })
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter(
            events.iter().map(|e| e.key.as_deref()),
        )),
        Arc::new(BinaryArray::from_iter_values(bodies.iter().map(|b| &b[..]))),
        Arc::new(StringArray::from(headers)),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(events.iter().map(|e| e.timestamp_ms))
                .with_timezone("+00:00"),
        ),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.meta.topic.as_deref()),
        )),
        Arc::new(Int32Array::from_iter(
            events.iter().map(|e| e.meta.partition),
        )),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.meta.offset))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    #[test]
    fn nearly_unique_columns_are_written_without_a_dictionary() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let events: Vec<Event> = (0..300)
            .map(|i| {
                // Long text with a repeat every 20 values (5%), short text and numbers that
                // repeat every 50 values, and unique numbers.
                let text = format!("{} {}", i % 20 * 1000 + i, "lorem ipsum dolor ".repeat(5));
                let text = if i % 20 == 19 {
                    "same".repeat(20)
                } else {
                    text
                };
                let level = ["info", "warn"][i % 2];
                Event::raw(
                    json!({"text": text, "level": level, "id": i, "latency": i as f64 / 7.0,
                           "user": format!("user-{}", i % 50), "code": i % 50})
                    .to_string(),
                )
            })
            .collect();
        let enc = Encoding {
            mode: LakeMode::Json,
            schema: Vec::new(),
        };
        let bytes = bytes::Bytes::from(encode(&events, &enc).unwrap().bytes);
        let file = SerializedFileReader::new(bytes).unwrap();
        let rg = file.metadata().row_group(0);
        let dictionary = |name: &str| {
            (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap()
                .dictionary_page_offset()
                .is_some()
        };
        for unique in ["text", "id", "latency"] {
            assert!(!dictionary(unique), "{unique} kept a dictionary");
        }
        for repeating in ["level", "user", "code"] {
            assert!(dictionary(repeating), "{repeating} lost its dictionary");
        }
    }

    fn read(e: Encoded) -> RecordBatch {
        let r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(e.bytes))
            .unwrap()
            .with_batch_size(1 << 20)
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = r.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        batches[0].clone()
    }

    fn inferred() -> Encoding {
        Encoding {
            mode: LakeMode::Json,
            schema: Vec::new(),
        }
    }

    fn from_kafka(body: &str, offset: i64) -> Event {
        let mut e = Event::raw(body.to_string());
        e.meta.partition = Some(0);
        e.meta.offset = Some(offset);
        e
    }

    fn column_json(b: &RecordBatch, name: &str) -> Vec<Value> {
        let e = trib_pipelines::arrow::from_record_batch(b).unwrap();
        e.iter()
            .map(|e| e.fields.get(name).cloned().unwrap_or(Value::Null))
            .collect()
    }

    #[test]
    fn json_rows_become_columns_with_metadata() {
        let mut events = Vec::new();
        for i in 0..10i64 {
            let mut e = Event::from_fields(
                json!({"id": i, "path": format!("/p/{i}")})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            e.meta.partition = Some(0);
            e.meta.offset = Some(100 + i);
            events.push(e);
        }
        let b = read(encode(&events, &inferred()).unwrap());
        assert_eq!(b.num_rows(), 10);
        for c in ["id", "path", "_timestamp", "_partition", "_offset"] {
            assert!(b.schema().field_with_name(c).is_ok(), "column {c}");
        }
        assert_eq!(column_json(&b, "_offset")[3], json!(103));
    }

    #[test]
    fn raw_json_bodies_are_decoded_and_late_new_fields_are_kept() {
        // Rows over several encode chunks: the sample sees every 2nd or 9th row; the field only
        // the last row has (in a later chunk than the first) must survive.
        for n in [3000, 4 * ENCODE_CHUNK as i64 + 17] {
            let mut events: Vec<Event> = (0..n)
                .map(|i| from_kafka(&format!(r#"{{"id":{i},"ok":true}}"#), i))
                .collect();
            events.push(from_kafka(
                &format!(r#"{{"id":{n},"ok":false,"late":"x"}}"#),
                n,
            ));
            let b = read(encode(&events, &inferred()).unwrap());
            assert_eq!(b.num_rows() as i64, n + 1);
            assert_eq!(column_json(&b, "late")[n as usize], json!("x"));
            let ids = column_json(&b, "id");
            let offsets = column_json(&b, "_offset");
            for i in 0..=n as usize {
                assert_eq!((&ids[i], &offsets[i]), (&json!(i), &json!(i)), "row {i}");
            }
        }
    }

    #[test]
    fn a_kept_decoder_decodes_the_next_file_of_its_schema_exactly() {
        // Fields no other test uses, so the kept decoder is this test's.
        let file = |from: i64| -> Vec<Event> {
            (from..from + ENCODE_CHUNK as i64 + 100)
                .map(|i| from_kafka(&format!(r#"{{"kept_id":{i},"kept_tag":"t{i}"}}"#), i))
                .collect()
        };
        let kept = || {
            IDLE_DECODERS
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| s.field_with_name("kept_tag").is_ok())
                .count()
        };
        let first = read(encode(&file(0), &inferred()).unwrap());
        assert_eq!(kept(), 1, "the first file's decoder is kept");
        let second = read(encode(&file(50_000), &inferred()).unwrap());
        assert_eq!(
            kept(),
            1,
            "the second file took the kept decoder and gave it back"
        );
        for (b, from) in [(first, 0), (second, 50_000)] {
            let ids = column_json(&b, "kept_id");
            let tags = column_json(&b, "kept_tag");
            assert_eq!(ids.len(), ENCODE_CHUNK + 100);
            for (i, (id, tag)) in ids.iter().zip(&tags).enumerate() {
                let want = from + i as i64;
                assert_eq!((id, tag), (&json!(want), &json!(format!("t{want}"))));
            }
        }
    }

    #[test]
    fn numbers_the_sample_did_not_show_are_kept_exactly() {
        // Every row but the last has whole numbers, so the sample types the fields as
        // integers; the last row (not sampled, in a later chunk for the larger file) has a
        // fraction, at the top, in an object or in a list, or an integer a float cannot hold.
        let last = [
            (r#""n":7.5,"o":{"m":2},"l":[1,2]"#, "n", json!(7.5)),
            (r#""n":7,"o":{"m":2.25},"l":[1,2]"#, "o", json!({"m": 2.25})),
            (r#""n":7,"o":{"m":2},"l":[1,2.5]"#, "l", json!([1.0, 2.5])),
            (
                r#""n":9007199254740993,"o":{"m":2},"l":[1,2]"#,
                "n",
                json!(9007199254740993i64),
            ),
        ];
        for n in [3000, 2 * ENCODE_CHUNK as i64 + 5] {
            for (body, name, want) in &last {
                let mut events: Vec<Event> = (0..n - 1)
                    .map(|i| {
                        from_kafka(&format!(r#"{{"id":{i},"n":7,"o":{{"m":2}},"l":[1,2]}}"#), i)
                    })
                    .collect();
                events.push(from_kafka(&format!(r#"{{"id":{},{body}}}"#, n - 1), n - 1));
                let b = read(encode(&events, &inferred()).unwrap());
                assert_eq!(b.num_rows() as i64, n);
                let got = column_json(&b, name);
                let same = |a: &Value, b: &Value| match (a, b) {
                    (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                        x.as_f64() == y.as_f64()
                    }
                    _ => a == b,
                };
                let same_deep = |a: &Value, b: &Value| match (a, b) {
                    (Value::Object(x), Value::Object(y)) => {
                        x.len() == y.len()
                            && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
                    }
                    (Value::Array(x), Value::Array(y)) => {
                        x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
                    }
                    _ => same(a, b),
                };
                assert!(
                    same_deep(&got[n as usize - 1], want),
                    "{body}: {:?}",
                    got[n as usize - 1]
                );
                let first = match *name {
                    "n" => json!(7),
                    "o" => json!({"m": 2}),
                    _ => json!([1, 2]),
                };
                assert!(same_deep(&got[0], &first), "{body}: row 0 {:?}", got[0]);
                let ids = column_json(&b, "id");
                assert!(
                    ids.iter().enumerate().all(|(i, v)| *v == json!(i)),
                    "{body}: ids"
                );
            }
        }
        // Whole numbers only: the integer fields stay integers.
        let events: Vec<Event> = (0..3000i64)
            .map(|i| from_kafka(&format!(r#"{{"id":{i},"o":{{"m":{i}}}}}"#), i))
            .collect();
        let b = read(encode(&events, &inferred()).unwrap());
        let schema = b.schema();
        assert_eq!(
            schema.field_with_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            schema.field_with_name("o").unwrap().data_type(),
            &DataType::Struct(vec![Field::new("m", DataType::Int64, true)].into())
        );
    }

    #[test]
    fn long_text_with_nulls_over_many_pages_reads_back_exactly() {
        // About 6 MiB of unique text, every 7th row without it: several compressed data pages
        // of a nullable column (levels and values gathered per page), each page's buffer
        // starting at the previous page's size.
        let text = |i: i64| format!("{i:06} {}", "lorem ipsum dolor sit amet ".repeat(75));
        let events: Vec<Event> = (0..3000i64)
            .map(|i| match i % 7 {
                0 => from_kafka(&format!(r#"{{"id":{i}}}"#), i),
                _ => from_kafka(&format!(r#"{{"id":{i},"text":"{}"}}"#, text(i)), i),
            })
            .collect();
        let e = encode(&events, &inferred()).unwrap();
        let meta =
            parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(e.bytes.clone()))
                .unwrap();
        let chunk = parquet::file::reader::FileReader::metadata(&meta).row_group(0);
        let text_chunk = (0..chunk.num_columns())
            .map(|i| chunk.column(i))
            .find(|c| c.column_path().string() == "text")
            .unwrap();
        assert!(
            text_chunk.uncompressed_size() > 4 << 20,
            "the text should span several 1 MiB pages"
        );
        let b = read(e);
        let got = column_json(&b, "text");
        for (i, v) in got.iter().enumerate() {
            let want = match i % 7 {
                0 => Value::Null,
                _ => json!(text(i as i64)),
            };
            assert_eq!(v, &want, "row {i}");
        }
    }

    #[test]
    fn raw_json_bodies_over_several_chunks_are_one_file_in_order() {
        let n = 2 * ENCODE_CHUNK + 5;
        let events: Vec<Event> = (0..n as i64)
            .map(|i| from_kafka(&format!(r#"{{"id":{i},"s":"v{i}"}}"#), 1000 + i))
            .collect();
        let b = read(encode(&events, &inferred()).unwrap());
        assert_eq!(b.num_rows(), n);
        assert_eq!(column_json(&b, "s")[n - 1], json!(format!("v{}", n - 1)));
        assert_eq!(
            column_json(&b, "_offset")[ENCODE_CHUNK],
            json!(1000 + ENCODE_CHUNK)
        );
    }

    #[test]
    fn non_json_bodies_become_messages() {
        let events = vec![from_kafka(r#"{"a":1}"#, 0), from_kafka("plain text", 1)];
        let b = read(encode(&events, &inferred()).unwrap());
        assert_eq!(column_json(&b, "message")[1], json!("plain text"));
        assert_eq!(column_json(&b, "a")[0], json!(1));
    }

    #[test]
    fn conflicting_types_become_json_text() {
        let events = vec![
            from_kafka(r#"{"v": 1, "n": "a"}"#, 0),
            from_kafka(r#"{"v": {"nested": true}, "n": "b"}"#, 1),
        ];
        let b = read(encode(&events, &inferred()).unwrap());
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            column_json(&b, "v"),
            [json!("1"), json!(r#"{"nested":true}"#)]
        );
        assert_eq!(column_json(&b, "n"), [json!("a"), json!("b")]);
    }

    #[test]
    fn declared_columns_are_typed_and_misfits_counted() {
        let enc = Encoding {
            mode: LakeMode::Json,
            schema: vec![
                LakeColumn {
                    name: "id".into(),
                    ty: LakeType::Int64,
                },
                LakeColumn {
                    name: "at".into(),
                    ty: LakeType::Timestamp,
                },
                LakeColumn {
                    name: "tags".into(),
                    ty: LakeType::Json,
                },
            ],
        };
        let events = vec![
            from_kafka(
                r#"{"id": 1, "at": "2024-05-01T12:00:00.250Z", "tags": [1], "x": 1}"#,
                0,
            ),
            from_kafka(r#"{"id": "two", "at": 1714564800000}"#, 1),
        ];
        let e = encode(&events, &enc).unwrap();
        assert_eq!(e.rejected, 1, "\"two\" is not an int64");
        let b = read(e);
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", "at", "tags", "_timestamp", "_partition", "_offset"]
        );
        assert_eq!(column_json(&b, "id"), [json!(1), Value::Null]);
        assert_eq!(column_json(&b, "tags"), [json!("[1]"), Value::Null]);
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00.250Z"),
            Some(1_714_564_800_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:00+02:00"),
            Some(1_714_564_800_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
