//! `ail bench`: speed against a baseline measured in the same run. This module only dispatches:
//! each subcommand is a submodule, and they share the leaf modules `timing` and `torch`.

use crate::args::{BenchCommand, Global};

mod augment;
mod device;
mod fit;
mod pretrain;
mod profile;
mod timing;
mod torch;

pub fn run(global: &Global, command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Augment(args) => augment::run(global, args),
        BenchCommand::Device(args) => device::run(global, args),
        BenchCommand::Pretrain(args) => pretrain::run(global, args),
        BenchCommand::Profile(args) => profile::run(global, args),
        BenchCommand::Fit(args) => fit::run(global, args),
    }
}
