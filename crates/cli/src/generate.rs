//! `datapunk generate`: the manual pages and shell completions, made from the same command
//! definitions that parse the arguments, so that they cannot drift from the program.
//!
//! Packagers run it once at build time (the Nix package does); it is hidden from `--help`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, Subcommand};
use clap_complete::Shell;
use clap_mangen::Man;
use datapunk_daemon::args::{Args as DaemonArgs, MANUAL_SECTIONS};
use roff::{Roff, bold, roman};

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Write the manual pages of `datapunk`, of each of its commands and of `datapunkd` into DIR.
    Man {
        /// The directory to write `datapunk.1`, `datapunk-backup.1`, ..., `datapunkd.1` into; it
        /// is created.
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
                .and_then(|()| write_daemon_page(&dir))
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

/// `datapunkd.1`: what clap knows of the daemon's command line, with its signals, exit
/// statuses, environment and files put in before the version.
fn write_daemon_page(dir: &Path) -> std::io::Result<()> {
    let man = Man::new(DaemonArgs::command());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let page = String::from_utf8(page).map_err(std::io::Error::other)?;

    let mut extra = Roff::new();
    for (heading, entries) in MANUAL_SECTIONS {
        extra.control("SH", [*heading]);
        for (term, meaning) in *entries {
            extra.control("TP", []).text([bold(*term)]).text([roman(*meaning)]);
        }
    }
    // Every rendering starts with the same preamble; the page has it already.
    let extra = extra.render();
    let extra = extra.strip_prefix(&Roff::new().render()).unwrap_or(&extra);
    let at = page.find(".SH VERSION").unwrap_or(page.len());
    let page = format!("{}{extra}{}", &page[..at], &page[at..]);
    std::fs::write(dir.join(man.get_filename()), page)
}
