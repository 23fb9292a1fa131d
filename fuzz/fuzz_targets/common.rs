//! The table every target decodes into, and the formats under test.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use flowline_common::Options;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Int32, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        ),
        Field::new(
            "r",
            DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int64, true)])),
            true,
        ),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

const PROTO: &str = r#"syntax = "proto3";
message R { optional int64 a = 1; }
message Row { optional int64 id = 1; optional string name = 2; optional int32 amount = 3;
  repeated string tags = 4; R r = 5; optional int64 ts = 6; map<string, int64> m = 7; }
"#;

/// Option sets naming a format, with `ignore` for `<format>.ignore-parse-errors`.
pub fn options(format: &str, ignore: bool) -> Options {
    static PROTO_PATH: OnceLock<String> = OnceLock::new();
    let proto = PROTO_PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("flowline-fuzz-{}.proto", std::process::id()));
        std::fs::write(&path, PROTO).unwrap();
        path.display().to_string()
    });
    let mut pairs = vec![
        ("format".to_string(), format.to_string()),
        (format!("{format}.ignore-parse-errors"), ignore.to_string()),
    ];
    if format == "protobuf" {
        pairs.push(("protobuf.message-class-name".into(), "Row".into()));
        pairs.push(("protobuf.proto-file".into(), proto.clone()));
    }
    if format == "avro-confluent" {
        // Never reached: records are refused before a registry lookup unless framed; the
        // targets use plain avro.
        pairs.push(("avro-confluent.url".into(), "http://127.0.0.1:9".into()));
    }
    Options::new("fuzz", pairs.into_iter().collect())
}
