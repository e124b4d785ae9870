//! Which hosts a command runs on: host lists (the host operand, `-H`),
//! `-g` groups of the client settings, minus `-x` exclusions; and the
//! endpoint of each, from the one endpoint builder ([`crate::reach`]).

use std::collections::HashSet;

use super::Host;
use crate::error::SetupError;
use crate::hostlist;
use crate::inventory::Inventory;
use crate::reach::Resolver;

/// The hosts asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The host operand (`exec HOST`, `put ... HOST:PATH`), a host list.
    pub operand: Option<String>,
    /// `-H` values: host lists (`web[01-20],db1`, `@web`).
    pub hosts: Vec<String>,
    /// `-g` values: groups of the client settings.
    pub groups: Vec<String>,
    /// `-x` values: host lists to leave out.
    pub exclude: Vec<String>,
}

impl Selection {
    /// The selected host names, in the order given, each once.
    pub fn names(&self, inventory: &Inventory) -> Result<Vec<String>, SetupError> {
        let expand = |flag: &str, list: &str| {
            hostlist::expand_with(list, inventory)
                .map_err(|e| SetupError::Usage(format!("{flag}{list}: {e}")))
        };
        let mut names = Vec::new();
        if let Some(list) = &self.operand {
            names.extend(expand("", list)?);
        }
        for list in &self.hosts {
            names.extend(expand("-H ", list)?);
        }
        for group in &self.groups {
            names.extend(inventory.group(group)?.iter().cloned());
        }
        let mut excluded = HashSet::new();
        for list in &self.exclude {
            excluded.extend(expand("-x ", list)?);
        }
        let mut seen = HashSet::new();
        names.retain(|n| !excluded.contains(n) && seen.insert(n.clone()));
        if names.is_empty() {
            return Err(SetupError::Usage(
                "no hosts left to run on: -x excludes every host selected".into(),
            ));
        }
        Ok(names)
    }
}

/// Each named host with its endpoint, found by the one endpoint builder
/// ([`Resolver`]) as for a single host. `--fingerprint` pins one server:
/// with several hosts it is a usage error.
pub fn hosts(names: &[String], resolver: &mut Resolver) -> Result<Vec<Host>, SetupError> {
    if resolver.pins_one() && names.len() > 1 {
        return Err(SetupError::Usage(format!(
            "--fingerprint pins one server, but {} hosts are selected; put each host's \
             fingerprint in the client settings ([hosts.NAME] fingerprint = \"sha256:...\")",
            names.len()
        )));
    }
    names
        .iter()
        .map(|name| {
            Ok(Host {
                name: name.clone(),
                endpoint: resolver.endpoint(name)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn selection(hosts: &[&str], groups: &[&str], exclude: &[&str]) -> Selection {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Selection {
            operand: None,
            hosts: own(hosts),
            groups: own(groups),
            exclude: own(exclude),
        }
    }

    #[test]
    fn lists_groups_and_exclusions() {
        let inv = Inventory::parse(
            "[groups]\nweb = \"web[1-4]\"\ndb = [\"db1\", \"web2\"]\n",
            Path::new("/i/client.toml"),
        )
        .unwrap();
        let names = |s: Selection| s.names(&inv).map_err(|e| e.to_string());
        assert_eq!(
            names(selection(&["a,b", "c:7900"], &[], &[])).unwrap(),
            ["a", "b", "c:7900"]
        );
        assert_eq!(
            names(selection(&["x"], &["web", "db"], &["web[3-4]"])).unwrap(),
            ["x", "web1", "web2", "db1"]
        );
        let err = names(selection(&["a"], &[], &["a"])).unwrap_err();
        assert!(err.contains("excludes every host"), "{err}");
        let err = names(selection(&["w[2-1]"], &[], &[])).unwrap_err();
        assert!(err.starts_with("-H w[2-1]: "), "{err}");
        // The host operand is named as written.
        let operand = Selection {
            operand: Some("w[2-1]".into()),
            ..Selection::default()
        };
        let err = names(operand).unwrap_err();
        assert!(err.starts_with("w[2-1]: "), "{err}");
    }

    #[test]
    fn every_host_is_found_by_the_one_builder() {
        let dir = tempfile::tempdir().unwrap();
        let fp = format!("sha256:{}", "cd".repeat(32));
        std::fs::write(
            dir.path().join("client.toml"),
            format!(
                "[hosts.\"h[1-2]\"]\nport = 9000\n[hosts.h2]\naddress = \"127.0.0.2\"\nfingerprint = \"{fp}\"\n"
            ),
        )
        .unwrap();
        let reach = crate::reach::Reach {
            home: Some(dir.path().to_path_buf()),
            token: Some(wiresh_proto::Secret("t".into())),
            ..Default::default()
        };
        let mut resolver = Resolver::new(reach.clone()).unwrap();
        let names: Vec<String> = ["h1", "h2", "h3:1"].map(String::from).into();
        let hosts = hosts(&names, &mut resolver).unwrap();
        assert_eq!(hosts[0].endpoint.target.to_string(), "h1:9000");
        assert_eq!(hosts[1].endpoint.target.to_string(), "127.0.0.2:9000");
        assert_eq!(hosts[1].name, "h2");
        assert_eq!(hosts[2].endpoint.target.to_string(), "h3:1");
        let alone = resolver.endpoint("h2").unwrap();
        assert_eq!(
            format!("{alone:?}"),
            format!("{:?}", hosts[1].endpoint),
            "alone as in a fan-out"
        );

        let pinned = crate::reach::Reach {
            fingerprint: Some(fp),
            ..reach
        };
        let err = super::hosts(&names, &mut Resolver::new(pinned).unwrap()).unwrap_err();
        assert!(matches!(err, SetupError::Usage(_)));
        assert!(err.to_string().contains("pins one server"), "{err}");
    }
}
