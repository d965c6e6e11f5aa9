//! Loading of hostwatch's TOML configuration files, shared by the agent,
//! the collector and the CLI: one file, overridable by environment
//! variables, unknown keys refused, relative paths taken from the file's
//! directory.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ConfigError {
    /// An error about `path`; `message` should name the offending key.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads `path` as TOML into `T`. Variables `<env_prefix>_KEY` override
/// top-level keys and `<env_prefix>_SECTION__KEY` keys of sections, e.g.
/// `HOSTWATCH_AGENT_TLS__CA` for `[tls] ca`.
pub fn load<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    let env = config::Environment::with_prefix(env_prefix)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true);
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(env)
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::new(path, e.to_string()))
}

/// `path` as given if absolute, else relative to `base` (the directory of
/// the configuration file that named it).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The directory of a configuration file, for [`resolve`].
pub fn base_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        name: String,
        #[serde(default)]
        count: u32,
        tls: Files,
    }

    /// A section of paths, as hostwatch_pki's `TlsFiles`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("example.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const GOOD: &str =
        "name = \"x\"\n[tls]\nca = \"ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.key\"\n";

    #[test]
    fn loads_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), GOOD);
        let example: Example = load(&path, "HOSTWATCH_TEST_LOADS").unwrap();
        assert_eq!(example.name, "x");
        assert_eq!(example.count, 0);
        let base = base_dir(&path);
        assert_eq!(resolve(&base, &example.tls.ca), dir.path().join("ca.pem"));
        assert_eq!(
            resolve(&base, &example.tls.cert),
            PathBuf::from("/abs/c.pem")
        );
        assert_eq!(resolve(&base, &example.tls.key), dir.path().join("k.key"));
        assert_eq!(base_dir(Path::new("x.toml")), PathBuf::from("."));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (format!("{GOOD}bogus = 1\n"), "bogus"),
            ("name = \"x\"\n".to_owned(), "tls"),
            (
                GOOD.replace("name = \"x\"", "name = \"x\"\ncount = -1"),
                "count",
            ),
            (
                GOOD.replace("key = \"k.key\"", "key = \"k.key\"\nextra = 1"),
                "extra",
            ),
            ("name = [".to_owned(), "example.toml"),
        ];
        for (text, needle) in cases {
            let path = write(dir.path(), &text);
            let err = load::<Example>(&path, "HOSTWATCH_TEST_BAD")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert!(err.contains("example.toml"), "{err}");
        }
        let missing = load::<Example>(&dir.path().join("none.toml"), "HOSTWATCH_TEST_BAD");
        assert!(missing.unwrap_err().to_string().contains("none.toml"));
    }
}
