//! The client's settings, `$WIRESH_HOME/client.toml` (or `--config FILE`):
//! how to reach each host, groups of hosts, and the defaults, in one file
//! read by one reader (the role `~/.ssh/config` plays for ssh).
//!
//! ```toml
//! [defaults]                           # for every host without its own
//! host = "web01"                       # the host when none is named ($WIRESH_HOST wins)
//! port = 7900
//! key = "keys/ops.key"                 # "none": present no key
//! token-file = "tokens/all"
//!
//! [groups]
//! web = ["web[01-20]", "web-canary"]   # or one string: "web[01-20],web-canary"
//! db = "db[1-2]"
//!
//! [hosts."web[01-20]"]                 # a name or a host list
//! port = 7900
//! token-file = "tokens/web"            # relative to this file's directory
//!
//! [hosts.db1]
//! address = "10.0.0.5"                 # connect here; `db1` names it in output
//! fingerprint = "sha256:4242cd48..."   # pinned in advance, as --fingerprint
//! key = "keys/db.key"
//! ```
//!
//! Keys are spelled as in `server.toml` (kebab-case). Unknown keys are
//! refused with their line and the key meant, so a typo is an error
//! rather than a silently ignored setting.
//!
//! The two files of earlier releases are read for one release more:
//! `client.toml` was already this format; `hosts.toml` (and a file given
//! with `--inventory`) spelled `token_file`. Reading one gives a warning
//! that says how to move it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config_file::{parse_duration, suggest, ConfigFile, Value};
use crate::error::SetupError;
use crate::hostlist;
use crate::tls::Fingerprint;

/// Name of the settings file inside the wiresh home directory.
pub const SETTINGS_FILE: &str = "client.toml";

/// Name of the inventory of earlier releases, read for one more release.
pub const OLD_INVENTORY_FILE: &str = "hosts.toml";

/// What the file is called in messages.
const WHAT: &str = "client settings file";

/// The keys of a `[hosts."NAME"]` table.
const HOST_KEYS: [&str; 6] = [
    "address",
    "port",
    "fingerprint",
    "key",
    "token-file",
    "persist",
];

/// The keys of `[defaults]`.
const DEFAULT_KEYS: [&str; 5] = ["host", "port", "key", "token-file", "persist"];

/// The tables of the file.
const TABLES: [&str; 3] = ["defaults", "groups", "hosts"];

/// What `key` takes to mean "present no key" (as ssh's `IdentityFile none`).
pub const NO_KEY: &str = "none";

/// How to reach one host, where the file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// The address to connect to, when it is not the host's name.
    pub address: Option<String>,
    /// The server's port.
    pub port: Option<u16>,
    /// The server's TLS fingerprint, pinned in advance.
    pub fingerprint: Option<Fingerprint>,
    /// The client key to present ([`NO_KEY`]: none).
    pub key: Option<PathBuf>,
    /// Where the host's token is.
    pub token_file: Option<PathBuf>,
    /// Keep a master for the host (ssh's ControlPersist): how long it
    /// stays without clients; zero (`persist = "no"`) for none.
    pub persist: Option<Duration>,
}

/// Which spelling a file is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `client.toml` as it is now.
    Current,
    /// The `hosts.toml` of earlier releases: `token_file`, no defaults.
    OldInventory,
}

/// The settings, read: groups expanded to host names, settings per host.
#[derive(Debug, Default)]
pub struct Inventory {
    /// The files read, in order (none: no settings at all).
    files: Vec<PathBuf>,
    groups: BTreeMap<String, Vec<String>>,
    hosts: HashMap<String, HostSettings>,
    defaults: HostSettings,
    default_host: Option<String>,
    warnings: Vec<String>,
}

