//! `ail`: amortised invariance learning for contrastive self-supervision, from the command line.
//!
//! With no arguments it runs the built-in demo on the built-in data.

mod args;
mod bench;
mod common;
mod grid;
mod info;
mod preview;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => preview::demo(&cli.global),
        Some(args::Command::AugmentPreview(a)) => preview::run(&cli.global, &a),
        Some(args::Command::Bench(b)) => bench::run(&cli.global, &b),
        Some(args::Command::Info(a)) => info::run(&cli.global, &a),
    }?;
    Ok(ExitCode::SUCCESS)
}
