//! Protobuf payloads of a flat message type (scalar fields only, e.g.
//! `langtian.battery.v1.ChannelSample`) straight into Arrow columns, without a JSON detour.
//! Column names are the proto field names; enums become their value names (as in the proto JSON
//! mapping); a proto3 `optional` field that is absent is NULL.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, UInt32Builder, UInt64Builder,
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
    fn with_capacity(kind: &Kind, n: usize) -> Self {
        match kind {
            Kind::Bool => Col::Bool(BooleanBuilder::with_capacity(n)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Col::I32(Int32Builder::with_capacity(n)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Col::I64(Int64Builder::with_capacity(n)),
            Kind::Uint32 | Kind::Fixed32 => Col::U32(UInt32Builder::with_capacity(n)),
            Kind::Uint64 | Kind::Fixed64 => Col::U64(UInt64Builder::with_capacity(n)),
            Kind::Double | Kind::Float => Col::F64(Float64Builder::with_capacity(n)),
            Kind::Bytes => Col::Bin(BinaryBuilder::with_capacity(n, n * 16)),
            Kind::String | Kind::Enum(_) | Kind::Message(_) => {
                Col::Str(StringBuilder::with_capacity(n, n * 16))
            }
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

/// A field value as read off the wire.
#[derive(Clone, Copy)]
enum Wire {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(usize, usize),
}

fn read_varint(p: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *p.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take<const N: usize>(p: &[u8], pos: &mut usize) -> Result<[u8; N], String> {
    let end = pos.checked_add(N).ok_or("overflow")?;
    let s = p.get(*pos..end).ok_or("truncated fixed-width field")?;
    *pos = end;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

/// Reads one binary message of a flat type into `vals` (indexed like the descriptor's fields).
fn parse_wire(p: &[u8], slot_of: &[Option<usize>], vals: &mut [Option<Wire>]) -> Result<(), String> {
    vals.iter_mut().for_each(|v| *v = None);
    let mut pos = 0usize;
    while pos < p.len() {
        let key = read_varint(p, &mut pos)?;
        let (number, wt) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err("field number 0".into());
        }
        let v = match wt {
            0 => Wire::Varint(read_varint(p, &mut pos)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take::<8>(p, &mut pos)?)),
            5 => Wire::Fixed32(u32::from_le_bytes(take::<4>(p, &mut pos)?)),
            2 => {
                let len = usize::try_from(read_varint(p, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= p.len())
                    .ok_or("truncated length-delimited field")?;
                let v = Wire::Len(pos, end);
                pos = end;
                v
            }
            other => return Err(format!("unsupported wire type {other} (field {number})")),
        };
        if let Some(Some(slot)) = usize::try_from(number).ok().and_then(|n| slot_of.get(n)) {
            vals[*slot] = Some(v); // the last occurrence wins, as in protobuf
        }
    }
    Ok(())
}

/// What a field is, worked out once per batch (descriptor lookups are too slow per row).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Double,
    Float,
    Str,
    Bytes,
    Enum,
}

struct Plan {
    ty: Ty,
    presence: bool,
    name: String,
    /// Enum value names by number (sorted), and the name of value 0.
    enum_names: Vec<(i32, String)>,
    enum_zero: String,
}

impl Plan {
    fn of(f: &FieldDescriptor) -> Self {
        let (ty, enum_names) = match f.kind() {
            Kind::Bool => (Ty::Bool, Vec::new()),
            Kind::Int32 => (Ty::Int32, Vec::new()),
            Kind::Sint32 => (Ty::Sint32, Vec::new()),
            Kind::Sfixed32 => (Ty::Sfixed32, Vec::new()),
            Kind::Int64 => (Ty::Int64, Vec::new()),
            Kind::Sint64 => (Ty::Sint64, Vec::new()),
            Kind::Sfixed64 => (Ty::Sfixed64, Vec::new()),
            Kind::Uint32 => (Ty::Uint32, Vec::new()),
            Kind::Fixed32 => (Ty::Fixed32, Vec::new()),
            Kind::Uint64 => (Ty::Uint64, Vec::new()),
            Kind::Fixed64 => (Ty::Fixed64, Vec::new()),
            Kind::Double => (Ty::Double, Vec::new()),
            Kind::Float => (Ty::Float, Vec::new()),
            Kind::String | Kind::Message(_) => (Ty::Str, Vec::new()),
            Kind::Bytes => (Ty::Bytes, Vec::new()),
            Kind::Enum(e) => {
                let mut v: Vec<(i32, String)> =
                    e.values().map(|v| (v.number(), v.name().to_owned())).collect();
                v.sort_by_key(|(n, _)| *n);
                (Ty::Enum, v)
            }
        };
        let enum_zero = enum_names
            .iter()
            .find(|(n, _)| *n == 0)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| "0".into());
        Self {
            ty,
            presence: f.supports_presence(),
            name: f.name().to_owned(),
            enum_names,
            enum_zero,
        }
    }

    fn wire_fits(&self, v: &Wire) -> bool {
        use Ty::*;
        matches!(
            (self.ty, v),
            (
                Bool | Int32 | Sint32 | Int64 | Sint64 | Uint32 | Uint64 | Enum,
                Wire::Varint(_)
            ) | (Sfixed64 | Fixed64 | Double, Wire::Fixed64(_))
                | (Sfixed32 | Fixed32 | Float, Wire::Fixed32(_))
                | (Str | Bytes, Wire::Len(..))
        )
    }

    fn enum_name(&self, n: i32) -> Option<&str> {
        self.enum_names
            .binary_search_by_key(&n, |(k, _)| *k)
            .ok()
            .map(|i| self.enum_names[i].1.as_str())
    }
}

impl Col {
    /// Appends a checked wire value (or the proto3 default / NULL when absent).
    fn push_wire(&mut self, f: &Plan, p: &[u8], v: Option<Wire>) {
        let zz32 = |x: u64| ((x as u32 >> 1) as i32) ^ -((x as u32 & 1) as i32);
        let zz64 = |x: u64| ((x >> 1) as i64) ^ -((x & 1) as i64);
        let Some(v) = v else {
            if f.presence {
                self.append_null();
                return;
            }
            match self {
                Col::Bool(b) => b.append_value(false),
                Col::I32(b) => b.append_value(0),
                Col::I64(b) => b.append_value(0),
                Col::U32(b) => b.append_value(0),
                Col::U64(b) => b.append_value(0),
                Col::F64(b) => b.append_value(0.0),
                Col::Str(b) if f.ty == Ty::Enum => b.append_value(&f.enum_zero),
                Col::Str(b) => b.append_value(""),
                Col::Bin(b) => b.append_value(b""),
            }
            return;
        };
        match (self, f.ty, v) {
            (Col::Bool(b), _, Wire::Varint(x)) => b.append_value(x != 0),
            (Col::I32(b), Ty::Int32, Wire::Varint(x)) => b.append_value(x as i32),
            (Col::I32(b), Ty::Sint32, Wire::Varint(x)) => b.append_value(zz32(x)),
            (Col::I32(b), Ty::Sfixed32, Wire::Fixed32(x)) => b.append_value(x as i32),
            (Col::I64(b), Ty::Int64, Wire::Varint(x)) => b.append_value(x as i64),
            (Col::I64(b), Ty::Sint64, Wire::Varint(x)) => b.append_value(zz64(x)),
            (Col::I64(b), Ty::Sfixed64, Wire::Fixed64(x)) => b.append_value(x as i64),
            (Col::U32(b), Ty::Uint32, Wire::Varint(x)) => b.append_value(x as u32),
            (Col::U32(b), Ty::Fixed32, Wire::Fixed32(x)) => b.append_value(x),
            (Col::U64(b), Ty::Uint64, Wire::Varint(x)) => b.append_value(x),
            (Col::U64(b), Ty::Fixed64, Wire::Fixed64(x)) => b.append_value(x),
            (Col::F64(b), Ty::Double, Wire::Fixed64(x)) => b.append_value(f64::from_bits(x)),
            (Col::F64(b), Ty::Float, Wire::Fixed32(x)) => b.append_value(f64::from(f32::from_bits(x))),
            (Col::Str(b), Ty::Str, Wire::Len(s, e)) => match std::str::from_utf8(&p[s..e]) {
                Ok(t) => b.append_value(t),
                Err(_) => b.append_null(), // unreachable: checked before
            },
            (Col::Str(b), Ty::Enum, Wire::Varint(x)) => match f.enum_name(x as i32) {
                Some(n) => b.append_value(n),
                None => b.append_value((x as i32).to_string()),
            },
            (Col::Bin(b), _, Wire::Len(s, e)) => b.append_value(&p[s..e]),
            (c, _, _) => c.append_null(), // unreachable: checked before
        }
    }
}

/// Decodes `payloads` into one RecordBatch; undecodable payloads are returned as `(index, why)`.
/// Binary payloads are read straight off the wire into the column builders; payloads in the
/// protobuf JSON form go through `prost-reflect`.
///
/// `mask[i]` (when given) selects which fields of the descriptor become columns; the others are
/// skipped on the wire like unknown fields.
pub(crate) fn decode_flat<P: AsRef<[u8]>>(
    d: &MessageDescriptor,
    payloads: &[P],
    mask: Option<&[bool]>,
) -> Result<Decoded, String> {
    let all: Vec<FieldDescriptor> = d.fields().collect();
    let wanted = |i: usize| mask.is_none_or(|m| m.get(i).copied().unwrap_or(true));
    // Selected fields keep their descriptor index for the wire lookup.
    let fields: Vec<FieldDescriptor> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| wanted(*i))
        .map(|(_, f)| f.clone())
        .collect();
    let mut cols: Vec<Col> = fields
        .iter()
        .map(|f| Col::with_capacity(&f.kind(), payloads.len()))
        .collect();
    let max_no = fields.iter().map(|f| f.number() as usize).max().unwrap_or(0);
    // Field numbers index a table; a message with huge field numbers takes the generic path.
    let wire_ok = max_no <= 65_536;
    let mut slot_of: Vec<Option<usize>> = vec![None; if wire_ok { max_no + 1 } else { 0 }];
    for (i, f) in fields.iter().enumerate() {
        if let Some(s) = slot_of.get_mut(f.number() as usize) {
            *s = Some(i);
        }
    }
    let plans: Vec<Plan> = fields.iter().map(Plan::of).collect();
    let mut vals: Vec<Option<Wire>> = vec![None; fields.len()];
    let mut rejected = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let p = p.as_ref();
        if !wire_ok || p.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            match decode_msg(d, p) {
                Ok(m) => {
                    for (f, c) in fields.iter().zip(cols.iter_mut()) {
                        if f.supports_presence() && !m.has_field(f) {
                            c.append_null();
                        } else {
                            c.push(f, Some(m.get_field(f).as_ref()));
                        }
                    }
                }
                Err(e) => rejected.push((i, e)),
            }
            continue;
        }
        // Check every field before appending any, so a bad message leaves no partial row.
        let check = parse_wire(p, &slot_of, &mut vals).and_then(|()| {
            for (f, v) in plans.iter().zip(vals.iter()) {
                let Some(v) = v else { continue };
                if !f.wire_fits(v) {
                    return Err(format!("field `{}` has the wrong wire type", f.name));
                }
                if let (Ty::Str, Wire::Len(s, e)) = (f.ty, v)
                    && std::str::from_utf8(&p[*s..*e]).is_err()
                {
                    return Err(format!("field `{}` is not UTF-8", f.name));
                }
            }
            Ok(())
        });
        match check {
            Ok(()) => {
                for ((f, c), v) in plans.iter().zip(cols.iter_mut()).zip(vals.iter()) {
                    c.push_wire(f, p, *v);
                }
            }
            Err(e) => rejected.push((i, format!("not a {}: {e}", d.full_name()))),
        }
    }
    let rows = payloads.len() - rejected.len();
    if rows == 0 {
        return Ok((None, rejected));
    }
    let schema_fields: Vec<Field> = fields
        .iter()
        .zip(cols.iter())
        .map(|(f, c)| Field::new(f.name(), c.data_type(), true))
        .collect();
    let arrays: Vec<ArrayRef> = cols.into_iter().map(Col::finish).collect();
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), arrays).map_err(|e| e.to_string())?;
    Ok((Some(batch), rejected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray, UInt64Array};
    use prost::Message as _;

    fn descriptor() -> MessageDescriptor {
        prost_reflect::DescriptorPool::decode(crate::proto::DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("langtian.battery.v1.ChannelSample")
            .unwrap()
    }

    #[test]
    fn wire_decoding_matches_the_generated_types_and_rejects_bad_messages() {
        let d = descriptor();
        assert!(is_flat(&d));
        let mut sim = crate::sim::BatterySim::new(2, 3, 9);
        let samples = sim.step(1_000_000_000);
        let mut payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
        payloads.push(vec![0x0a, 0x05, b'a']); // string field cut short
        payloads.push(vec![0x31, 1, 2, 3, 4, 5, 6, 7, 8]); // field 6 (voltage, double) as fixed64: fine
        payloads.push(vec![0x30, 0x01]); // field 6 (double) as a varint: wrong wire type
        let (batch, rejected) = decode_flat(&d, &payloads, None).unwrap();
        let batch = batch.unwrap();
        assert_eq!(batch.num_rows(), samples.len() + 1);
        let bad: Vec<usize> = rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![samples.len(), samples.len() + 2]);
        assert!(rejected[0].1.contains("truncated"), "{:?}", rejected[0]);
        assert!(rejected[1].1.contains("wrong wire type"), "{:?}", rejected[1]);
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let dev = col("device_id");
        let dev = dev.as_any().downcast_ref::<StringArray>().unwrap();
        let volt = col("voltage");
        let volt = volt.as_any().downcast_ref::<Float64Array>().unwrap();
        let seq = col("seq");
        let seq = seq.as_any().downcast_ref::<UInt64Array>().unwrap();
        let step = col("step_type");
        let step = step.as_any().downcast_ref::<StringArray>().unwrap();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(dev.value(i), s.device_id);
            assert_eq!(volt.value(i), s.voltage);
            assert_eq!(seq.value(i), s.seq);
            let name = d
                .get_field_by_name("step_type")
                .and_then(|f| match f.kind() {
                    Kind::Enum(e) => e.get_value(s.step_type).map(|v| v.name().to_owned()),
                    _ => None,
                })
                .unwrap();
            assert_eq!(step.value(i), name);
        }
        // The message with only a voltage: other fields take their proto3 defaults.
        let last = samples.len();
        assert_eq!(dev.value(last), "");
        assert_eq!(
            volt.value(last),
            f64::from_bits(u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]))
        );
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn a_mask_builds_only_the_selected_fields() {
        let d = prost_reflect::DescriptorPool::decode(crate::proto::DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("langtian.battery.v1.ChannelSample")
            .unwrap();
        let mut sim = crate::sim::BatterySim::new(1, 2, 1);
        let payloads: Vec<Vec<u8>> = sim
            .step(1_000_000_000)
            .iter()
            .map(|s| s.encode_to_vec())
            .collect();
        let mut mask = vec![false; d.fields().len()];
        mask[0] = true; // device_id
        mask[5] = true; // voltage
        let (b, rejected) = decode_flat(&d, &payloads, Some(&mask)).unwrap();
        let b = b.unwrap();
        assert!(rejected.is_empty());
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, vec!["device_id".to_owned(), "voltage".to_owned()]);
        assert_eq!(b.num_rows(), payloads.len());
    }
}
