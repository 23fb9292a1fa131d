//! Arrow → bytes → Arrow is the identity, for every binary format and every type it carries:
//! property tests over random rows with NULLs at every level.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, ListBuilder, MapBuilder,
    MapFieldNames, StringBuilder, TimestampMicrosecondBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use flowline_common::Options;
use proptest::prelude::*;

use crate::{
    create_writer, FormatConfig, RecordBuffer, RecordDecoder, RecordEncoder, RecordFormat,
};

/// One row of every type: each value may be NULL.
#[derive(Debug, Clone)]
struct Row {
    b: Option<bool>,
    i8: Option<i8>,
    i16: Option<i16>,
    i32: Option<i32>,
    i64: Option<i64>,
    f32: Option<f32>,
    f64: Option<f64>,
    s: Option<String>,
    bytes: Option<Vec<u8>>,
    dec: Option<i128>,
    date: Option<i32>,
    ts3: Option<i64>,
    ts6: Option<i64>,
    row: Option<(Option<i64>, Option<String>)>,
    list: Option<Vec<Option<i32>>>,
    map: Option<Vec<(String, Option<i64>)>>,
}

fn row() -> impl Strategy<Value = Row> {
    let text = "[a-z\u{e9}\u{4e2d} \n\"]{0,8}";
    (
        (
            any::<Option<bool>>(),
            any::<Option<i8>>(),
            any::<Option<i16>>(),
            any::<Option<i32>>(),
            any::<Option<i64>>(),
            proptest::option::of(-1e6f32..1e6),
            proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
            proptest::option::of(text),
        ),
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
            proptest::option::of(-9_999_999_999i128..9_999_999_999),
            proptest::option::of(-100_000i32..100_000),
            proptest::option::of(-10_000_000_000_000i64..10_000_000_000_000),
            proptest::option::of(-10_000_000_000_000_000i64..10_000_000_000_000_000),
            proptest::option::of((any::<Option<i64>>(), proptest::option::of(text))),
            proptest::option::of(proptest::collection::vec(any::<Option<i32>>(), 0..4)),
            proptest::option::of(proptest::collection::btree_map(
                "[a-z]{1,4}",
                any::<Option<i64>>(),
                0..4,
            )),
        ),
    )
        .prop_map(
            |(
                (b, i8, i16, i32, i64, f32, f64, s),
                (bytes, dec, date, ts3, ts6, row, list, map),
            )| Row {
                b,
                i8,
                i16,
                i32,
                i64,
                f32,
                f64,
                s,
                bytes,
                dec,
                date,
                ts3,
                ts6,
                row,
                list,
                map: map.map(|m| m.into_iter().collect()),
            },
        )
}

fn inner_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ])
}

fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Int64, true),
            ])),
            false,
        )),
        false,
    )
}

/// Every column type the binary formats carry (as the SQL layer maps Flink types).
fn all_types() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, true),
        Field::new("f32", DataType::Float32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("bytes", DataType::Binary, true),
        Field::new("dec", DataType::Decimal128(10, 2), true),
        Field::new("date", DataType::Date32, true),
        Field::new(
            "ts3",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new(
            "ts6",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("row", DataType::Struct(inner_fields()), true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("element", DataType::Int32, true))),
            true,
        ),
        Field::new("map", map_type(), true),
    ]))
}

