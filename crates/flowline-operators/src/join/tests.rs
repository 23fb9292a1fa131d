//! The regular join through the operator harness: the change kinds of each join kind, and with a
//! budget so small that every key spills, the same changelog as an unbounded run.
use super::*;
use crate::testing::{schema, Harness};
use datafusion::physical_expr::expressions::{BinaryExpr, Column};

/// `l(k, a) JOIN r(k, b) ON l.k = r.k [AND l.a < r.b]`, an updating left input when `updating`.
fn spec(kind: JoinKind, updating: bool, filter: bool) -> JoinSpec {
    let left = schema("k:str a:i64");
    let right = schema("k:str b:i64");
    let mut fields: Vec<_> = match kind.kept() {
        Some(0) => left.fields().iter().cloned().collect(),
        Some(_) => right.fields().iter().cloned().collect(),
        None => left
            .fields()
            .iter()
            .chain(right.fields())
            .cloned()
            .collect(),
    };
    if kind.kept().is_none() {
        fields[2] = Arc::new(fields[2].as_ref().clone().with_name("rk"));
    }
    let filter: Option<Arc<dyn PhysicalExpr>> = filter.then(|| {
        Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 1)),
            datafusion::logical_expr::Operator::Lt,
            Arc::new(Column::new("b", 3)),
        )) as _
    });
    let mut spec = JoinSpec {
        kind,
        keys: [
            vec![Arc::new(Column::new("k", 0))],
            vec![Arc::new(Column::new("k", 0))],
        ],
        inputs: [left, right],
        updating: [updating, false],
        filter,
        schema: Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        state_ttl: None,
    };
    if spec.output_updating() {
        spec.schema = Arc::new(flowline_common::changelog::with_row_kind(&spec.schema));
    }
    spec
}

#[test]
fn an_inner_join_matches_rows_that_arrive_on_either_side_across_a_restart() {
    let mut h = Harness::new(spec(JoinKind::Inner, false, false));
    h.rows(0, "k:str a:i64\n x 1\n y 2\n NULL 3")
        .expect("")
        .rows(1, "k:str b:i64\n x 10\n NULL 11")
        .expect("k a rk b\n x 1 x 10")
        .restart()
        .rows(0, "k:str a:i64\n x 4")
        .expect("k a rk b\n x 4 x 10")
        .rows(1, "k:str b:i64\n y 20\n x 30")
        .expect("k a rk b\n y 2 y 20\n x 1 x 30\n x 4 x 30");
}

#[test]
fn a_left_join_retracts_its_null_padded_row_when_a_match_arrives_and_emits_it_when_it_goes() {
    let mut h = Harness::new(spec(JoinKind::Left, true, false));
    h.rows(0, "k:str a:i64 _row_kind:kind\n x 1 +I")
        .expect("k a rk b _row_kind\n x 1 NULL NULL +I")
        .rows(1, "k:str b:i64\n x 10")
        .expect("k a rk b _row_kind\n x 1 NULL NULL -D\n x 1 x 10 +I")
        .restart()
        .rows(0, "k:str a:i64 _row_kind:kind\n x 1 -D")
        .expect("k a rk b _row_kind\n x 1 x 10 -D");
}

#[test]
fn an_anti_join_emits_a_row_until_it_has_a_match() {
    let mut h = Harness::new(spec(JoinKind::LeftAnti, false, true));
    h.rows(0, "k:str a:i64\n x 5")
        .expect("k a _row_kind\n x 5 +I")
        // No match: 5 < 3 is false.
        .rows(1, "k:str b:i64\n x 3")
        .expect("")
        .restart()
        .rows(1, "k:str b:i64\n x 9")
        .expect("k a _row_kind\n x 5 -D");
}

#[test]
fn a_join_past_its_budget_spills_and_counts_it() {
    let mut h = Harness::with_budget(spec(JoinKind::Inner, false, false), 2048);
    let mut text = String::from("k:str a:i64\n");
    for i in 0..500 {
        text += &format!("k{i} {i}\n");
    }
    h.rows(0, &text);
    let stats = h.table_stats();
    assert!(stats.spills > 0 && stats.memory_bytes <= 2048, "{stats:?}");
    h.restart();
    assert!(h.table_stats().disk_bytes > 0);
    h.rows(1, "k:str b:i64\n k7 70\n k499 4990\n k500 0")
        .expect("k a rk b\n k7 7 k7 70\n k499 499 k499 4990");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// With a budget of a few keys (everything spills) every join kind gives the changelog of an
    /// unbounded budget, through batches on either side, retractions and restarts anywhere.
    #[test]
    fn a_spilling_join_gives_the_same_changelog(
        kind in proptest::sample::select(vec![
            JoinKind::Inner, JoinKind::Left, JoinKind::Right, JoinKind::Full,
            JoinKind::LeftSemi, JoinKind::LeftAnti, JoinKind::RightSemi,
        ]),
        filter in proptest::bool::ANY,
        steps in proptest::collection::vec(
            (
                0usize..2,
                proptest::collection::vec((0u8..12, 0i64..6, proptest::bool::weighted(0.3)), 0..25),
                proptest::bool::weighted(0.2),
            ),
            1..20,
        )
    ) {
        let mut unbounded = Harness::new(spec(kind, true, filter));
        let mut spilling = Harness::with_budget(spec(kind, true, filter), 1200);
        // The left input's rows present now, so a retraction retracts one of them.
        let mut present: Vec<(u8, i64)> = Vec::new();
        let mut spills = 0;
        for (side, rows, restart) in steps {
            let mut text = match side {
                0 => String::from("k:str a:i64 _row_kind:kind\n"),
                _ => String::from("k:str b:i64\n"),
            };
            for (k, v, retract) in rows {
                match side {
                    0 if retract && !present.is_empty() => {
                        let (k, v) = present.swap_remove(usize::from(k) % present.len());
                        text += &format!("k{k} {v} -D\n");
                    }
                    0 => {
                        present.push((k, v));
                        text += &format!("k{k} {v} +I\n");
                    }
                    _ => text += &format!("k{k} {v}\n"),
                }
            }
            unbounded.rows(side, &text);
            spilling.rows(side, &text);
            spills += spilling.table_stats().spills;
            if restart {
                unbounded.restart();
                spilling.restart();
            }
            proptest::prop_assert_eq!(spilling.take_table(), unbounded.take_table());
        }
        proptest::prop_assert!(spills > 0 || present.len() < 10);
    }
}

/// `table.exec.state.ttl`, Flink's semantics: a key not written for the TTL is gone, so a later
/// row of the other input finds nothing (what was emitted is not retracted). A key written in
/// time stays, and so does one that spilled to disk meanwhile.
#[test]
fn rows_of_a_key_not_written_for_the_ttl_no_longer_match() {
    use flowline_common::clock::set_for_tests;
    let mut spec = spec(JoinKind::Inner, false, false);
    spec.state_ttl = Some(std::time::Duration::from_millis(100));
    for budget in [usize::MAX, 400] {
        let mut h = Harness::with_budget(spec.clone(), budget);
        set_for_tests(Some(1_000));
        h.rows(0, "k:str a:i64\n old 1\n kept 2").expect("");
        set_for_tests(Some(1_060));
        h.rows(0, "k:str a:i64\n kept 3").expect("").restart();
        set_for_tests(Some(1_150));
        h.rows(1, "k:str b:i64\n old 10\n kept 20")
            .expect("k a rk b\n kept 2 kept 20\n kept 3 kept 20");
        set_for_tests(Some(1_400));
        h.rows(1, "k:str b:i64\n kept 30").expect("");
    }
    set_for_tests(None);
}
