//! `cbuild completions bash|zsh|fish|elvish|powershell`: a completion script for the shell, made by
//! clap_complete from the same clap definitions as `--help`.

use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the script for `cmd` (the whole command line, `cbuild` and its subcommands) to stdout.
pub fn run(a: CompletionsArgs, mut cmd: clap::Command) -> Result<ExitCode, Failure> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cbuild", &mut out);
    crate::out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}
