//! Wall-clock time, read in one place. Processing time (`PROCTIME()`, processing-time partition
//! commits, state TTL, the generators' seeds) comes from here, so a test can fix it
//! ([`set_for_tests`]) and the rest of the code cannot read the system clock behind its back
//! (clippy's `disallowed-methods` refuses `SystemTime::now` elsewhere, see `clippy.toml`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fixed time set by a test (milliseconds), or `i64::MIN` for the system clock.
static FIXED_MS: AtomicI64 = AtomicI64::new(i64::MIN);

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    match FIXED_MS.load(Ordering::Relaxed) {
        i64::MIN => millis(since_epoch(system_now())),
        fixed => fixed,
    }
}

/// Nanoseconds since the Unix epoch (for seeds: not fixed by tests).
pub fn now_nanos() -> u128 {
    since_epoch(system_now()).as_nanos()
}

/// Fixes [`now_millis`] at `ms` (`None`: the system clock again). For tests: the clock is
/// process-wide, and nextest runs each test in its own process.
pub fn set_for_tests(ms: Option<i64>) {
    FIXED_MS.store(ms.unwrap_or(i64::MIN), Ordering::Relaxed);
}

/// Milliseconds of a duration, saturating at `i64::MAX`.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch of a file time (`0` before the epoch).
pub fn millis_of(t: SystemTime) -> i64 {
    millis(since_epoch(t))
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[allow(clippy::disallowed_methods)] // the one place that reads the system clock
fn system_now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_can_fix_the_clock() {
        set_for_tests(Some(42));
        assert_eq!(now_millis(), 42);
        set_for_tests(None);
        assert!(now_millis() > 1_700_000_000_000);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
