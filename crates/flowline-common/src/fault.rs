//! Whose fault an error is, so the one who can fix it is told: the user (bad SQL, a bad option,
//! a bad row), something outside Flowline (a broker down, a full disk: maybe worth retrying),
//! or Flowline itself (a bug, said so).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Bad SQL, a bad option, bad input data: the user fixes the script or the data.
    User,
    /// Something outside Flowline failed (a broker, a disk, a remote store); `retryable` when
    /// running again may succeed without changing anything.
    External { retryable: bool },
    /// A bug in Flowline.
    Internal,
}

impl Fault {
    /// The process exit code for a job that failed with this fault: 2 for the user's, 3 for an
    /// external one that may pass on a retry, 4 for one that will not, 70 (EX_SOFTWARE) for a bug.
    pub fn exit_code(self) -> u8 {
        match self {
            Fault::User => 2,
            Fault::External { retryable: true } => 3,
            Fault::External { retryable: false } => 4,
            Fault::Internal => 70,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::User => "in the script or its input",
            Fault::External { retryable: true } => "outside Flowline, may pass on a retry",
            Fault::External { retryable: false } => "outside Flowline",
            Fault::Internal => "a bug in Flowline",
        })
    }
}
