//! Decoding and encoding of the changelog formats against their documented examples.
use super::*;
use crate::lines::LineChunkDecoder;
use arrow_array::{Int64Array, StringArray};

fn rows() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
    ]))
}

fn format(name: &str) -> ChangelogFormat {
    ChangelogFormat::from_options(&Options::default(), name).unwrap()
}

fn decode(name: &str, text: &str) -> std::result::Result<Vec<String>, String> {
    let f = format(name);
    let mut d = LineChunkDecoder::new(
        ChangelogLines::new(rows(), &f).unwrap(),
        ChangelogLines::new(rows(), &f).unwrap(),
        false,
    );
    let batch = d.decode_chunk(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(batch
        .map(|b| crate::text::flink_rows(&b).unwrap())
        .unwrap_or_default())
}

#[test]
fn debezium_ops_become_change_kinds() {
    let text = r#"{"before":null,"after":{"k":"a","n":1},"op":"c","source":{"db":"x"}}
{"before":{"k":"a","n":1},"after":{"k":"a","n":2},"op":"u"}
{"before":null,"after":{"k":"b","n":5},"op":"r"}
{"before":{"k":"a","n":2},"after":null,"op":"d"}
"#;
    assert_eq!(
        decode("debezium-json", text).unwrap(),
        ["+I[a, 1]", "-U[a, 1]", "+U[a, 2]", "+I[b, 5]", "-D[a, 2]"]
    );
    let err = decode(
        "debezium-json",
        "{\"before\":null,\"after\":{\"k\":\"a\",\"n\":1},\"op\":\"c\"}\n{\"before\":null,\"after\":{\"k\":\"a\"},\"op\":\"u\"}\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("line 2:") && err.contains("REPLICA IDENTITY"),
        "{err}"
    );
    let err = decode("debezium-json", "{\"after\":{\"k\":\"a\"},\"op\":\"x\"}\n").unwrap_err();
    assert!(err.contains("unknown \"op\" value \"x\""), "{err}");
    // A NULL in a NOT NULL column is a bad record, not a panic.
    let err = decode("debezium-json", "{\"after\":{\"n\":1},\"op\":\"c\"}\n").unwrap_err();
    assert!(err.starts_with("line 1:"), "{err}");
}

#[test]
fn debezium_with_schema_reads_the_payload() {
    let f = ChangelogFormat::from_options(
        &Options::new(
            "t",
            [(
                "debezium-json.schema-include".to_string(),
                "true".to_string(),
            )]
            .into_iter()
            .collect(),
        ),
        "debezium-json",
    )
    .unwrap();
    let mut d = LineChunkDecoder::new(
        ChangelogLines::new(rows(), &f).unwrap(),
        ChangelogLines::new(rows(), &f).unwrap(),
        false,
    );
    let text = r#"{"schema":{"type":"struct"},"payload":{"before":{"k":"a","n":1},"after":{"k":"a","n":3},"op":"u"}}
"#;
    let b = d.decode_chunk(text.as_bytes()).unwrap().unwrap();
    assert_eq!(
        crate::text::flink_rows(&b).unwrap(),
        ["-U[a, 1]", "+U[a, 3]"]
    );
    assert!(f.check_writable().is_err());
}

#[test]
fn canal_old_holds_only_changed_fields() {
    let text = r#"{"data":[{"k":"a","n":"1"},{"k":"b","n":"2"}],"old":null,"type":"INSERT","database":"db","table":"t","isDdl":false}
{"data":[{"k":"a","n":"7"}],"old":[{"n":"1"}],"type":"UPDATE","database":"db","table":"t"}
{"data":null,"type":"CREATE","isDdl":true,"sql":"create table t (...)"}
{"data":[{"k":"b","n":"2"}],"type":"DELETE","database":"db","table":"t"}
"#;
    assert_eq!(
        decode("canal-json", text).unwrap(),
        ["+I[a, 1]", "+I[b, 2]", "-U[a, 1]", "+U[a, 7]", "-D[b, 2]"]
    );
    let filtered = ChangelogFormat::from_options(
        &Options::new(
            "t",
            [("canal-json.table.include".to_string(), "u|v".to_string())]
                .into_iter()
                .collect(),
        ),
        "canal-json",
    )
    .unwrap();
    let mut d = LineChunkDecoder::new(
        ChangelogLines::new(rows(), &filtered).unwrap(),
        ChangelogLines::new(rows(), &filtered).unwrap(),
        false,
    );
    let got = d.decode_chunk(text.as_bytes()).unwrap();
    assert_eq!(got.map_or(0, |b| b.num_rows()), 0, "table 't' is not 'u|v'");
}

#[test]
fn maxwell_update_keeps_unchanged_fields() {
    let text = r#"{"database":"db","table":"t","type":"insert","data":{"k":"a","n":1}}
{"database":"db","table":"t","type":"update","data":{"k":"a","n":4},"old":{"n":1}}
{"database":"db","table":"t","type":"delete","data":{"k":"a","n":4}}
"#;
    assert_eq!(
        decode("maxwell-json", text).unwrap(),
        ["+I[a, 1]", "-U[a, 1]", "+U[a, 4]", "-D[a, 4]"]
    );
    let err = decode(
        "maxwell-json",
        "{\"type\":\"bootstrap\",\"data\":{\"k\":\"a\"}}\n",
    )
    .unwrap_err();
    assert!(
        err.contains("unknown \"type\" value \"bootstrap\""),
        "{err}"
    );
}

/// Nested ROW and ARRAY values, DECIMAL, timestamps (also nested) and NULLs survive
/// encode → decode in every changelog format, with their change kinds.
#[test]
fn nested_types_round_trip() {
    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{Decimal128Array, TimestampMillisecondArray};
    let ts = DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None);
    let inner = Fields::from(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("t", ts.clone(), true),
    ]);
    let rows = Arc::new(Schema::new(vec![
        Field::new("r", DataType::Struct(inner.clone()), true),
        Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        ),
        Field::new("d", DataType::Decimal128(10, 2), true),
        Field::new("t", ts.clone(), true),
    ]));
    let times = || -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_577_880_000_100),
            None,
            Some(-1_000),
        ]))
    };
    let r = StructArray::try_new(
        inner,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            times(),
        ],
        Some(NullBuffer::from(vec![true, true, false])),
    )
    .unwrap();
    let mut l = ListBuilder::new(Int64Builder::new());
    l.values().append_value(7);
    l.values().append_null();
    l.append(true);
    l.append(false);
    l.append(true);
    let batch = RecordBatch::try_new(
        Arc::new(changelog::with_row_kind(&rows)),
        vec![
            Arc::new(r),
            Arc::new(l.finish()),
            Arc::new(
                Decimal128Array::from(vec![Some(150), None, Some(-5)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            times(),
            Arc::new(Int8Array::from(vec![0, 3, 0])),
        ],
    )
    .unwrap();
    for name in CHANGELOG_FORMATS {
        let f = format(name);
        let mut text = Vec::new();
        encode(&f, &batch, &mut text).unwrap();
        let mut d = LineChunkDecoder::new(
            ChangelogLines::new(rows.clone(), &f).unwrap(),
            ChangelogLines::new(rows.clone(), &f).unwrap(),
            false,
        );
        let back = d.decode_chunk(&text).unwrap().unwrap();
        assert_eq!(back, batch, "{name}: {}", String::from_utf8_lossy(&text));
    }
}

/// Flink's serializers write these lines for +I, -U, +U, -D (checked against Flink 2.3's
/// filesystem sink).
#[test]
fn encodes_as_flink_does_and_round_trips() {
    let batch = RecordBatch::try_new(
        Arc::new(changelog::with_row_kind(&rows())),
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "a", "b"])),
            Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(2), None])),
            Arc::new(Int8Array::from(vec![0, 1, 2, 3])),
        ],
    )
    .unwrap();
    let expected = [
        (
            "debezium-json",
            r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}
{"before":{"k":"a","n":1},"after":null,"op":"d"}
{"before":null,"after":{"k":"a","n":2},"op":"c"}
{"before":{"k":"b","n":null},"after":null,"op":"d"}
"#,
        ),
        (
            "canal-json",
            r#"{"data":[{"k":"a","n":1}],"type":"INSERT"}
{"data":[{"k":"a","n":1}],"type":"DELETE"}
{"data":[{"k":"a","n":2}],"type":"INSERT"}
{"data":[{"k":"b","n":null}],"type":"DELETE"}
"#,
        ),
        (
            "maxwell-json",
            r#"{"data":{"k":"a","n":1},"type":"insert"}
{"data":{"k":"a","n":1},"type":"delete"}
{"data":{"k":"a","n":2},"type":"insert"}
{"data":{"k":"b","n":null},"type":"delete"}
"#,
        ),
    ];
    for (name, want) in expected {
        let mut out = Vec::new();
        encode(&format(name), &batch, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "{name}");
        assert_eq!(
            decode(name, want).unwrap(),
            ["+I[a, 1]", "-D[a, 1]", "+I[a, 2]", "-D[b, NULL]"],
            "{name}"
        );
    }
}
