//! Events to the bytes of one Parquet file: zstd, page statistics and page indexes, row groups
//! of 128 Ki rows. In `json` mode the columns are the events' fields (schema inferred from the
//! file's rows, so new fields simply appear in later files) plus `_timestamp`, `_partition` and
//! `_offset`; rows that do not fit one schema make the whole file fall back to `raw` mode,
//! logged, never an error. `raw` mode has fixed columns for any data.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::Value;
use trib_pipelines::config::sinks::LakeMode;
use trib_pipelines::event::Event;

/// The Parquet bytes of `events`.
pub fn encode(events: &[Event], mode: LakeMode) -> anyhow::Result<Vec<u8>> {
    let batch = match mode {
        LakeMode::Raw => raw_batch(events)?,
        LakeMode::Json => match json_batch(events) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, rows = events.len(), "lake: rows do not fit one schema; this file is written in raw mode");
                raw_batch(events)?
            }
        },
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    w.write(&batch)?;
    Ok(w.into_inner()?)
}

fn json_batch(events: &[Event]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut row = match e.to_json() {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            row.insert("_timestamp".into(), e.timestamp_ms.into());
            if let Some(p) = e.meta.partition {
                row.insert("_partition".into(), p.into());
            }
            if let Some(o) = e.meta.offset {
                row.insert("_offset".into(), o.into());
            }
            Value::Object(row)
        })
        .collect();
    let schema = Arc::new(trib_pipelines::arrow::infer_rows_schema(&rows)?);
    trib_pipelines::arrow::rows_to_record_batch(&rows, schema)
}

fn raw_batch(events: &[Event]) -> anyhow::Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, false),
        Field::new("headers", DataType::Utf8, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
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
                .with_timezone("UTC"),
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

    fn read(bytes: Vec<u8>) -> RecordBatch {
        let r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = r.map(Result::unwrap).collect();
        arrow_select_concat(&batches)
    }

    fn arrow_select_concat(b: &[RecordBatch]) -> RecordBatch {
        assert_eq!(b.len(), 1);
        b[0].clone()
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
        let b = read(encode(&events, LakeMode::Json).unwrap());
        assert_eq!(b.num_rows(), 10);
        for c in ["id", "path", "_timestamp", "_partition", "_offset"] {
            assert!(b.schema().field_with_name(c).is_ok(), "column {c}");
        }
    }

    #[test]
    fn conflicting_types_fall_back_to_raw() {
        let a = Event::from_fields(json!({"v": 1}).as_object().unwrap().clone());
        let b = Event::from_fields(json!({"v": {"nested": true}}).as_object().unwrap().clone());
        let batch = read(encode(&[a, b], LakeMode::Json).unwrap());
        assert_eq!(batch.num_rows(), 2);
        assert!(
            batch.schema().field_with_name("value").is_ok(),
            "raw columns"
        );
    }
}