/// Where each setting came from, to name both places when two set it.
#[derive(Default)]
struct Origins {
    hosts: HashMap<(String, &'static str), String>,
    groups: HashMap<String, String>,
}

impl Inventory {
    /// The home's settings: `client.toml`, and for this release
    /// `hosts.toml` with a warning; nothing when neither exists.
    pub fn load_home(home: &Path) -> Result<Inventory, SetupError> {
        let current = home.join(SETTINGS_FILE);
        let old = home.join(OLD_INVENTORY_FILE);
        let mut inventory = Inventory::default();
        let mut origins = Origins::default();
        let current_text = read_if_exists(&current)?;
        if let Some(text) = &current_text {
            inventory.read(&current, text.clone(), Dialect::Current, &mut origins)?;
        }
        if let Some(text) = read_if_exists(&old)? {
            inventory.read(&old, text.clone(), Dialect::OldInventory, &mut origins)?;
            let merged = format!("{}\n{}", current_text.unwrap_or_default(), respell(&text));
            let check = Inventory::parse(&merged, &current).err();
            inventory.warnings.push(move_warning(&old, &current, check));
        }
        Ok(inventory)
    }

    /// A settings file named on the command line (`--config FILE`).
    pub fn load(path: &Path) -> Result<Inventory, SetupError> {
        let text = crate::home::read_text(path, WHAT)?;
        Inventory::parse(&text, path)
    }

    /// An inventory of earlier releases named with `--inventory FILE`:
    /// read for this release, with a warning.
    pub fn load_old(path: &Path) -> Result<Inventory, SetupError> {
        let text = crate::home::read_text(path, WHAT)?;
        let mut inventory = Inventory::default();
        inventory.read(path, text, Dialect::OldInventory, &mut Origins::default())?;
        inventory.warnings.push(format!(
            "--inventory is read for this release only: pass the file with --config instead, \
             with `token_file` spelled `token-file` as in server.toml: {}",
            respell_command(path)
        ));
        Ok(inventory)
    }

    /// Parses a settings file's text; `path` is where it came from, for
    /// messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, SetupError> {
        let mut inventory = Inventory::default();
        inventory.read(
            path,
            text.to_string(),
            Dialect::Current,
            &mut Origins::default(),
        )?;
        Ok(inventory)
    }

    /// Adds one file's settings; a setting given twice is an error.
    fn read(
        &mut self,
        path: &Path,
        text: String,
        dialect: Dialect,
        origins: &mut Origins,
    ) -> Result<(), SetupError> {
        let file = ConfigFile::parse(path, WHAT, text)?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.files.push(path.to_path_buf());
        for entry in &file.entries {
            let Value::Table(table) = &entry.value else {
                return Err(file.error(entry.line, top_level_hint(&entry.key)));
            };
            match (entry.key.as_str(), dialect) {
                ("defaults", Dialect::Current) => {
                    self.read_defaults(&file, entry.line, table, &base)?
                }
                ("groups", _) => self.read_groups(&file, entry.line, table, origins)?,
                ("hosts", _) => {
                    for (key, settings) in table {
                        let Value::Table(settings) = settings else {
                            return Err(file.error(
                                entry.line,
                                format!("hosts.{key} must be a table: [hosts.\"{key}\"]"),
                            ));
                        };
                        let header = table_line(&file, entry.line, key);
                        let parsed = host_settings(&file, header, key, settings, &base, dialect)?;
                        self.add_host(&file, header, key, parsed, origins)?;
                    }
                }
                _ => return Err(file.error(entry.line, top_level_hint(&entry.key))),
            }
        }
        Ok(())
    }

    fn read_defaults(
        &mut self,
        file: &ConfigFile,
        line: usize,
        table: &toml::Table,
        base: &Path,
    ) -> Result<(), SetupError> {
        let mut rest = table.clone();
        if let Some(host) = rest.remove("host") {
            let at = file.line_in_table(line, "host");
            let Value::String(host) = host else {
                return Err(file.error(at, "`host` in [defaults]: must be a string"));
            };
            hostlist::expand(&host)
                .map_err(|e| file.error(at, format!("`host` in [defaults]: {e}")))?;
            self.default_host = Some(host);
        }
        if let Some(key) = rest.keys().find(|k| !DEFAULT_KEYS.contains(&k.as_str())) {
            let at = file.line_in_table(line, key);
            return Err(file.error(at, unknown_key(key, "[defaults]", &DEFAULT_KEYS)));
        }
        self.defaults = host_settings(file, line, "[defaults]", &rest, base, Dialect::Current)?;
        Ok(())
    }

