//! Declarative deploys: a set of built plugins is the desired state; [`plan`] compares it with
//! what a server runs and lists the steps that make the two equal. `plinth apply` carries the
//! steps out over HTTP, and `plinth serve --apply DIR` in-process before the server reports
//! ready. Reading and building the folder is the CLI's part: the server never runs a build.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One plugin of the folder, ready to deploy.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Its name (from its manifest).
    pub name: String,
    /// The manifest text.
    pub manifest: String,
    /// The component bytes.
    pub component: Vec<u8>,
    /// Hex SHA-256 of `component`.
    pub sha256: String,
    /// Where it came from (for messages).
    pub source: PathBuf,
}

/// What the server runs for one plugin: the active version's component hash and manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The number of its active version.
    pub version: u64,
    /// Hex SHA-256 of its component.
    pub sha256: String,
    /// Its manifest text.
    pub manifest: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    /// Deploy a plugin the server does not have.
    Add {
        /// The plugin to deploy, new to the server.
        plugin: String,
    },
    /// Deploy a new version of a plugin whose component or manifest differs.
    Replace {
        /// The plugin to deploy over its active version.
        plugin: String,
        /// The active version now.
        from_version: u64,
    },
    /// Nothing to do.
    Unchanged {
        /// The plugin the folder no longer has.
        plugin: String,
        /// Its active version.
        version: u64,
    },
    /// Delete a plugin the folder does not have (only with `--prune`; data and config stay).
    Remove {
        /// The plugin whose bytes and manifest already match.
        plugin: String,
    },
}

impl Step {
    /// Whether carrying the step out changes the server.
    pub fn changes(&self) -> bool {
        !matches!(self, Step::Unchanged { .. })
    }

    /// One line for people: `+ name`, `~ name`, `= name`, `- name`.
    pub fn line(&self) -> String {
        match self {
            Step::Add { plugin } => format!("+ {plugin} (new)"),
            Step::Replace {
                plugin,
                from_version,
            } => format!("~ {plugin} (replaces version {from_version})"),
            Step::Unchanged { plugin, version } => {
                format!("= {plugin} (version {version} is up to date)")
            }
            Step::Remove { plugin } => format!("- {plugin} (not in the folder; pruned)"),
        }
    }
}

/// The steps that turn `current` into `desired`: adds and replaces in name order, then (with
/// `prune`) removals.
pub fn plan(desired: &[Desired], current: &BTreeMap<String, Current>, prune: bool) -> Vec<Step> {
    let mut steps: Vec<Step> = desired
        .iter()
        .map(|d| match current.get(&d.name) {
            None => Step::Add {
                plugin: d.name.clone(),
            },
            Some(c) if c.sha256 == d.sha256 && c.manifest == d.manifest => Step::Unchanged {
                plugin: d.name.clone(),
                version: c.version,
            },
            Some(c) => Step::Replace {
                plugin: d.name.clone(),
                from_version: c.version,
            },
        })
        .collect();
    if prune {
        steps.extend(
            current
                .keys()
                .filter(|name| !desired.iter().any(|d| &d.name == *name))
                .map(|name| Step::Remove {
                    plugin: name.clone(),
                }),
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(name: &str, sha: &str, manifest: &str) -> Desired {
        Desired {
            name: name.into(),
            manifest: manifest.into(),
            component: Vec::new(),
            sha256: sha.into(),
            source: PathBuf::from(name),
        }
    }

    fn current(version: u64, sha: &str, manifest: &str) -> Current {
        Current {
            version,
            sha256: sha.into(),
            manifest: manifest.into(),
        }
    }

    #[test]
    fn plans_add_replace_keep_and_prune_only_when_asked() {
        let wanted = [
            desired("a", "s1", "m"),
            desired("b", "s2", "m"),
            desired("c", "s3", "m2"),
        ];
        let running = BTreeMap::from([
            ("b".to_string(), current(4, "s2", "m")),
            ("c".to_string(), current(2, "s3", "m")),
            ("z".to_string(), current(1, "s9", "m")),
        ]);
        let steps = plan(&wanted, &running, false);
        assert_eq!(
            steps,
            [
                Step::Add { plugin: "a".into() },
                Step::Unchanged {
                    plugin: "b".into(),
                    version: 4
                },
                Step::Replace {
                    plugin: "c".into(),
                    from_version: 2
                },
            ]
        );
        let pruned = plan(&wanted, &running, true);
        assert_eq!(pruned.last(), Some(&Step::Remove { plugin: "z".into() }));
        // Applied, the same folder plans nothing that changes.
        let converged = BTreeMap::from([
            ("a".to_string(), current(1, "s1", "m")),
            ("b".to_string(), current(4, "s2", "m")),
            ("c".to_string(), current(3, "s3", "m2")),
        ]);
        assert!(!plan(&wanted, &converged, true).iter().any(Step::changes));
    }
}