fn batch(schema: &SchemaRef, rows: &[Row]) -> RecordBatch {
    macro_rules! col {
        ($b:expr, $f:ident) => {{
            let mut b = $b;
            for r in rows {
                b.append_option(r.$f.clone());
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    let mut list = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Int32,
        true,
    )));
    for r in rows {
        match &r.list {
            Some(l) => {
                for v in l {
                    list.values().append_option(*v);
                }
                list.append(true);
            }
            None => list.append(false),
        }
    }
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut map = MapBuilder::new(Some(names), StringBuilder::new(), Int64Builder::new());
    for r in rows {
        match &r.map {
            Some(m) => {
                for (k, v) in m {
                    map.keys().append_value(k);
                    map.values().append_option(*v);
                }
                map.append(true).unwrap();
            }
            None => map.append(false).unwrap(),
        }
    }
    let row_col = StructArray::try_new(
        inner_fields(),
        vec![
            Arc::new(arrow_array::Int64Array::from_iter(
                rows.iter().map(|r| r.row.as_ref().and_then(|x| x.0)),
            )),
            Arc::new(arrow_array::StringArray::from_iter(
                rows.iter()
                    .map(|r| r.row.as_ref().and_then(|x| x.1.clone())),
            )),
        ],
        Some(NullBuffer::from_iter(rows.iter().map(|r| r.row.is_some()))),
    )
    .unwrap();
    let columns: Vec<ArrayRef> = vec![
        col!(BooleanBuilder::new(), b),
        col!(Int8Builder::new(), i8),
        col!(Int16Builder::new(), i16),
        col!(Int32Builder::new(), i32),
        col!(Int64Builder::new(), i64),
        col!(Float32Builder::new(), f32),
        col!(Float64Builder::new(), f64),
        col!(StringBuilder::new(), s),
        col!(BinaryBuilder::new(), bytes),
        col!(
            Decimal128Builder::new()
                .with_precision_and_scale(10, 2)
                .unwrap(),
            dec
        ),
        col!(Date32Builder::new(), date),
        col!(TimestampMillisecondBuilder::new(), ts3),
        col!(TimestampMicrosecondBuilder::new(), ts6),
        Arc::new(row_col),
        Arc::new(list.finish()),
        Arc::new(map.finish()),
    ];
    let all = RecordBatch::try_new(all_types(), columns).unwrap();
    all.project(
        &schema
            .fields()
            .iter()
            .map(|f| all_types().index_of(f.name()).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

fn options(pairs: &[(&str, &str)]) -> Options {
    Options::new(
        "test",
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// `batch` encoded as one record per row.
fn encode_records(format: &RecordFormat, batch: &RecordBatch) -> RecordBuffer {
    let mut buf = RecordBuffer::default();
    RecordEncoder::new(format, &batch.schema())
        .unwrap()
        .encode(batch, &mut buf)
        .unwrap();
    buf
}

fn records_round_trip(format: &RecordFormat, batch: &RecordBatch) -> RecordBatch {
    let buf = encode_records(format, batch);
    assert_eq!(buf.len(), batch.num_rows());
    // Messages arrive one by one: copy them into a fresh buffer as a consumer would.
    let mut input = RecordBuffer::default();
    for i in 0..buf.len() {
        input.push(buf.record(i), false);
    }
    let mut dec = RecordDecoder::new(format, batch.schema()).unwrap();
    dec.decode(&input)
        .unwrap()
        .unwrap_or_else(|| RecordBatch::new_empty(batch.schema()))
}

fn file_round_trip(format: &FormatConfig, batch: &RecordBatch) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part");
    let mut w = create_writer(
        format,
        batch.schema(),
        std::fs::File::create(&path).unwrap(),
    )
    .unwrap();
    // Two writes: a file holds many batches.
    let half = batch.num_rows() / 2;
    w.write(&batch.slice(0, half)).unwrap();
    w.write(&batch.slice(half, batch.num_rows() - half))
        .unwrap();
    assert!(w.bytes_written() > 0 || batch.num_rows() == 0);
    w.finish().unwrap();
    let batches: Vec<RecordBatch> = format
        .open_batches(
            crate::FileInput::File(std::fs::File::open(&path).unwrap()),
            &batch.schema(),
            7,
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    arrow_select::concat::concat_batches(&batch.schema(), &batches).unwrap()
}

const PROTO: &str = r#"
syntax = "proto3";
package flowline.test;
message Inner {
  optional int64 a = 1;
  optional string name = 2;
}
enum Color { RED = 0; GREEN = 1; }
message AllTypes {
  optional bool b = 1;
  optional int32 i8 = 2;
  optional sint32 i16 = 3;
  optional int32 i32 = 4;
  optional int64 i64 = 5;
  optional float f32 = 6;
  optional double f64 = 7;
  optional string s = 8;
  optional bytes bytes = 9;
  Inner row = 10;
  repeated int32 list = 11;
  map<string, int64> map = 12;
  Color color = 13;
}
"#;

fn protobuf_format(dir: &std::path::Path) -> crate::protobuf::ProtobufFormat {
    let path = dir.join("all.proto");
    std::fs::write(&path, PROTO).unwrap();
    crate::protobuf::ProtobufFormat::from_options(&options(&[
        ("protobuf.message-class-name", "flowline.test.AllTypes"),
        ("protobuf.proto-file", path.to_str().unwrap()),
    ]))
    .unwrap()
}

/// What protobuf carries of a row: repeated and map fields hold no NULLs and are never NULL
/// themselves (Flink writes defaults), so those are normalised before comparing.
fn protobuf_rows(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .map(|r| Row {
            list: Some(
                r.list
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| Some(v.unwrap_or(0)))
                    .collect(),
            ),
            map: Some(
                r.map
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, Some(v.unwrap_or(0))))
                    .collect(),
            ),
            ..r.clone()
        })
        .collect()
}

fn protobuf_schema() -> SchemaRef {
    let all = all_types();
    let keep = [
        "b", "i8", "i16", "i32", "i64", "f32", "f64", "s", "bytes", "row", "list", "map",
    ];
    Arc::new(Schema::new(
        keep.iter()
            .map(|n| all.field_with_name(n).unwrap().clone())
            .collect::<Vec<_>>(),
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn avro_records_round_trip(rows in proptest::collection::vec(row(), 0..20)) {
        let b = batch(&all_types(), &rows);
        let f = RecordFormat::from_options(&options(&[("format", "avro")]), "format").unwrap();
        prop_assert_eq!(records_round_trip(&f, &b), b);
    }

    #[test]
    fn avro_files_round_trip(rows in proptest::collection::vec(row(), 0..20), codec in prop_oneof!["null", "deflate", "snappy", "zstandard"]) {
        let b = batch(&all_types(), &rows);
        let f = crate::format_from_options(&options(&[("format", "avro"), ("avro.codec", &codec)]), "format").unwrap();
        prop_assert_eq!(file_round_trip(&f, &b), b);
    }

    #[test]
    fn protobuf_round_trips(rows in proptest::collection::vec(row(), 0..20)) {
        let dir = tempfile::tempdir().unwrap();
        let p = protobuf_format(dir.path());
        let expected = batch(&protobuf_schema(), &protobuf_rows(&rows));
        let b = batch(&protobuf_schema(), &rows);
        prop_assert_eq!(records_round_trip(&RecordFormat::Protobuf(p.clone()), &b), expected.clone());
        prop_assert_eq!(file_round_trip(&FormatConfig::Protobuf(p), &b), expected);
    }
}

#[test]
fn avro_bad_records_are_named_or_skipped() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let f = RecordFormat::from_options(&options(&[("format", "avro")]), "format").unwrap();
    let good = batch_of(&schema, &[(1, Some("a")), (2, None), (3, Some("c"))]);
    let buf = encode_records(&f, &good);
    let mut input = RecordBuffer::default();
    input.push(buf.record(0), false);
    input.push(Some(&[0x02, 0x02, 0xff]), false); // id 1, union index 1, then a truncated string
    input.push(buf.record(1), false);
    input.push(Some(&buf.record(2).unwrap()[..1]), false); // truncated
    input.push(buf.record(2), false);
    let err = RecordDecoder::new(&f, schema.clone())
        .unwrap()
        .decode(&input)
        .unwrap_err();
    assert_eq!(err.index, 1, "{err}");

    let lenient = RecordFormat::from_options(
        &options(&[("format", "avro"), ("avro.ignore-parse-errors", "true")]),
        "format",
    )
    .unwrap();
    let mut dec = RecordDecoder::new(&lenient, schema.clone()).unwrap();
    let out = dec.decode(&input).unwrap().unwrap();
    assert_eq!(out, good);
    assert_eq!(dec.skipped(), 2);
    assert_eq!(dec.last_skipped(&input), vec![1, 3]);
}

#[test]
fn protobuf_reads_enums_and_presence_like_flink() {
    let dir = tempfile::tempdir().unwrap();
    let p = protobuf_format(dir.path());
    let schema = Arc::new(Schema::new(vec![
        Field::new("color", DataType::Utf8, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("row", DataType::Struct(inner_fields()), true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("element", DataType::Int32, true))),
            true,
        ),
    ]));
    // An empty message: enum at its default, optional scalar and message unset, empty list.
    let mut input = RecordBuffer::default();
    input.push(Some(b""), false);
    // color = GREEN (field 13, varint 1).
    input.push(Some(&[13 << 3, 1]), false);
    let out = RecordDecoder::new(&RecordFormat::Protobuf(p.clone()), schema.clone())
        .unwrap()
        .decode(&input)
        .unwrap()
        .unwrap();
    let colors = out
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    assert_eq!((colors.value(0), colors.value(1)), ("RED", "GREEN"));
    assert!(out.column(1).is_null(0) && out.column(2).is_null(0));
    assert_eq!(
        out.column(3)
            .as_any()
            .downcast_ref::<arrow_array::ListArray>()
            .unwrap()
            .value_length(0),
        0
    );

    // With read-default-values the unset fields read as their defaults.
    let mut defaults = p.clone();
    defaults.read_default_values = true;
    let out = RecordDecoder::new(&RecordFormat::Protobuf(defaults), schema.clone())
        .unwrap()
        .decode(&input)
        .unwrap()
        .unwrap();
    assert!(!out.column(1).is_null(0) && !out.column(2).is_null(0));

    // A column the message lacks, or of a type its field cannot carry, is refused up front.
    let bad = Arc::new(Schema::new(vec![Field::new("nope", DataType::Utf8, true)]));
    let e = RecordDecoder::new(&RecordFormat::Protobuf(p.clone()), bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("has no field 'nope'") && e.contains("i32"),
        "{e}"
    );
    let bad = Arc::new(Schema::new(vec![Field::new("row", DataType::Int64, true)]));
    let e = RecordDecoder::new(&RecordFormat::Protobuf(p.clone()), bad)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs a ROW column"), "{e}");

    // Garbage is a parse error naming the record.
    let mut garbage = RecordBuffer::default();
    garbage.push(Some(b""), false);
    garbage.push(Some(&[0xff, 0xff, 0xff]), false);
    let e = RecordDecoder::new(&RecordFormat::Protobuf(p), schema)
        .unwrap()
        .decode(&garbage)
        .unwrap_err();
    assert_eq!(e.index, 1, "{e}");
}

#[test]
fn protobuf_message_names_resolve_like_java_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.proto");
    std::fs::write(&path, PROTO).unwrap();
    for name in [
        "flowline.test.AllTypes",
        "com.acme.All$AllTypes",
        "com.acme.AllTypes",
    ] {
        let p = crate::protobuf::ProtobufFormat::from_options(&options(&[
            ("protobuf.message-class-name", name),
            ("protobuf.proto-file", path.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(p.message.full_name(), "flowline.test.AllTypes");
    }
    let e = crate::protobuf::ProtobufFormat::from_options(&options(&[
        ("protobuf.message-class-name", "Missing"),
        ("protobuf.proto-file", path.to_str().unwrap()),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("flowline.test.Inner"), "{e}");
}

fn batch_of(schema: &SchemaRef, rows: &[(i64, Option<&str>)]) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::Int64Array::from_iter_values(
                rows.iter().map(|r| r.0),
            )),
            Arc::new(arrow_array::StringArray::from_iter(
                rows.iter().map(|r| r.1),
            )),
        ],
    )
    .unwrap()
}

/// An upsert tombstone (a record without payload) is a row of NULLs in its place, for every
/// binary format: the key columns come from the message key.
#[test]
fn records_without_payload_are_null_rows() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.proto");
    std::fs::write(
        &path,
        "syntax = \"proto3\";\nmessage T { int64 id = 1; optional string name = 2; }\n",
    )
    .unwrap();
    let formats = [
        RecordFormat::from_options(&options(&[("format", "avro")]), "format").unwrap(),
        RecordFormat::from_options(
            &options(&[
                ("format", "protobuf"),
                ("protobuf.message-class-name", "T"),
                ("protobuf.proto-file", path.to_str().unwrap()),
            ]),
            "format",
        )
        .unwrap(),
    ];
    for f in formats {
        let good = batch_of(&schema, &[(1, Some("a")), (2, None)]);
        let buf = encode_records(&f, &good);
        let mut input = RecordBuffer::default();
        input.push(None, false);
        input.push(buf.record(0), false);
        input.push(None, false);
        input.push(buf.record(1), false);
        let out = RecordDecoder::new(&f, schema.clone())
            .unwrap()
            .decode(&input)
            .unwrap()
            .unwrap();
        assert_eq!(out.num_rows(), 4, "{}", f.name());
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![None, Some(1), None, Some(2)],
            "{}",
            f.name()
        );
    }
}
