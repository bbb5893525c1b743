//! `chunkedgraph bench ...`: measured, not asserted.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Our emulator against cbtemulator through the same client.
    Bigtable,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bigtable => anyhow::bail!("not yet"),
    }
}
