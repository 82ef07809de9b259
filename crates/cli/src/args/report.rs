//! `ail pareto` and `ail report`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ParetoArgs {
    /// fit.json files (or the directories holding them).
    #[arg(long, required = true, num_args = 1..)]
    pub fit: Vec<PathBuf>,
    /// Directory for pareto.csv, pareto-parameters.svg and pareto-time.svg.
    #[arg(long, default_value = "runs/pareto")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Pretraining run directories, fit/fewshot/lowshot output directories (or their JSON files),
    /// and `ail measure` / `ail interpolate` output directories.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The markdown file to write (plots it makes go beside it).
    #[arg(long, default_value = "runs/report.md")]
    pub out: PathBuf,
}
