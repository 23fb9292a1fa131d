//! Planner goldens: every `tests/plans/*.sql` script is planned and its `flowline explain`
//! output compared with the checked-in `*.plan` next to it; an `error_*.sql` script must fail to
//! plan, with the error text in `*.err`. `FLOWLINE_BLESS=1 cargo test plans::` writes the
//! expected files from what the planner does now (review the diff before committing it).

use std::path::{Path, PathBuf};

fn plans_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/plans")
}

/// What the planner makes of `script`: the explain text, or the error (with its causes).
async fn outcome(script: &str) -> Result<String, String> {
    match flowline_planner::plan_script(script, Some(2)).await {
        Ok(graph) => Ok(graph.explain(false)),
        Err(e) => Err(format!("{e:#}\n")),
    }
}

#[test]
fn planner_goldens() {
    let rt = crate::support::runtime();
    let bless = std::env::var_os("FLOWLINE_BLESS").is_some();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(plans_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "tests/plans has its cases");
    let mut failures = Vec::new();
    for script in &scripts {
        let name = script.file_stem().unwrap().to_string_lossy().into_owned();
        let expects_error = name.starts_with("error_");
        let expected_path = script.with_extension(if expects_error { "err" } else { "plan" });
        let text = std::fs::read_to_string(script).unwrap();
        let actual = match (rt.block_on(outcome(&text)), expects_error) {
            (Ok(plan), false) | (Err(plan), true) => plan,
            (Ok(plan), true) => {
                failures.push(format!(
                    "{name}: planned, but an error was expected:\n{plan}"
                ));
                continue;
            }
            (Err(e), false) => {
                failures.push(format!("{name}: failed to plan: {e}"));
                continue;
            }
        };
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: the plan changed.\n--- expected ({})\n{expected}--- actual\n{actual}",
                expected_path.display()
            )),
            Err(_) => failures.push(format!("{name}: no {} yet", expected_path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended: FLOWLINE_BLESS=1 cargo test plans:: and review the diff.",
        failures.join("\n\n")
    );
}
