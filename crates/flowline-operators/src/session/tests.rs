//! Session windows through the operator harness: merging, restarts, late rows.
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_expr::expressions::Column;

use super::*;
use crate::testing::{schema, Harness};

/// `SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '10' MILLISECONDS)`.
fn sessions() -> SessionWindowSpec {
    let input = schema("k:str v:i64 ts:ts");
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("window_end", ts.clone(), false));
    fields.push(Field::new("window_time", ts, false));
    SessionWindowSpec {
        keys: vec![Arc::new(Column::new("k", 0))],
        time: Arc::new(Column::new("ts", 2)),
        gap_ms: 10,
        schema: Arc::new(Schema::new(fields)),
    }
}

#[test]
fn a_row_that_bridges_two_sessions_merges_them() {
    Harness::new(sessions())
        .rows(
            0,
            "k:str v:i64 ts:ts
             a     1     0
             a     2     20
             NULL  3     5",
        )
        // [0, 10) and [20, 30) apart; the NULL key's session [5, 15) is its own. A session
        // closes when the watermark reaches its end - 1.
        .watermark(8)
        .expect("")
        // Touching both ends (Flink's windows intersect when they share an end point).
        .rows(
            0,
            "k:str v:i64 ts:ts
             a     4     10",
        )
        .watermark(14)
        .expect(
            "k v ts window_start window_end window_time
             NULL 3 5 5 15 14",
        )
        .watermark(29)
        .expect_unordered(
            "k v ts window_start window_end window_time
             a 1 0 0 30 29
             a 2 20 0 30 29
             a 4 10 0 30 29",
        );
}

#[test]
fn open_sessions_survive_a_restart_and_late_rows_are_counted() {
    let mut h = Harness::new(sessions());
    h.rows(
        0,
        "k:str v:i64 ts:ts
         b     1     100",
    )
    .watermark(105)
    .restart()
    .rows(
        0,
        "k:str v:i64 ts:ts
         b     2     108
         b     3     80
         b     4     90",
    )
    .expect("")
    .end()
    .expect(
        // [90, 100) touches the open [100, 118): merged first, so not late (as in Flink).
        "k v ts window_start window_end window_time
         b 1 100 90 118 117
         b 2 108 90 118 117
         b 4 90 90 118 117",
    );
    assert_eq!(
        h.late_rows(),
        1,
        "ts 80: its session [80, 90) closed before watermark 105"
    );
}