    fn read_groups(
        &mut self,
        file: &ConfigFile,
        line: usize,
        table: &toml::Table,
        origins: &mut Origins,
    ) -> Result<(), SetupError> {
        for (name, members) in table {
            let at = file.line_in_table(line, name);
            let lists: Vec<&str> = match members {
                Value::String(list) => vec![list],
                Value::Array(lists) => lists
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| file.error(at, format!("group {name:?}: a list of strings")))?,
                _ => {
                    return Err(
                        file.error(at, format!("group {name:?}: a string or a list of strings"))
                    )
                }
            };
            let mut hosts = Vec::new();
            for list in lists {
                let names = hostlist::expand(list)
                    .map_err(|e| file.error(at, format!("group {name:?}: {e}")))?;
                hosts.extend(names);
            }
            let here = format!("{} line {at}", file.path.display());
            if let Some(earlier) = origins.groups.insert(name.clone(), here.clone()) {
                return Err(file.error(
                    at,
                    format!("group {name:?} is also defined at {earlier}; keep one"),
                ));
            }
            self.groups.insert(name.clone(), hosts);
        }
        Ok(())
    }

    /// Gives every host of `key` (a host list) the settings of its table.
    fn add_host(
        &mut self,
        file: &ConfigFile,
        line: usize,
        key: &str,
        settings: HostSettings,
        origins: &mut Origins,
    ) -> Result<(), SetupError> {
        let names =
            hostlist::expand(key).map_err(|e| file.error(line, format!("hosts.{key:?}: {e}")))?;
        let here = format!("{} line {line}", file.path.display());
        for name in names {
            let merged = self.hosts.entry(name.clone()).or_default();
            let fields: [(&'static str, bool); 6] = [
                ("address", settings.address.is_some()),
                ("port", settings.port.is_some()),
                ("fingerprint", settings.fingerprint.is_some()),
                ("key", settings.key.is_some()),
                ("token-file", settings.token_file.is_some()),
                ("persist", settings.persist.is_some()),
            ];
            for (field, set) in fields {
                if !set {
                    continue;
                }
                if let Some(earlier) = origins.hosts.insert((name.clone(), field), here.clone()) {
                    return Err(file.error(
                        line,
                        format!("host {name:?} gets `{field}` here and at {earlier}; keep one"),
                    ));
                }
            }
            merged.address = merged.address.take().or(settings.address.clone());
            merged.port = merged.port.or(settings.port);
            merged.fingerprint = merged.fingerprint.take().or(settings.fingerprint.clone());
            merged.key = merged.key.take().or(settings.key.clone());
            merged.token_file = merged.token_file.take().or(settings.token_file.clone());
            merged.persist = merged.persist.or(settings.persist);
        }
        Ok(())
    }

    /// The hosts of group `name` (`-g NAME`).
    pub fn group(&self, name: &str) -> Result<&[String], SetupError> {
        self.lookup(name)
            .map_err(|why| SetupError::Usage(format!("-g {name}: {why}")))
    }

    /// The hosts of group `name`, or why there are none.
    fn lookup(&self, name: &str) -> Result<&[String], String> {
        if let Some(hosts) = self.groups.get(name) {
            return Ok(hosts);
        }
        if self.files.is_empty() {
            return Err(format!(
                "no such group {name}: there are no client settings; write the group in \
                 $WIRESH_HOME/{SETTINGS_FILE} (or pass --config FILE), e.g. [groups] {name} = \"web[01-20]\""
            ));
        }
        let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        Err(format!(
            "no such group {name} in {} (groups: {})",
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    }

    /// The settings of host `name` (empty when it has none).
    pub fn host(&self, name: &str) -> Option<&HostSettings> {
        self.hosts.get(name)
    }

    /// The settings for hosts without their own.
    pub fn defaults(&self) -> &HostSettings {
        &self.defaults
    }

    /// The host when none is named (`[defaults] host`).
    pub fn default_host(&self) -> Option<&str> {
        self.default_host.as_deref()
    }

    /// What the user should know about the files read (an old file and
    /// how to move it); the caller shows them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `@group` in a host list (`-H @web`, `-x @db`) is a settings group.
impl hostlist::Groups for Inventory {
    fn group(&self, name: &str) -> Result<Vec<String>, String> {
        self.lookup(name).map(<[String]>::to_vec)
    }
}

/// The text of `path`, or `None` when it does not exist.
fn read_if_exists(path: &Path) -> Result<Option<String>, SetupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SetupError::File {
            action: "read",
            what: WHAT,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The line of the `[hosts."KEY"]` header at or after `from`.
fn table_line(file: &ConfigFile, from: usize, key: &str) -> usize {
    file.line_where(from, |l| {
        l.starts_with("[hosts.")
            && (l.contains(&format!("\"{key}\"")) || l.contains(&format!(".{key}]")))
    })
    .unwrap_or(from)
}

/// One host's table (or `[defaults]`, named `name`), checked key by key.
fn host_settings(
    file: &ConfigFile,
    header: usize,
    name: &str,
    table: &toml::Table,
    base: &Path,
    dialect: Dialect,
) -> Result<HostSettings, SetupError> {
    let mut host = HostSettings::default();
    for (key, value) in table {
        let line = file.line_in_table(header, key);
        let wrong = |what: &str| file.error(line, format!("`{key}` for {name:?}: {what}"));
        let text = || value.as_str().ok_or_else(|| wrong("must be a string"));
        let token_key = match dialect {
            Dialect::Current => "token-file",
            Dialect::OldInventory => "token_file",
        };
        match key.as_str() {
            "address" => host.address = Some(text()?.to_string()),
            "port" => {
                let port = value
                    .as_integer()
                    .ok_or_else(|| wrong("a port is a number"))?;
                host.port = Some(
                    u16::try_from(port)
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| wrong("a port is 1 to 65535"))?,
                );
            }
            "fingerprint" => {
                host.fingerprint = Some(text()?.parse().map_err(|e| wrong(&format!("{e}")))?)
            }
            "key" => {
                host.key = Some(match text()? {
                    NO_KEY => PathBuf::from(NO_KEY),
                    path => base.join(path),
                })
            }
            k if k == token_key => host.token_file = Some(base.join(text()?)),
            "persist" => host.persist = Some(persist(value).map_err(|why| wrong(&why))?),
            other => {
                let place = format!("{name:?}");
                return Err(file.error(line, unknown_key(other, &place, &HOST_KEYS)));
            }
        }
    }
    Ok(host)
}

/// A `persist` setting: a duration (`"10m"`, `"1h 30m"`, or seconds as a
/// number or a string, as `--persist` takes them), or `"no"` for none.
fn persist(value: &Value) -> Result<Duration, String> {
    let wrong = || "a duration such as \"10m\" or \"1h\", or \"no\"".to_string();
    match value {
        Value::Integer(secs) => u64::try_from(*secs)
            .map(Duration::from_secs)
            .map_err(|_| wrong()),
        Value::String(text) if text.trim() == "no" => Ok(Duration::ZERO),
        Value::String(text) => parse_duration(text).map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

/// "unknown key" with the key meant, or the keys there are.
fn unknown_key(key: &str, place: &str, known: &[&str]) -> String {
    let hint = suggest(key, known.iter().copied())
        .map(|k| format!("did you mean `{k}`?"))
        .unwrap_or_else(|| format!("the keys are {}", known.join(", ")));
    format!("unknown key `{key}` for {place}; {hint}")
}

/// What to write instead of an unknown top-level key.
fn top_level_hint(key: &str) -> String {
    let hint = suggest(key, TABLES)
        .map(|k| format!("did you mean [{k}]?"))
        .unwrap_or_else(|| {
            "the file holds [defaults], [groups] and [hosts.\"NAME\"] tables".into()
        });
    format!("unexpected `{key}`; {hint}")
}

/// An old inventory's text in the current spelling: `token_file` becomes
/// `token-file`, as [`respell_command`]'s `sed` does it.
fn respell(text: &str) -> String {
    text.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let rest = &line[indent..];
            match rest.strip_prefix("token_file") {
                Some(after) if after.trim_start_matches(' ').starts_with('=') => {
                    format!("{}token-file{after}", &line[..indent])
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `sed` that respells an old inventory (as [`respell`]) to stdout.
fn respell_command(path: &Path) -> String {
    format!(
        "sed 's/^\\( *\\)token_file\\( *\\)=/\\1token-file\\2=/' {}",
        shell_word(path)
    )
}

/// The warning for an old `hosts.toml`: the commands that move it, and
/// what would still need fixing after them (`check`: the merged text's
/// error, if any).
fn move_warning(old: &Path, current: &Path, check: Option<SetupError>) -> String {
    let mut text = format!(
        "{} is read for this release only: groups and host settings now live in {}, with \
         `token_file` spelled `token-file` as in server.toml. Move them with:\n    {} >> {} && rm {}",
        old.display(),
        current.display(),
        respell_command(old),
        shell_word(current),
        shell_word(old),
    );
    if let Some(e) = check {
        text.push_str(&format!("\nthen fix what the two files both set: {e}"));
    }
    text
}

/// A path as one shell word.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, String> {
        Inventory::parse(text, Path::new("/inv/client.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn groups_hosts_and_defaults() {
        let fp = format!("sha256:{}", "AB".repeat(32));
        let inv = parse(&format!(
            r#"
            [defaults]
            host = "web01"
            port = 7000
            key = "none"

            [groups]
            web = ["web[01-03]", "canary"]
            db = "db[1-2]"

            [hosts."web[01-03]"]
            port = 7900
            token-file = "tokens/web"

            [hosts.web02]
            fingerprint = "{fp}"
            address = "10.1.2.3"
            key = "keys/w.key"
            "#
        ))
        .unwrap();
        assert_eq!(
            inv.group("web").unwrap(),
            ["web01", "web02", "web03", "canary"]
        );
        assert_eq!(inv.group("db").unwrap(), ["db1", "db2"]);
        let web02 = inv.host("web02").unwrap();
        assert_eq!(web02.port, Some(7900));
        assert_eq!(web02.token_file, Some(PathBuf::from("/inv/tokens/web")));
        assert_eq!(
            web02.fingerprint.as_ref().unwrap().as_str(),
            fp.to_ascii_lowercase()
        );
        assert_eq!(web02.address.as_deref(), Some("10.1.2.3"));
        assert_eq!(web02.key, Some(PathBuf::from("/inv/keys/w.key")));
        assert!(inv.host("canary").is_none());
        assert_eq!(inv.default_host(), Some("web01"));
        assert_eq!(inv.defaults().port, Some(7000));
        assert_eq!(inv.defaults().key, Some(PathBuf::from(NO_KEY)));
        let err = inv.group("nope").unwrap_err();
        assert!(matches!(err, SetupError::Usage(_)), "{err:?}");
        assert!(err.to_string().contains("groups: db, web"), "{err}");
    }

    #[test]
    fn persist_is_a_duration_or_no() {
        let inv = parse(
            "[defaults]\npersist = \"10m\"\n[hosts.a]\npersist = 90\n[hosts.b]\npersist = \"no\"\n[hosts.c]\npersist = \"90\"\n",
        )
        .unwrap();
        assert_eq!(inv.defaults().persist, Some(Duration::from_secs(600)));
        assert_eq!(
            inv.host("a").unwrap().persist,
            Some(Duration::from_secs(90))
        );
        assert_eq!(inv.host("b").unwrap().persist, Some(Duration::ZERO));
        // A number in quotes means seconds, as `--persist 90` does.
        assert_eq!(
            inv.host("c").unwrap().persist,
            Some(Duration::from_secs(90))
        );
        let err = parse("[hosts.a]\npersist = \"soon\"\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("a duration such as"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_the_line() {
        for (text, want) in [
            ("port = 1\n", "line 1: unexpected `port`"),
            (
                "[host.a]\nport = 1\n",
                "line 1: unexpected `host`; did you mean [hosts]?",
            ),
            (
                "[hosts.a]\nprot = 1\n",
                "line 2: unknown key `prot` for \"a\"; did you mean `port`?",
            ),
            (
                "[hosts.a]\ntoken_file = \"t\"\n",
                "line 2: unknown key `token_file` for \"a\"; did you mean `token-file`?",
            ),
            (
                "[hosts.\"a\"]\n\nport = 70000\n",
                "line 3: `port` for \"a\": a port is 1 to 65535",
            ),
            (
                "[hosts.a]\nfingerprint = \"abc\"\n",
                "line 2: `fingerprint` for \"a\": \"abc\" is not a fingerprint",
            ),
            (
                "[hosts.a]\nkey = 3\n",
                "line 2: `key` for \"a\": must be a string",
            ),
            (
                "[hosts.a]\nport = 1\n[hosts.b]\nport = 0\n",
                "line 4: `port` for \"b\"",
            ),
            ("[groups]\nweb = \"web[3-1]\"\n", "line 2: group \"web\""),
            (
                "[defaults]\naddress = \"x\"\n",
                "line 2: unknown key `address` for [defaults]",
            ),
            (
                "[defaults]\nhost = \"w[\"\n",
                "line 2: `host` in [defaults]",
            ),
            (
                "[hosts.\"a[1-2]\"]\nport = 1\n[hosts.a2]\nport = 2\n",
                "host \"a2\" gets `port` here and at /inv/client.toml line ",
            ),
            ("not toml [", "line 1"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("/inv/client.toml"), "{err}");
        }
        let err = Inventory::default().group("web").unwrap_err().to_string();
        assert!(err.contains("there are no client settings"), "{err}");
    }

    #[test]
    fn the_home_reads_the_old_inventory_with_a_warning_that_moves_it() {
        let home = tempfile::tempdir().unwrap();
        let none = Inventory::load_home(home.path()).unwrap();
        assert!(none.warnings().is_empty() && none.files.is_empty());
        let old = "[groups]\nweb = \"web[1-2]\"\n[hosts.web1]\ntoken_file = \"t1\"\n  token_file  = \"x\"\n";
        assert_eq!(
            respell(old),
            "[groups]\nweb = \"web[1-2]\"\n[hosts.web1]\ntoken-file = \"t1\"\n  token-file  = \"x\""
        );
        std::fs::write(
            home.path().join(OLD_INVENTORY_FILE),
            "[groups]\nweb = \"web[1-2]\"\n[hosts.web1]\ntoken_file = \"t1\"\n",
        )
        .unwrap();
        std::fs::write(home.path().join(SETTINGS_FILE), "[hosts.web2]\nport = 9\n").unwrap();
        let inv = Inventory::load_home(home.path()).unwrap();
        assert_eq!(inv.group("web").unwrap(), ["web1", "web2"]);
        assert_eq!(
            inv.host("web1").unwrap().token_file,
            Some(home.path().join("t1"))
        );
        assert_eq!(inv.host("web2").unwrap().port, Some(9));
        let [warning] = inv.warnings() else {
            panic!("one warning: {:?}", inv.warnings())
        };
        assert!(warning.contains("read for this release only"), "{warning}");
        assert!(
            warning.contains("sed 's/^\\( *\\)token_file\\( *\\)=/\\1token-file\\2=/'"),
            "{warning}"
        );
        assert!(!warning.contains("then fix"), "{warning}");

        // Run the commands the warning gives: the result is the same settings.
        let command = warning.lines().nth(1).unwrap().trim();
        let ran = std::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .unwrap();
        assert!(ran.success());
        assert!(!home.path().join(OLD_INVENTORY_FILE).exists());
        let moved = Inventory::load_home(home.path()).unwrap();
        assert!(moved.warnings().is_empty());
        assert_eq!(
            moved.host("web1").unwrap().token_file,
            Some(home.path().join("t1"))
        );
        assert_eq!(moved.group("web").unwrap(), ["web1", "web2"]);

        // Both files setting one thing: an error naming both places.
        std::fs::write(
            home.path().join(OLD_INVENTORY_FILE),
            "[hosts.web2]\nport = 8\n",
        )
        .unwrap();
        let err = Inventory::load_home(home.path()).unwrap_err().to_string();
        assert!(
            err.contains("gets `port` here and at") && err.contains("client.toml line"),
            "{err}"
        );
    }
}
