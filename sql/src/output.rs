//! Query results out: a text table, CSV, JSON (one object per line) or Parquet.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::SqlError;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "parquet" => Ok(Self::Parquet),
            _ => Err(format!(
                "unknown format `{s}` (table, csv, json or parquet)"
            )),
        }
    }
}

/// Writes `batches` to `out` in `format`.
pub fn write(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), SqlError> {
    match format {
        Format::Table => {
            let t = arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{t}")?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                // A header even for no rows.
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(
                &mut buf,
                schema.clone(),
                Some(trib_lake::parquet_file::writer_properties()),
            )?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf)?;
        }
    }
    Ok(())
}

/// The rows as a JSON array of objects (the HTTP endpoint's answer).
/// The line printed after a table: how many rows, and how long the statement took (in
/// milliseconds, as psql does, so that short queries are timed to a tenth of one).
pub fn rows_note(batches: &[RecordBatch], elapsed: std::time::Duration) -> String {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    format!("{rows} row(s) in {:.1} ms", elapsed.as_secs_f64() * 1000.0)
}

pub fn json_array(batches: &[RecordBatch]) -> Result<Vec<u8>, SqlError> {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    let out = w.into_inner();
    Ok(if out.is_empty() { b"[]".to_vec() } else { out })
}

/// The rows as an Arrow IPC stream.
pub fn arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, SqlError> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}
