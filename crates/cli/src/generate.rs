//! `datapunk generate`: the manual pages and shell completions, made from the same command
//! definitions that parse the arguments, so that they cannot drift from the program.
//!
//! Packagers run it once at build time (the Nix package does); it is hidden from `--help`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory as _, Subcommand};
use clap_complete::Shell;

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Write a manual page for `datapunk` and one for each of its commands into DIR.
    Man {
        /// The directory to write `datapunk.1`, `datapunk-backup.1`, ... into; it is created.
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on standard output.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: Shell,
    },
}

pub(crate) fn run(command: GenerateCommand) -> anyhow::Result<()> {
    let mut cli = crate::Args::command();
    match command {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("failed to write the manual pages to {}", dir.display()))
        }
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let name = cli.get_name().to_owned();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli, name, &mut script);
            std::io::stdout().write_all(&script).context("failed to write the completions")
        }
    }
}
