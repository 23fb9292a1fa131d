//! The job's state memory budget: `taskmanager.memory.managed.size` (`flowline run --memory`),
//! shared by every stateful operator subtask's state tables; past its share a table moves cold
//! entries to local disk.
//!
//! Without the option the budget is 40% of the memory the process may use (Flink's default
//! `taskmanager.memory.managed.fraction`): the cgroup's limit when the process runs in a
//! container (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), else the machine's memory.
//! The rest is for batches in flight, the hot paths' scratch, connectors and the allocator:
//! state that fits the budget runs entirely in memory, as fast as before state tables.

use flowline_planner::{JobGraph, Node};

use crate::{Result, RuntimeError};

pub(crate) const MANAGED_SIZE: &str = "taskmanager.memory.managed.size";
/// Share of the process's memory limit state tables get by default.
const MANAGED_FRACTION: f64 = 0.4;
/// No subtask's tables get less than this, however many there are.
const SUBTASK_BUDGET_MIN: usize = 64 << 10;

/// Bytes each stateful operator subtask's tables may hold in memory.
pub(crate) fn subtask_budget(graph: &JobGraph) -> Result<usize> {
    let total = match graph.config.get(MANAGED_SIZE) {
        Some(v) => flowline_common::options::parse_memory_size(v)
            .map_err(|e| RuntimeError::Config(format!("invalid '{MANAGED_SIZE}' = '{v}': {e}")))?,
        None => (memory_limit() as f64 * MANAGED_FRACTION) as u64,
    };
    let operators: usize = graph
        .pipelines
        .iter()
        .map(|p| p.inputs.iter().map(count_operators).sum::<usize>())
        .sum();
    let subtasks = (operators * graph.parallelism).max(1);
    Ok(((total / subtasks as u64) as usize).max(SUBTASK_BUDGET_MIN))
}

fn count_operators(node: &Node) -> usize {
    match node {
        Node::Source(_) => 0,
        Node::Operator(op) => {
            1 + op
                .inputs
                .iter()
                .flat_map(|i| &i.nodes)
                .map(count_operators)
                .sum::<usize>()
        }
    }
}

/// The memory this process may use: its cgroup's limit, else the machine's memory.
pub fn memory_limit() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        // cgroup v1 writes "no limit" as a huge number.
        .filter(|v| *v < 1 << 60);
    let machine = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => 4 << 30,
    }
}
