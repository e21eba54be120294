//! Events to and from Arrow record batches, the one place where the two meet (the lake's
//! Parquet export and SQL read events this way). Each event becomes a row of its JSON object
//! (`Event::to_json`: the fields, or `{"message": raw}` for a raw event); the schema is
//! inferred from the events or given.

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use serde_json::Value;

use crate::event::Event;

/// The schema that fits every event (fields missing in some events are nullable).
pub fn infer_schema(events: &[Event]) -> Result<Schema, ArrowError> {
    arrow_json::reader::infer_json_schema_from_iterator(events.iter().map(|e| Ok(e.to_json())))
}

/// The schema that fits every row (JSON objects).
pub fn infer_rows_schema(rows: &[Value]) -> Result<Schema, ArrowError> {
    arrow_json::reader::infer_json_schema_from_iterator(rows.iter().map(|r| Ok(r.clone())))
}

/// One record batch of the events, in the given schema; a value that does not fit its column's
/// type is an error naming the column.
pub fn to_record_batch(events: &[Event], schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<Value> = events.iter().map(Event::to_json).collect();
    rows_to_record_batch(&rows, schema)
}

/// One record batch of JSON object rows, in the given schema.
pub fn rows_to_record_batch(rows: &[Value], schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// The rows of a record batch as structured events (null columns are left out).
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Event>, ArrowError> {
    let mut w = arrow_json::ArrayWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Value> =
        serde_json::from_slice(&bytes).map_err(|e| ArrowError::JsonError(e.to_string()))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match r {
            Value::Object(m) => Some(Event::from_fields(m)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn ev(v: Value) -> Event {
        match v {
            Value::Object(m) => Event::from_fields(m),
            _ => Event::raw(v.to_string()),
        }
    }

    #[test]
    fn events_round_trip_through_arrow() {
        let events = vec![
            ev(json!({"path": "/a", "status": 200, "ms": 1.5})),
            ev(json!({"path": "/b", "status": 503})),
            Event::raw("a raw line"),
        ];
        let schema = Arc::new(infer_schema(&events).unwrap());
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["path", "status", "ms", "message"]);
        let batch = to_record_batch(&events, schema).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let back: Vec<Value> = from_record_batch(&batch)
            .unwrap()
            .iter()
            .map(Event::to_json)
            .collect();
        assert_eq!(
            back,
            vec![
                json!({"path": "/a", "status": 200, "ms": 1.5}),
                json!({"path": "/b", "status": 503}),
                json!({"message": "a raw line"}),
            ]
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error() {
        let schema = Arc::new(infer_schema(&[ev(json!({"status": 200}))]).unwrap());
        let err = to_record_batch(&[ev(json!({"status": "oops"}))], schema).unwrap_err();
        assert!(
            err.to_string().contains("status") || err.to_string().contains("oops"),
            "{err}"
        );
    }
}
