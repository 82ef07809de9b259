//! The `ail` command line as a library: the binary (`src/main.rs`) dispatches to these modules.
//! Each command module turns its arguments (`args`) into the library's configs and prints what it
//! returns; the work itself is in `ail-core`, `ail-augment` and `ail-data`.

pub mod args;
pub mod batchnorm;
pub mod bench;
pub mod bound;
pub mod common;
pub mod compare;
pub mod downstream;
pub mod export;
pub mod fewshot;
pub mod finetune;
pub mod fit;
pub mod grid;
pub mod info;
pub mod interop;
pub mod lowshot;
pub mod measure;
pub mod parse;
pub mod pretrain;
pub mod preview;
pub mod progress;
pub mod report;
pub mod svg;
