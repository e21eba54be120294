//! One schema over files whose columns differ (schema evolution): the union of their columns,
//! in the order first seen; a column missing from some files is nullable, and a column whose
//! type differs between files becomes text (`Utf8`). Compaction writes merged files in it and
//! SQL reads a table in it.

use std::sync::Arc;

use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

/// The union of `schemas`.
pub fn merge(schemas: &[SchemaRef]) -> Schema {
    let mut fields: Vec<Field> = Vec::new();
    for (i, s) in schemas.iter().enumerate() {
        for f in s.fields() {
            match fields.iter_mut().find(|m| m.name() == f.name()) {
                Some(m) => {
                    if m.data_type() != f.data_type() {
                        *m = Field::new(m.name(), DataType::Utf8, true);
                    } else if f.is_nullable() {
                        m.set_nullable(true);
                    }
                }
                // A column the earlier files lack is null there.
                None => fields.push(f.as_ref().clone().with_nullable(i > 0 || f.is_nullable())),
            }
        }
    }
    // A column missing from a later file is null there.
    for m in &mut fields {
        if schemas.iter().any(|s| s.field_with_name(m.name()).is_err()) {
            m.set_nullable(true);
        }
    }
    Schema::new(fields)
}

/// `batch` in `schema`: columns it lacks are null, columns of another type are cast.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow_cast::cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};

    #[test]
    fn new_columns_are_added_and_conflicts_become_text() {
        let a = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let b = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, false),
            Field::new("new", DataType::Utf8, false),
        ]));
        let m = Arc::new(merge(&[a.clone(), b]));
        assert_eq!(
            m.fields()
                .iter()
                .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
                .collect::<Vec<_>>(),
            [
                ("id", DataType::Int64, false),
                ("v", DataType::Utf8, true),
                ("new", DataType::Utf8, true)
            ]
        );
        let batch = RecordBatch::try_new(
            a,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Int64Array::from(vec![7, 8])),
            ],
        )
        .unwrap();
        let c = conform(&batch, &m).unwrap();
        let v = c.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(v.value(1), "8");
        assert_eq!(c.column(2).null_count(), 2);
    }
}
