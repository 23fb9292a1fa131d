//! Protobuf: `protobuf`, decoded dynamically from a `.proto` file or a descriptor set (no code
//! generation): one message per Kafka record, length-delimited messages in files.
//!
//! ```text
//! bytes ─▶ DynamicMessage (prost-reflect) ─▶ per column: values ─▶ natural Arrow array ─▶ cast
//! batch ─▶ cast to the natural types ─▶ per row: DynamicMessage ─▶ bytes
//! ```
//!
//! Columns are matched to message fields by name, as in Flink. Message → ROW, repeated →
//! ARRAY, map → MAP, enum → STRING (its name) or an integer column (its number), the integer
//! kinds → INT/BIGINT (or any integer column), float/double, bool, string, bytes. A field with
//! presence (proto2 `optional`, proto3 `optional`, messages) that is unset reads as NULL unless
//! `protobuf.read-default-values`; proto3 scalars without presence read their default.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, SchemaRef};
use flowline_common::{OptionSpec, Options};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};

mod files;

pub use files::ProtobufFileReader;
pub(crate) use files::ProtobufFileWriter;

use crate::records::{BinaryDecoder, BinaryEncoder, PushError};
use crate::{FormatError, RecordBuffer, Result};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required(
        "protobuf.message-class-name",
        "the message: its protobuf full name (package.Message) or Flink's Java class name",
    ),
    OptionSpec::optional(
        "protobuf.proto-file",
        "the .proto file defining the message (imports resolve from its folder)",
    ),
    OptionSpec::optional(
        "protobuf.descriptor-file",
        "a descriptor set defining the message (protoc --include_imports --descriptor_set_out)",
    ),
    OptionSpec::optional(
        "protobuf.ignore-parse-errors",
        "skip and count records that cannot be decoded (default false)",
    ),
    OptionSpec::optional(
        "protobuf.read-default-values",
        "read unset fields that have presence as their default value, not NULL (default false)",
    ),
    OptionSpec::optional(
        "protobuf.write-null-string-literal",
        "string written for NULL elements of arrays and maps (default \"\")",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct ProtobufFormat {
    pub message: MessageDescriptor,
    pub ignore_parse_errors: bool,
    pub read_default_values: bool,
    pub null_string: String,
}

fn err(msg: impl Into<String>) -> FormatError {
    FormatError::Unsupported(msg.into())
}

impl ProtobufFormat {
    pub fn from_options(o: &Options) -> Result<Self> {
        let name = o.require("protobuf.message-class-name")?;
        let pool = match (o.get("protobuf.proto-file"), o.get("protobuf.descriptor-file")) {
            (Some(p), None) => compile_proto(Path::new(p))
                .map_err(|e| o.invalid("protobuf.proto-file", e))?,
            (None, Some(d)) => std::fs::read(d)
                .map_err(|e| e.to_string())
                .and_then(|b| DescriptorPool::decode(b.as_slice()).map_err(|e| e.to_string()))
                .map_err(|e| {
                    o.invalid("protobuf.descriptor-file", format!("cannot load '{d}': {e}"))
                })?,
            _ => {
                return Err(o
                    .invalid(
                        "protobuf.message-class-name",
                        "set exactly one of 'protobuf.proto-file' and 'protobuf.descriptor-file' to say where the message is defined",
                    )
                    .into())
            }
        };
        let message =
            find_message(&pool, name).map_err(|e| o.invalid("protobuf.message-class-name", e))?;
        Ok(Self {
            message,
            ignore_parse_errors: o.bool("protobuf.ignore-parse-errors", false)?,
            read_default_values: o.bool("protobuf.read-default-values", false)?,
            null_string: o
                .get("protobuf.write-null-string-literal")
                .unwrap_or("")
                .to_string(),
        })
    }

    /// Checks that every column is a field of the message with a type it can carry.
    pub fn check_schema(&self, schema: &SchemaRef) -> Result<()> {
        self.natural_fields(schema.fields()).map(|_| ())
    }

    /// For each column: its field and the Arrow type the field decodes to directly.
    fn natural_fields(&self, fields: &Fields) -> Result<Vec<(FieldDescriptor, DataType)>> {
        fields
            .iter()
            .map(|f| {
                let fd = field_of(&self.message, f.name())?;
                let natural = natural_type(&fd, f.data_type(), false)
                    .map_err(|e| err(format!("column '{}': {e}", f.name())))?;
                Ok((fd, natural))
            })
            .collect()
    }
}

fn compile_proto(path: &Path) -> std::result::Result<DescriptorPool, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .ok_or_else(|| format!("'{}' is not a file", path.display()))?;
    let mut compiler = protox::Compiler::new([dir]).map_err(|e| e.to_string())?;
    compiler.include_imports(true);
    compiler.open_file(file).map_err(|e| e.to_string())?;
    Ok(compiler.descriptor_pool())
}

