//! Protobuf payloads of a flat message type (scalar fields only, e.g.
//! `langtian.battery.v1.ChannelSample`) straight into Arrow columns, without a JSON detour.
//! Column names are the proto field names; enums become their value names (as in the proto JSON
//! mapping); a proto3 `optional` field that is absent is NULL.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, StructArray, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// Whether every field of `d` is a singular scalar (so [`decode_flat`] applies).
pub(crate) fn is_flat(d: &MessageDescriptor) -> bool {
    d.fields()
        .all(|f| !f.is_list() && !f.is_map() && !matches!(f.kind(), Kind::Message(_)))
}

enum Col {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
}

impl Col {
    fn new(kind: &Kind) -> Self {
        match kind {
            Kind::Bool => Col::Bool(BooleanBuilder::new()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Col::I32(Int32Builder::new()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Col::I64(Int64Builder::new()),
            Kind::Uint32 | Kind::Fixed32 => Col::U32(UInt32Builder::new()),
            Kind::Uint64 | Kind::Fixed64 => Col::U64(UInt64Builder::new()),
            Kind::Double | Kind::Float => Col::F64(Float64Builder::new()),
            Kind::Bytes => Col::Bin(BinaryBuilder::new()),
            Kind::String | Kind::Enum(_) | Kind::Message(_) => Col::Str(StringBuilder::new()),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Col::Bool(_) => DataType::Boolean,
            Col::I32(_) => DataType::Int32,
            Col::I64(_) => DataType::Int64,
            Col::U32(_) => DataType::UInt32,
            Col::U64(_) => DataType::UInt64,
            Col::F64(_) => DataType::Float64,
            Col::Str(_) => DataType::Utf8,
            Col::Bin(_) => DataType::Binary,
        }
    }

    fn push(&mut self, f: &FieldDescriptor, v: Option<&Value>) {
        match (self, v) {
            (Col::Bool(b), Some(Value::Bool(x))) => b.append_value(*x),
            (Col::I32(b), Some(Value::I32(x))) => b.append_value(*x),
            (Col::I64(b), Some(Value::I64(x))) => b.append_value(*x),
            (Col::U32(b), Some(Value::U32(x))) => b.append_value(*x),
            (Col::U64(b), Some(Value::U64(x))) => b.append_value(*x),
            (Col::F64(b), Some(Value::F64(x))) => b.append_value(*x),
            (Col::F64(b), Some(Value::F32(x))) => b.append_value(f64::from(*x)),
            (Col::Str(b), Some(Value::String(x))) => b.append_value(x),
            (Col::Bin(b), Some(Value::Bytes(x))) => b.append_value(x),
            (Col::Str(b), Some(Value::EnumNumber(n))) => match f.kind() {
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(ev) => b.append_value(ev.name()),
                    None => b.append_value(n.to_string()),
                },
                _ => b.append_null(),
            },
            (c, _) => c.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::U32(b) => b.append_null(),
            Col::U64(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Str(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::I32(mut b) => Arc::new(b.finish()),
            Col::I64(mut b) => Arc::new(b.finish()),
            Col::U32(mut b) => Arc::new(b.finish()),
            Col::U64(mut b) => Arc::new(b.finish()),
            Col::F64(mut b) => Arc::new(b.finish()),
            Col::Str(mut b) => Arc::new(b.finish()),
            Col::Bin(mut b) => ArrayBuilder::finish(&mut b),
        }
    }
}

fn decode_msg(d: &MessageDescriptor, p: &[u8]) -> Result<DynamicMessage, String> {
    if p.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let mut de = serde_json::Deserializer::from_slice(p);
        DynamicMessage::deserialize(d.clone(), &mut de)
            .map_err(|e| format!("not a {} in JSON form: {e}", d.full_name()))
    } else {
        DynamicMessage::decode(d.clone(), p).map_err(|e| format!("not a {}: {e}", d.full_name()))
    }
}

/// A decoded batch (none if every payload was rejected) and the rejected `(index, why)`.
pub(crate) type Decoded = (Option<RecordBatch>, Vec<(usize, String)>);

/// Decodes `payloads` into one RecordBatch (plus a `nats` struct column from `meta` when given);
/// undecodable payloads are returned as `(index, why)`.
pub(crate) fn decode_flat<P: AsRef<[u8]>>(
    d: &MessageDescriptor,
    payloads: &[P],
    meta: Option<&[serde_json::Value]>,
) -> Result<Decoded, String> {
    let fields: Vec<FieldDescriptor> = d.fields().collect();
    let mut cols: Vec<Col> = fields.iter().map(|f| Col::new(&f.kind())).collect();
    let mut rejected = Vec::new();
    let mut metas = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        match decode_msg(d, p.as_ref()) {
            Ok(m) => {
                for (f, c) in fields.iter().zip(cols.iter_mut()) {
                    if f.supports_presence() && !m.has_field(f) {
                        c.append_null();
                    } else {
                        c.push(f, Some(m.get_field(f).as_ref()));
                    }
                }
                if let Some(v) = meta.and_then(|m| m.get(i)) {
                    metas.push(v.clone());
                }
            }
            Err(e) => rejected.push((i, e)),
        }
    }
    let rows = payloads.len() - rejected.len();
    if rows == 0 {
        return Ok((None, rejected));
    }
    let mut schema_fields: Vec<Field> = fields
        .iter()
        .zip(cols.iter())
        .map(|(f, c)| Field::new(f.name(), c.data_type(), true))
        .collect();
    let mut arrays: Vec<ArrayRef> = cols.into_iter().map(Col::finish).collect();
    if meta.is_some()
        && metas.len() == rows
        && let Some(mb) = super::handler::to_record_batch(&metas)?
    {
        let s = StructArray::from(mb);
        schema_fields.push(Field::new("nats", s.data_type().clone(), true));
        arrays.push(Arc::new(s));
    }
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), arrays).map_err(|e| e.to_string())?;
    Ok((Some(batch), rejected))
}
