//! The one integration-test binary (every file under tests/ would link the whole engine again).

mod bad_input;
mod changelog_formats;
mod checkpoint;
mod event_time;
mod functions;
mod golden;
mod materialized;
mod nexmark;
mod oracle;
mod over_oracle;
mod plans;
mod serving;
mod support;
mod two_jobs;
mod updating_oracle;
mod window_oracle;