/// The message named `name`: a protobuf full name, or a Java class name (`pkg.Outer$Inner`,
/// `pkg.Message`) matched by its last part when that is unique.
fn find_message(
    pool: &DescriptorPool,
    name: &str,
) -> std::result::Result<MessageDescriptor, String> {
    if let Some(m) = pool.get_message_by_name(name) {
        return Ok(m);
    }
    let simple = name.rsplit(['$', '.']).next().unwrap_or(name);
    let found: Vec<MessageDescriptor> = pool
        .all_messages()
        .filter(|m| m.name() == simple && !m.is_map_entry())
        .collect();
    match found.len() {
        1 => Ok(found.into_iter().next().expect("one")),
        0 => Err(format!(
            "no message '{name}'; the file defines {}",
            pool.all_messages()
                .filter(|m| !m.is_map_entry())
                .map(|m| m.full_name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!(
            "'{name}' is ambiguous: {}",
            found
                .iter()
                .map(|m| m.full_name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn field_of(m: &MessageDescriptor, name: &str) -> Result<FieldDescriptor> {
    m.get_field_by_name(name).ok_or_else(|| {
        err(format!(
            "message {} has no field '{name}'; its fields: {}",
            m.full_name(),
            m.fields()
                .map(|f| f.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The Arrow type field `fd` decodes to directly, shaped after the column type `target`
/// (which names the ROW fields to read); `elem` for one element of a repeated field.
fn natural_type(
    fd: &FieldDescriptor,
    target: &DataType,
    elem: bool,
) -> std::result::Result<DataType, String> {
    if fd.is_map() {
        let DataType::Map(entries, sorted) = target else {
            return Err(format!(
                "the map field '{}' needs a MAP column, not {target}",
                fd.name()
            ));
        };
        let DataType::Struct(kv) = entries.data_type() else {
            unreachable!("map entries are a struct")
        };
        let Kind::Message(entry) = fd.kind() else {
            unreachable!("a map field's kind is its entry message")
        };
        let k = natural_type(&entry.map_entry_key_field(), kv[0].data_type(), false)?;
        let v = natural_type(&entry.map_entry_value_field(), kv[1].data_type(), false)?;
        let kv = Fields::from(vec![
            Field::new(kv[0].name(), k, false),
            Field::new(kv[1].name(), v, true),
        ]);
        return Ok(DataType::Map(
            Arc::new(Field::new(entries.name(), DataType::Struct(kv), false)),
            *sorted,
        ));
    }
    if fd.is_list() && !elem {
        let (DataType::List(item) | DataType::LargeList(item)) = target else {
            return Err(format!(
                "the repeated field '{}' needs an ARRAY column, not {target}",
                fd.name()
            ));
        };
        let t = natural_type(fd, item.data_type(), true)?;
        return Ok(DataType::List(Arc::new(Field::new(item.name(), t, true))));
    }
    let t = match fd.kind() {
        Kind::Message(m) => {
            let DataType::Struct(fields) = target else {
                return Err(format!(
                    "the message field '{}' ({}) needs a ROW column, not {target}",
                    fd.name(),
                    m.full_name()
                ));
            };
            let children = fields
                .iter()
                .map(|f| {
                    let cfd = m.get_field_by_name(f.name()).ok_or_else(|| {
                        format!("message {} has no field '{}'", m.full_name(), f.name())
                    })?;
                    Ok(Field::new(
                        f.name(),
                        natural_type(&cfd, f.data_type(), false)?,
                        true,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            return Ok(DataType::Struct(children.into()));
        }
        Kind::Enum(_)
            if matches!(
                target,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            DataType::Utf8
        }
        Kind::Enum(_) | Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 => DataType::UInt32,
        Kind::Uint64 | Kind::Fixed64 => DataType::UInt64,
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::String => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
    };
    if !arrow_cast::can_cast_types(&t, target)
        || matches!(
            target,
            DataType::Struct(_) | DataType::List(_) | DataType::Map(..)
        )
    {
        return Err(format!(
            "field '{}' ({:?}) cannot be read as {target}",
            fd.name(),
            fd.kind()
        ));
    }
    Ok(t)
}

/// The value of field `fd` in `m`: `None` when unset and read as NULL.
fn present<'a>(
    m: &'a DynamicMessage,
    fd: &FieldDescriptor,
    defaults: bool,
) -> Option<Cow<'a, Value>> {
    if fd.supports_presence() && !defaults && !m.has_field(fd) {
        None
    } else {
        Some(m.get_field(fd))
    }
}

fn nulls_of(values: &[Option<Cow<'_, Value>>]) -> Option<NullBuffer> {
    let n = NullBuffer::from_iter(values.iter().map(Option::is_some));
    (n.null_count() > 0).then_some(n)
}

/// The column of field `fd` over `values` (one per row), as `natural`.
fn field_array(
    values: &[Option<Cow<'_, Value>>],
    fd: &FieldDescriptor,
    natural: &DataType,
    defaults: bool,
    elem: bool,
) -> std::result::Result<ArrayRef, String> {
    match natural {
        DataType::Map(entries, sorted) if fd.is_map() => {
            let DataType::Struct(kv) = entries.data_type() else {
                unreachable!()
            };
            let Kind::Message(entry) = fd.kind() else {
                unreachable!()
            };
            let (kfd, vfd) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let mut offsets = vec![0i32];
            let (mut keys, mut vals) = (Vec::new(), Vec::new());
            for v in values {
                if let Some(Value::Map(map)) = v.as_deref() {
                    let mut entries: Vec<(&MapKey, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    for (k, v) in entries {
                        keys.push(Some(Cow::Owned(map_key_value(k))));
                        vals.push(Some(Cow::Borrowed(v)));
                    }
                }
                offsets.push(keys.len() as i32);
            }
            let k = field_array(&keys, &kfd, kv[0].data_type(), defaults, false)?;
            let v = field_array(&vals, &vfd, kv[1].data_type(), defaults, false)?;
            let entries_array =
                StructArray::try_new(kv.clone(), vec![k, v], None).map_err(|e| e.to_string())?;
            Ok(Arc::new(
                MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(offsets.into()),
                    entries_array,
                    nulls_of(values),
                    *sorted,
                )
                .map_err(|e| e.to_string())?,
            ))
        }
        DataType::List(item) if fd.is_list() && !elem => {
            let mut offsets = vec![0i32];
            let mut items = Vec::new();
            for v in values {
                if let Some(Value::List(list)) = v.as_deref() {
                    items.extend(list.iter().map(|x| Some(Cow::Borrowed(x))));
                }
                offsets.push(items.len() as i32);
            }
            let child = field_array(&items, fd, item.data_type(), defaults, true)?;
            Ok(Arc::new(
                arrow_array::ListArray::try_new(
                    item.clone(),
                    OffsetBuffer::new(offsets.into()),
                    child,
                    nulls_of(values),
                )
                .map_err(|e| e.to_string())?,
            ))
        }
        DataType::Struct(fields) => {
            let Kind::Message(m) = fd.kind() else {
                unreachable!("checked")
            };
            let children = fields
                .iter()
                .map(|f| {
                    let cfd = m.get_field_by_name(f.name()).expect("checked");
                    let child: Vec<Option<Cow<'_, Value>>> = values
                        .iter()
                        .map(|v| match v.as_deref() {
                            Some(Value::Message(msg)) => present(msg, &cfd, defaults),
                            _ => None,
                        })
                        .collect();
                    field_array(&child, &cfd, f.data_type(), defaults, false)
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Ok(Arc::new(
                StructArray::try_new(fields.clone(), children, nulls_of(values))
                    .map_err(|e| e.to_string())?,
            ))
        }
        _ => scalar_array(values, fd, natural),
    }
}

fn map_key_value(k: &MapKey) -> Value {
    match k {
        MapKey::Bool(b) => Value::Bool(*b),
        MapKey::I32(x) => Value::I32(*x),
        MapKey::I64(x) => Value::I64(*x),
        MapKey::U32(x) => Value::U32(*x),
        MapKey::U64(x) => Value::U64(*x),
        MapKey::String(s) => Value::String(s.clone()),
    }
}

macro_rules! scalars {
    ($values:expr, $builder:ty, $pat:pat => $out:expr) => {{
        let mut b = <$builder>::with_capacity($values.len());
        for v in $values {
            match v.as_deref() {
                Some($pat) => b.append_value($out),
                _ => b.append_null(),
            }
        }
        Arc::new(b.finish()) as ArrayRef
    }};
}

fn scalar_array(
    values: &[Option<Cow<'_, Value>>],
    fd: &FieldDescriptor,
    natural: &DataType,
) -> std::result::Result<ArrayRef, String> {
    Ok(match natural {
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 8);
            for v in values {
                match v.as_deref() {
                    Some(Value::String(s)) => b.append_value(s),
                    Some(Value::EnumNumber(n)) => match fd.kind() {
                        Kind::Enum(e) => match e.get_value(*n) {
                            Some(ev) => b.append_value(ev.name()),
                            None => b.append_value(n.to_string()),
                        },
                        _ => b.append_null(),
                    },
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            scalars!(values, Int32Builder, Value::I32(x) | Value::EnumNumber(x) => *x)
        }
        DataType::Int64 => scalars!(values, Int64Builder, Value::I64(x) => *x),
        DataType::UInt32 => scalars!(values, UInt32Builder, Value::U32(x) => *x),
        DataType::UInt64 => scalars!(values, UInt64Builder, Value::U64(x) => *x),
        DataType::Float32 => scalars!(values, Float32Builder, Value::F32(x) => *x),
        DataType::Float64 => scalars!(values, Float64Builder, Value::F64(x) => *x),
        DataType::Boolean => scalars!(values, BooleanBuilder, Value::Bool(x) => *x),
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(values.len(), values.len() * 8);
            for v in values {
                match v.as_deref() {
                    Some(Value::Bytes(x)) => b.append_value(x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        other => return Err(format!("no protobuf reading for {other}")),
    })
}

/// Protobuf messages, one per record, into batches of the table's schema.
pub(crate) struct ProtobufRecordDecoder {
    format: ProtobufFormat,
    schema: SchemaRef,
    fields: Vec<(FieldDescriptor, DataType)>,
    messages: Vec<DynamicMessage>,
}

impl ProtobufRecordDecoder {
    pub fn new(format: &ProtobufFormat, schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            fields: format.natural_fields(schema.fields())?,
            format: format.clone(),
            schema,
            messages: Vec::new(),
        })
    }
}

/// Rows of messages as a batch of `schema`.
fn messages_batch(
    messages: &[DynamicMessage],
    fields: &[(FieldDescriptor, DataType)],
    schema: &SchemaRef,
    defaults: bool,
) -> Result<RecordBatch> {
    let columns = fields
        .iter()
        .zip(schema.fields())
        .map(|((fd, natural), f)| {
            let values: Vec<Option<Cow<'_, Value>>> =
                messages.iter().map(|m| present(m, fd, defaults)).collect();
            let array = field_array(&values, fd, natural, defaults, false)
                .map_err(|e| err(format!("column '{}': {e}", f.name())))?;
            if array.data_type() == f.data_type() {
                Ok(array)
            } else {
                arrow_cast::cast(&array, f.data_type())
                    .map_err(|e| err(format!("column '{}': {e}", f.name())))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(messages.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &opts,
    )?)
}

impl BinaryDecoder for ProtobufRecordDecoder {
    fn push(&mut self, record: &[u8]) -> std::result::Result<(), PushError> {
        let m =
            DynamicMessage::decode(self.format.message.clone(), record).map_err(|e| PushError {
                reason: format!("not a {} message: {e}", self.format.message.full_name()),
                fatal: false,
            })?;
        self.messages.push(m);
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.messages.is_empty() {
            return Ok(None);
        }
        let batch = messages_batch(
            &self.messages,
            &self.fields,
            &self.schema,
            self.format.read_default_values,
        )?;
        self.messages.clear();
        Ok(Some(batch))
    }

    fn reset(&mut self) -> Result<()> {
        self.messages.clear();
        Ok(())
    }
}

/// Rows as protobuf messages, one per record.
pub(crate) struct ProtobufRecordEncoder {
    format: ProtobufFormat,
    fields: Vec<(FieldDescriptor, DataType)>,
    bytes: Vec<u8>,
}

impl ProtobufRecordEncoder {
    pub fn new(format: &ProtobufFormat, schema: &SchemaRef) -> Result<Self> {
        Ok(Self {
            fields: format.natural_fields(schema.fields())?,
            format: format.clone(),
            bytes: Vec::new(),
        })
    }

    /// Each row of `batch` as a message.
    fn messages(&self, batch: &RecordBatch) -> Result<Vec<DynamicMessage>> {
        let columns = self
            .fields
            .iter()
            .zip(batch.columns())
            .map(|((_, natural), c)| {
                if c.data_type() == natural {
                    Ok(c.clone())
                } else {
                    arrow_cast::cast(c, natural).map_err(FormatError::from)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        (0..batch.num_rows())
            .map(|row| {
                let mut m = DynamicMessage::new(self.format.message.clone());
                for ((fd, _), col) in self.fields.iter().zip(&columns) {
                    if let Some(v) = field_value(col, row, fd, &self.format.null_string, false)? {
                        m.set_field(fd, v);
                    }
                }
                Ok(m)
            })
            .collect()
    }
}

impl BinaryEncoder for ProtobufRecordEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut RecordBuffer) -> Result<()> {
        for m in self.messages(batch)? {
            self.bytes.clear();
            m.encode(&mut self.bytes).map_err(|e| err(e.to_string()))?;
            out.push(Some(&self.bytes), false);
        }
        Ok(())
    }
}

/// Row `i` of `array` (of its natural type) as the value of field `fd`; `None` for NULL.
fn field_value(
    array: &ArrayRef,
    i: usize,
    fd: &FieldDescriptor,
    null_string: &str,
    elem: bool,
) -> Result<Option<Value>> {
    if array.is_null(i) {
        return Ok(None);
    }
    // Arrays and maps cannot hold NULL in protobuf: write the kind's default (Flink).
    let or_default = |a: &ArrayRef, j: usize, fd: &FieldDescriptor| -> Result<Value> {
        Ok(match field_value(a, j, fd, null_string, true)? {
            Some(v) => v,
            None if fd.kind() == Kind::String => Value::String(null_string.to_string()),
            None => Value::default_value(&fd.kind()),
        })
    };
    if fd.is_map() {
        let map = array.as_map();
        let Kind::Message(entry) = fd.kind() else {
            unreachable!()
        };
        let (kfd, vfd) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let range = map.value_offsets()[i] as usize..map.value_offsets()[i + 1] as usize;
        let mut out = HashMap::with_capacity(range.len());
        for j in range {
            let k = or_default(map.keys(), j, &kfd)?;
            let key = match k {
                Value::Bool(b) => MapKey::Bool(b),
                Value::I32(x) => MapKey::I32(x),
                Value::I64(x) => MapKey::I64(x),
                Value::U32(x) => MapKey::U32(x),
                Value::U64(x) => MapKey::U64(x),
                Value::String(s) => MapKey::String(s),
                other => return Err(err(format!("{other:?} cannot be a map key"))),
            };
            out.insert(key, or_default(map.values(), j, &vfd)?);
        }
        return Ok(Some(Value::Map(out)));
    }
    if fd.is_list() && !elem {
        let list = array.as_list::<i32>();
        let items = list.values();
        let range = list.value_offsets()[i] as usize..list.value_offsets()[i + 1] as usize;
        let out = range
            .map(|j| or_default(items, j, fd))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(Value::List(out)));
    }
    Ok(Some(match fd.kind() {
        Kind::Message(m) => {
            let s = array.as_struct();
            let mut msg = DynamicMessage::new(m.clone());
            for (f, col) in s.fields().iter().zip(s.columns()) {
                let cfd = m.get_field_by_name(f.name()).expect("checked");
                if let Some(v) = field_value(col, i, &cfd, null_string, false)? {
                    msg.set_field(&cfd, v);
                }
            }
            Value::Message(msg)
        }
        Kind::Enum(e) => match array.data_type() {
            DataType::Utf8 => {
                let name = array.as_string::<i32>().value(i);
                let v = e.get_value_by_name(name).ok_or_else(|| {
                    err(format!(
                        "'{name}' is not a value of enum {} (field '{}')",
                        e.full_name(),
                        fd.name()
                    ))
                })?;
                Value::EnumNumber(v.number())
            }
            _ => Value::EnumNumber(array.as_primitive::<Int32Type>().value(i)),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(array.as_primitive::<Int32Type>().value(i))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(array.as_primitive::<Int64Type>().value(i))
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(array.as_primitive::<UInt32Type>().value(i)),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(array.as_primitive::<UInt64Type>().value(i)),
        Kind::Float => Value::F32(array.as_primitive::<Float32Type>().value(i)),
        Kind::Double => Value::F64(array.as_primitive::<Float64Type>().value(i)),
        Kind::Bool => Value::Bool(array.as_boolean().value(i)),
        Kind::String => Value::String(array.as_string::<i32>().value(i).to_string()),
        Kind::Bytes => Value::Bytes(bytes::Bytes::copy_from_slice(
            array.as_binary::<i32>().value(i),
        )),
    }))
}
