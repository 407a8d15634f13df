//! `cbuild man [COMMAND]`: the manual page in roff (`cbuild man > cbuild.1`, `man ./cbuild.1`), made
//! by clap_mangen from the same clap definitions as `--help`; `--dir DIR` writes `cbuild.1` and one
//! `cbuild-<command>.1` per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The subcommand whose page to print (`cbuild-build(1)`); without it, `cbuild(1)`.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Write every page (cbuild.1, cbuild-build.1, ...) into DIR instead of printing one.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: ManArgs, cmd: clap::Command) -> Result<ExitCode, Failure> {
    // A page has room for every option: show those `-h` leaves out, with their help.
    fn unhide(c: clap::Command) -> clap::Command {
        c.mut_args(|a| a.hide_short_help(false)).mut_subcommands(unhide)
    }
    let mut cmd = unhide(cmd).disable_help_subcommand(true);
    cmd.build();
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir).map_err(|e| Failure::env(anyhow::anyhow!("creating `{}`: {e}", dir.display())))?;
        clap_mangen::generate_to(cmd, dir)
            .map_err(|e| Failure::env(anyhow::anyhow!("writing manual pages to `{}`: {e}", dir.display())))?;
        return Ok(ExitCode::SUCCESS);
    }
    let page = match &a.command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                return Err(Failure::user_hint(
                    format!("no subcommand `{name}`"),
                    format!("pages exist for: {}", names.join(", ")),
                ));
            }
        },
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).map_err(Failure::env)?;
    crate::out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}
