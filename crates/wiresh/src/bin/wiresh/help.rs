//! `wiresh completions` and `wiresh man`: generated from the one clap
//! definition in `args.rs`, so they never drift from the real flags.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs};

/// Prints the completion script for one shell on stdout.
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "wiresh", &mut std::io::stdout());
    Ok(())
}

/// Prints `wiresh(1)`, or writes it and one page per subcommand
/// (`wiresh-serve(1)`, ...) into a directory.
pub fn man(args: ManArgs) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = args.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return out.flush().context("cannot write the manual page");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("wiresh".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("wiresh-{}", sub.get_name());
        // clap names are `&'static str`; a one-shot command may leak a few.
        pages.push((name.clone(), sub.clone().name(name.leak() as &str)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
