//! The settings of `wiresh serve`: the command line, the environment and
//! the config file, merged with one rule — a flag beats an environment
//! variable, which beats the file, which beats the default.
//!
//! The file (`--config FILE`, else `$WIRESH_HOME/server.toml` when it
//! exists) takes every `serve` flag under its own name, `listen =
//! "0.0.0.0:7878"`, `max-connections = 64`, `allow-plaintext = true`. Its
//! entries are turned into the flags they name and parsed by the same clap
//! definition as the command line, so a setting means the same, with the
//! same checks, wherever it is written.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches};
use wiresh::config_file::{suggest, ConfigFile, Value};
use wiresh::home;

use crate::args::{Cli, Command, ServeArgs};

/// Name of the default server config file in `$WIRESH_HOME`.
pub const SERVER_CONFIG: &str = "server.toml";

/// Flags that only make sense on the command line.
const NOT_IN_FILE: [&str; 3] = ["config", "check", "help"];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    /// The config file, at this line.
    File(usize),
    Default,
}

/// The merged settings.
pub struct Settings {
    pub args: ServeArgs,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Each setting (by flag name) and its effective value as text, with
    /// where it came from; `None` for an option left unset.
    pub values: Vec<(String, Option<String>, Source)>,
}

/// The `serve` command line as typed (the words after `serve`).
pub fn command_line() -> Vec<OsString> {
    std::env::args_os().skip(2).collect()
}

/// Reads the settings from the command line `words` (after `serve`), the
/// environment and the config file.
pub fn load(words: &[OsString]) -> Result<Settings> {
    let typed = serve_matches(words)?;
    let (file, explicit) = match typed.get_one::<PathBuf>("config") {
        Some(path) => (Some(path.clone()), true),
        None => {
            let default = home::wiresh_home()?.join(SERVER_CONFIG);
            (default.exists().then_some(default), false)
        }
    };
    let mut from_file = BTreeMap::new();
    let mut argv: Vec<OsString> = vec!["wiresh".into(), "serve".into()];
    if let Some(path) = &file {
        let config = ConfigFile::read(path, "server config file").map_err(|e| {
            if explicit {
                anyhow!(e)
            } else {
                anyhow!("{e} (the default config file; pass --config FILE to use another)")
            }
        })?;
        for entry in &config.entries {
            let words = file_entry(&config, &typed, &entry.key, &entry.value, entry.line)?;
            if let Some(words) = words {
                from_file.insert(entry.key.clone(), entry.line);
                argv.extend(words);
            }
        }
    }
    argv.extend(words.iter().cloned());
    let merged = serve_matches(&argv[2..])?;
    let args = ServeArgs::from_arg_matches(&merged)?;
    let values = serve_command()
        .get_arguments()
        .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
        .map(|arg| {
            let id = arg.get_id().as_str();
            let name = arg.get_long().unwrap_or(id).to_string();
            let source = match typed.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => from_file
                    .get(&name)
                    .map_or(Source::Default, |&line| Source::File(line)),
            };
            let value = merged.get_raw(id).map(|raw| {
                raw.map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            (name, value, source)
        })
        .collect();
    Ok(Settings { args, file, values })
}

/// The flags of `serve`, from the one clap definition (built here: the
/// subcommand builds its flags only when it is parsed).
fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("serve"))
}

/// Parses `serve WORDS` with the real definition; a mistake is clap's
/// usual error.
fn serve_matches(words: &[OsString]) -> Result<ArgMatches> {
    let argv = [OsString::from("wiresh"), OsString::from("serve")]
        .into_iter()
        .chain(words.iter().cloned());
    let matches = Cli::command().try_get_matches_from(argv)?;
    match Cli::from_arg_matches(&matches)?.command {
        Command::Serve(_) => Ok(matches
            .subcommand_matches("serve")
            .expect("serve was parsed")
            .clone()),
        _ => unreachable!("the words were given to serve"),
    }
}

/// The flag words for one `key = value` of the file; `None` when the
/// command line or the environment already sets it (they win).
fn file_entry(
    file: &ConfigFile,
    typed: &ArgMatches,
    key: &str,
    value: &Value,
    line: usize,
) -> Result<Option<Vec<OsString>>> {
    let cmd = serve_command();
    let Some(arg) = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(key) && !NOT_IN_FILE.contains(&a.get_id().as_str()))
    else {
        let known = cmd
            .get_arguments()
            .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
            .filter_map(|a| a.get_long());
        let hint = match suggest(key, known) {
            Some(k) => format!("did you mean `{k}`?"),
            None => "the keys are the names of `wiresh serve`'s flags without the dashes \
                     (see `wiresh serve --help`)"
                .to_string(),
        };
        return Err(file
            .error(line, format!("unknown key `{key}`; {hint}"))
            .into());
    };
    let flag = format!("--{key}");
    let words = if matches!(arg.get_action(), ArgAction::SetTrue) {
        match value {
            Value::Boolean(true) => vec![OsString::from(&flag)],
            Value::Boolean(false) => vec![],
            other => {
                return Err(file
                    .error(
                        line,
                        format!("`{key}` is true or false, not {}", describe(other)),
                    )
                    .into())
            }
        }
    } else {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Integer(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            other => {
                return Err(file
                    .error(
                        line,
                        format!(
                            "`{key}` takes a string or a number, not {}",
                            describe(other)
                        ),
                    )
                    .into())
            }
        };
        // The same check as on the command line, reported at the line.
        if let Err(e) = serve_matches(&[OsString::from(&flag), OsString::from(&text)]) {
            let why = e.to_string();
            let why = why
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            return Err(file.error(line, format!("`{key}`: {why}")).into());
        }
        vec![OsString::from(&flag), OsString::from(text)]
    };
    let given = matches!(
        typed.value_source(arg.get_id().as_str()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    Ok((!given).then_some(words))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}
