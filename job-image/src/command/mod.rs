//! The command line beyond clap's declarations: the stage functions every command shares, the
//! local commands (`run`, `backfill`), the configuration file, progress and readable summaries.

pub mod backfill;
pub mod config;
pub mod report;
pub mod run;
pub mod stages;
pub mod ui;
