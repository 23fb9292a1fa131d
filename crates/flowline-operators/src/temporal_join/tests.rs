//! The versioned (event-time temporal) join driven directly, and the lookup join through the
//! operator harness.
use super::*;
use datafusion::arrow::array::{Int64Array, Int8Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::physical_expr::expressions::Column;
use flowline_common::changelog::with_row_kind;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn spec(left_join: bool) -> VersionedJoinSpec {
    let probe = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("t", ts(), true),
    ]));
    let versions = Arc::new(Schema::new(vec![
        Field::new("vk", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("vt", ts(), true),
    ]));
    let mut out: Vec<Field> = probe.fields().iter().map(|f| f.as_ref().clone()).collect();
    out.extend(versions.fields().iter().map(|f| f.as_ref().clone()));
    VersionedJoinSpec {
        left_join,
        keys: [
            vec![Arc::new(Column::new("k", 0))],
            vec![Arc::new(Column::new("vk", 0))],
        ],
        inputs: [probe, versions],
        versions_updating: true,
        times: [1, 2],
        table_name: "v".into(),
        filter: None,
        schema: Arc::new(Schema::new(out)),
    }
}

fn probes(spec: &VersionedJoinSpec, rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        spec.inputs[0].clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
        ],
    )
    .unwrap()
}

fn versions(spec: &VersionedJoinSpec, rows: &[(RowKind, i64, &str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(with_row_kind(&spec.inputs[1])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.3),
            )),
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.0 as i8))),
        ],
    )
    .unwrap()
}

/// (probe time, joined version value or "-") of each output row, sorted.
fn joined(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in batches {
        let t = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        let v = b.column(3).as_string::<i32>();
        for i in 0..b.num_rows() {
            let v = if v.is_null(i) {
                "-".to_string()
            } else {
                v.value(i).to_string()
            };
            out.push((t.value(i), v));
        }
    }
    out.sort();
    out
}

/// Versions of one key with an update and a delete: each probe row sees the version valid
/// at its time; a deleted key has none until it is inserted again. A checkpoint taken
/// between watermarks carries the waiting rows and the versions.
#[test]
fn probe_rows_join_the_version_valid_at_their_time() {
    for left_join in [false, true] {
        let spec = spec(left_join);
        let mut op = spec.create(&OperatorContext::default()).unwrap();
        let v = versions(
            &spec,
            &[
                (RowKind::Insert, 1, "a", 10),
                (RowKind::UpdateBefore, 1, "a", 20),
                (RowKind::UpdateAfter, 1, "b", 20),
                (RowKind::Delete, 1, "b", 30),
                (RowKind::Insert, 1, "c", 40),
            ],
        );
        assert!(op.on_batch(1, v).unwrap().is_empty());
        assert!(op
            .on_batch(0, probes(&spec, &[(1, 5), (1, 10), (1, 25), (2, 25)]))
            .unwrap()
            .is_empty());
        let mut out = op.on_watermark(26).unwrap();
        // The state after the watermark, restored into a fresh operator.
        let state = op.snapshot().unwrap();
        let mut op = spec.create(&OperatorContext::default()).unwrap();
        op.restore(&state).unwrap();
        op.on_batch(0, probes(&spec, &[(1, 30), (1, 35), (1, 45), (1, 27)]))
            .unwrap();
        out.extend(op.on_watermark(100).unwrap());
        out.extend(op.on_end().unwrap());
        // 27 comes after the watermark passed it: it still finds the version valid then.
        let mut expected = vec![
            (10, "a".to_string()),
            (25, "b".into()),
            (27, "b".into()),
            (45, "c".into()),
        ];
        if left_join {
            expected.extend([
                (5, "-".to_string()),
                (25, "-".into()),
                (30, "-".into()),
                (35, "-".into()),
            ]);
        }
        expected.sort();
        assert_eq!(joined(&out), expected, "left_join={left_join}");
    }
}

/// Only the version valid at the watermark (and the ones after it) are kept.
#[test]
fn the_watermark_drops_versions_no_row_can_join() {
    let spec = spec(false);
    let mut op = spec.create(&OperatorContext::default()).unwrap();
    let rows: Vec<(RowKind, i64, &str, i64)> = (0..100)
        .map(|t| (RowKind::Insert, 1, "x", t * 10))
        .collect();
    op.on_batch(1, versions(&spec, &rows)).unwrap();
    let before = op.state_bytes();
    op.on_watermark(995).unwrap();
    assert!(
        op.state_bytes() * 10 < before,
        "{} of {before} bytes left",
        op.state_bytes()
    );
    // A late probe row joins the oldest version kept.
    op.on_batch(0, probes(&spec, &[(1, 996)])).unwrap();
    assert_eq!(joined(&op.on_end().unwrap()), vec![(996, "x".to_string())]);
}

/// `probe LEFT JOIN dim FOR SYSTEM_TIME AS OF proctime ON probe.k = dim.dk` over a table that
/// loads `dk | name` rows.
fn lookup(left_join: bool) -> LookupJoinSpec {
    use crate::testing::{batch, schema};
    let input = schema("k:i64 x:str");
    let table = schema("dk:i64 name:str");
    let mut out: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    out.extend(
        table
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    LookupJoinSpec {
        left_join,
        keys: [
            vec![Arc::new(Column::new("k", 0))],
            vec![Arc::new(Column::new("dk", 0))],
        ],
        input,
        updating: false,
        table,
        table_name: "dim".into(),
        load: Arc::new(|| {
            Ok(vec![batch(
                "dk:i64 name:str
                 1      one
                 2      two
                 2      deux
                 NULL   none",
            )])
        }),
        reload: None,
        filter: None,
        schema: Arc::new(Schema::new(out)),
    }
}

#[test]
fn a_lookup_join_matches_every_table_row_of_the_key_and_never_a_null_key() {
    use crate::testing::Harness;
    let probes = "k:i64 x:str
                  2     p
                  3     q
                  NULL  r";
    Harness::new(lookup(false))
        .rows(0, probes)
        .expect_unordered(
            "k x dk name
         2 p 2 two
         2 p 2 deux",
        );
    Harness::new(lookup(true))
        .rows(0, probes)
        .expect_unordered(
            "k x dk name
             2 p 2 two
             2 p 2 deux
             3 q NULL NULL
             NULL r NULL NULL",
        )
        // Nothing to restore (the table is read again), and no rows held back.
        .restart()
        .rows(
            0,
            "k:i64 x:str
             1     s",
        )
        .expect(
            "k x dk name
             1 s 1 one",
        );
}
