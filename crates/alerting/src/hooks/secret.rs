//! Hooks' secrets (HMAC keys, routing keys, API keys, webhook URLs): read
//! when the configuration loads, from a file (`NAME_file`) or an
//! environment variable (`NAME_env`), never written in the configuration
//! itself, and never printed: errors name the key, the file or the
//! variable, not the value.

use super::Secret;
use crate::config::KeyError;
use std::fmt;
use std::path::Path;

/// A secret that is text (a key sent in a header or body, a URL).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl SecretText {
    /// The secret itself, for the request that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` (a receiver's answer, say) with every occurrence of the
    /// secret replaced by `<redacted>`.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

/// The secret `name` from `NAME_file` or `NAME_env`, exactly one of which
/// must be given; surrounding whitespace (a final newline) is dropped.
pub(crate) fn read(name: &str, file: Option<&Path>, env: Option<&str>) -> Result<Secret, KeyError> {
    let (file_key, env_key) = (format!("{name}_file"), format!("{name}_env"));
    match (file, env) {
        (Some(path), None) => from_file(&file_key, path),
        (None, Some(var)) => from_env(&env_key, var),
        (Some(_), Some(_)) => Err(KeyError::new(
            &env_key,
            format!("{file_key} and {env_key}: give one of them, not both"),
        )),
        (None, None) => Err(KeyError::new(
            &file_key,
            format!("{file_key} or {env_key} is required"),
        )),
    }
}

/// Like [`read`], for a secret that must be UTF-8 text.
pub(crate) fn read_text(
    name: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<SecretText, KeyError> {
    let secret = read(name, file, env)?;
    let key = if file.is_some() {
        format!("{name}_file")
    } else {
        format!("{name}_env")
    };
    String::from_utf8(secret.0)
        .map(SecretText)
        .map_err(|_| KeyError::new(&key, format!("{key}: the {name} is not UTF-8 text")))
}

/// The secret in the file at `path`, read for the key `key`.
pub(crate) fn from_file(key: &str, path: &Path) -> Result<Secret, KeyError> {
    let bytes = std::fs::read(path)
        .map_err(|e| KeyError::new(key, format!("{key} {}: {e}", path.display())))?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(KeyError::new(
            key,
            format!("{key} {} is empty", path.display()),
        ));
    }
    Ok(Secret(trimmed))
}

fn from_env(key: &str, var: &str) -> Result<Secret, KeyError> {
    if var.is_empty() || var.contains(['=', '\0']) {
        return Err(KeyError::new(
            key,
            format!("{key}: {var:?} is not an environment variable name"),
        ));
    }
    let value = std::env::var_os(var).ok_or_else(|| {
        KeyError::new(
            key,
            format!("{key}: the environment variable {var} is not set"),
        )
    })?;
    let trimmed = value.as_encoded_bytes().trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(KeyError::new(
            key,
            format!("{key}: the environment variable {var} is empty"),
        ));
    }
    Ok(Secret(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_one_file_or_one_variable_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cr3t-value\n").unwrap();
        let secret = read_text("api_key", Some(&file), None).unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert_eq!(format!("{secret:?}"), "SecretText(<redacted>)");
        assert_eq!(
            secret.redact("key s3cr3t-value refused"),
            "key <redacted> refused"
        );
        // PATH is set wherever tests run.
        assert!(read("api_key", None, Some("PATH")).is_ok());
        let cases = [
            (read("api_key", None, None), "api_key_file", "is required"),
            (
                read("api_key", Some(&file), Some("PATH")),
                "api_key_env",
                "not both",
            ),
            (
                read("api_key", None, Some("HOSTWATCH_TEST_NOT_SET_ANYWHERE")),
                "api_key_env",
                "HOSTWATCH_TEST_NOT_SET_ANYWHERE is not set",
            ),
            (
                read("api_key", None, Some("A=B")),
                "api_key_env",
                "not an environment variable name",
            ),
            (
                read("api_key", Some(Path::new("/dev/null")), None),
                "api_key_file",
                "is empty",
            ),
        ];
        for (result, key, needle) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.message.contains(needle), "{err}");
            assert!(!err.message.contains("s3cr3t"), "{err}");
        }
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        let err = read_text("api_key", Some(&file), None).unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
    }
}
