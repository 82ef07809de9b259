//! The `ail` command line as a library: the binary (`src/main.rs`) dispatches to these modules, and
//! the fuzz targets (`fuzz/`) reach the config parser through them.

pub mod args;
pub mod bench;
pub mod common;
pub mod downstream;
pub mod export;
pub mod grid;
pub mod info;
pub mod measure;
pub mod parallel;
pub mod pretrain;
pub mod profile;
pub mod preview;
pub mod report;
pub mod svg;
pub mod task;
