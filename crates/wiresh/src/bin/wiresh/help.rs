//! `wiresh completions` and `wiresh man`: generated from the one clap
//! definition in `args.rs`, so they never drift from the real flags.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::manual;

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
        out.write_all(&page(cmd, "wiresh")?)?;
        return out.flush().context("cannot write the manual page");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("wiresh".to_string(), page(cmd.clone(), "wiresh")?)];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        // The page is wiresh-exec(1); the command typed is `wiresh exec`.
        let mut command = sub
            .clone()
            .display_name(format!("wiresh-{name}"))
            .bin_name(format!("wiresh {name}"));
        // Its arguments are built on demand (args.rs): now, so that the
        // page sees them.
        command.build();
        pages.push((format!("wiresh-{name}"), page(command, name)?));
    }
    for (name, text) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// The roff of one page: clap's sections, with the synopsis of an
/// overridden usage where clap's would be unreadable (`put LOCAL...
/// REMOTE`), then [`manual::sections`].
fn page(cmd: clap::Command, name: &str) -> Result<Vec<u8>> {
    let usage = cmd.clone().render_usage().to_string();
    let overridden = cmd.get_overridden_usage().is_some();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    if overridden {
        let usage = usage.trim_start_matches("Usage: ").replace('-', "\\-");
        out.extend_from_slice(format!(".SH SYNOPSIS\n{usage}\n").as_bytes());
    } else {
        man.render_synopsis_section(&mut out)?;
    }
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    out.extend_from_slice(manual::sections(name).as_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}
