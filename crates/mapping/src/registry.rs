//! Flow versions. A registry directory keeps one immutable snapshot per
//! content change of each flow: `<dir>/<name>/<N>+<hash>.yaml`. Loading a
//! flow whose content hash is already there gives that version back;
//! new content gets the next number. A run records the version string it
//! started under, and [`Registry::load_version`] gives that exact content
//! back later, so editing a flow never changes runs already started.

use std::path::{Path, PathBuf};

use crate::load::{content_hash, load_str, FlowError, FlowVersion, LoadedFlow};

/// A directory of flow snapshots.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// A registry failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The flow itself has mistakes.
    #[error("the flow has {} error(s)", .0.len())]
    Invalid(Vec<FlowError>),
    /// The directory cannot be used.
    #[error("flow registry {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No such version is stored.
    #[error("flow {name} has no stored version {version}")]
    Unknown {
        /// Flow name.
        name: String,
        /// Version asked for.
        version: String,
    },
}

impl Registry {
    /// A registry in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Registry { dir: dir.into() }
    }

    fn versions(&self, name: &str) -> Result<Vec<(FlowVersion, PathBuf)>, RegistryError> {
        let dir = self.dir.join(name);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(RegistryError::Io { path: dir, source }),
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = file.strip_suffix(".yaml") else {
                continue;
            };
            let Some((number, hash)) = stem.split_once('+') else {
                continue;
            };
            if let Ok(number) = number.parse() {
                out.push((
                    FlowVersion {
                        number,
                        hash: hash.to_owned(),
                    },
                    entry.path(),
                ));
            }
        }
        out.sort_by_key(|(v, _)| v.number);
        Ok(out)
    }

    /// Loads a flow file and registers its content: the same content keeps
    /// its version, new content gets the next number.
    pub fn load(&self, path: &Path) -> Result<LoadedFlow, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut flow = load_str(path, &text).map_err(RegistryError::Invalid)?;
        let hash = content_hash(&text);
        let versions = self.versions(&flow.flow.name)?;
        if let Some((version, _)) = versions.iter().find(|(v, _)| v.hash == hash) {
            flow.version = version.clone();
            return Ok(flow);
        }
        let number = versions.last().map(|(v, _)| v.number + 1).unwrap_or(1);
        let version = FlowVersion { number, hash };
        let dir = self.dir.join(&flow.flow.name);
        std::fs::create_dir_all(&dir).map_err(|source| RegistryError::Io {
            path: dir.clone(),
            source,
        })?;
        let snapshot = dir.join(format!("{version}.yaml"));
        std::fs::write(&snapshot, &text).map_err(|source| RegistryError::Io {
            path: snapshot,
            source,
        })?;
        flow.version = version;
        Ok(flow)
    }

    /// The flow exactly as it was at `version` (`N+hash`), for runs started
    /// under it.
    pub fn load_version(&self, name: &str, version: &str) -> Result<LoadedFlow, RegistryError> {
        let versions = self.versions(name)?;
        let Some((found, path)) = versions.into_iter().find(|(v, _)| v.to_string() == version)
        else {
            return Err(RegistryError::Unknown {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        };
        let text = std::fs::read_to_string(&path).map_err(|source| RegistryError::Io {
            path: path.clone(),
            source,
        })?;
        let mut flow = load_str(&path, &text).map_err(RegistryError::Invalid)?;
        flow.version = found;
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "version: 1\nname: demo\ntrigger: { kind: manual }\nsteps:\n  - id: a\n    map: { program: '\"one\"' }\n";

    #[test]
    fn versions_follow_content_and_old_ones_stay_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().join("registry"));
        let file = dir.path().join("demo.yaml");
        std::fs::write(&file, FLOW).unwrap();
        let first = registry.load(&file).unwrap();
        assert_eq!(first.version.number, 1);
        // The same content keeps its version.
        assert_eq!(registry.load(&file).unwrap().version, first.version);
        // A change gets the next number and a new hash.
        std::fs::write(&file, FLOW.replace("one", "two")).unwrap();
        let second = registry.load(&file).unwrap();
        assert_eq!(second.version.number, 2);
        assert_ne!(second.version.hash, first.version.hash);
        // A run started under version 1 still gets version 1's flow.
        let old = registry
            .load_version("demo", &first.version.to_string())
            .unwrap();
        assert_eq!(old.version, first.version);
        assert!(old.source.contains("one"));
        let outcome = crate::run(
            &old,
            &serde_json::json!({}),
            &Default::default(),
            &mut crate::RecordingConnector::default(),
        );
        assert_eq!(outcome.flow_version, first.version.to_string());
        assert_eq!(outcome.outputs["a"], serde_json::json!("one"));
        assert!(matches!(
            registry.load_version("demo", "9+000000000000"),
            Err(RegistryError::Unknown { .. })
        ));
    }
}
