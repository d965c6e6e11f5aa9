//! Reading one `[[alerting.rules]]` or `[[alerting.hooks]]` entry: its
//! `name` and `kind`, the keys every kind shares, and the keys of its kind
//! into that kind's own type, which refuses keys not its own. Every error
//! names the entry (index and name) and the key.
//!
//! Why not serde's internally tagged enums: they buffer an entry before
//! choosing its type, and so lose which entry and which key a refused
//! value had.

use super::{KeyError, Place};
use serde::de::value::StringDeserializer;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, Deserializer};

/// Deserializes a list of entries with `T::try_from` each, naming the
/// entry where (`place`) in errors.
pub(crate) fn entries<'de, D, T>(
    d: D,
    place: fn(usize, String) -> Place,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<toml::Table, Error = KeyError>,
{
    Vec::<toml::Table>::deserialize(d)?
        .into_iter()
        .enumerate()
        .map(|(index, table)| {
            let name = match table.get("name") {
                Some(toml::Value::String(name)) => name.clone(),
                _ => String::new(),
            };
            T::try_from(table).map_err(|e| D::Error::custom(e.at(place(index, name))))
        })
        .collect()
}

/// An entry taken apart.
pub(crate) struct Entry<S> {
    pub(crate) name: String,
    pub(crate) kind: String,
    /// The keys every kind has.
    pub(crate) shared: S,
    /// The keys of its kind, for that kind's type.
    pub(crate) own: toml::Table,
}

/// Takes an entry apart: its `name`, its `kind`, the keys in
/// `shared_keys` read into `S`, and the rest.
pub(crate) fn read_entry<S: DeserializeOwned>(
    mut table: toml::Table,
    shared_keys: &[&str],
) -> Result<Entry<S>, KeyError> {
    let name = take_string(&mut table, "name")?;
    let kind = take_string(&mut table, "kind")?;
    let (shared, own): (toml::Table, toml::Table) = table
        .into_iter()
        .partition(|(key, _)| shared_keys.contains(&key.as_str()));
    Ok(Entry {
        name,
        kind,
        shared: from_keys(shared)?,
        own,
    })
}

/// Removes the string `key` (`name`, `kind`, `event`) from an entry.
pub(crate) fn take_string(table: &mut toml::Table, key: &str) -> Result<String, KeyError> {
    match table.remove(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(other) => Err(KeyError::new(
            key,
            format!("{key} must be a string, not {}", other.type_str()),
        )),
        None => Err(KeyError::new(key, format!("{key} is required"))),
    }
}

/// The error for a `kind` (or `event`) that is none of `known`.
pub(crate) fn unknown(key: &str, value: &str, known: &[&str]) -> KeyError {
    KeyError::new(
        key,
        format!("{key} {value:?} is unknown (known: {})", known.join(", ")),
    )
}

/// Deserializes `T` from an entry's keys; a refused value names its key.
pub(crate) fn from_keys<T: DeserializeOwned>(table: toml::Table) -> Result<T, KeyError> {
    T::deserialize(Keys(table)).map_err(|e| e.0)
}

/// A table as a deserializer whose errors name the key they are about.
struct Keys(toml::Table);

/// A [`KeyError`] as serde's error type: `key` is empty until the key
/// being read is known.
#[derive(Debug)]
struct KeysError(KeyError);

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KeysError {}

impl serde::de::Error for KeysError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        KeysError(KeyError::new("", message.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        KeysError(KeyError::new(field, format!("{field} is required")))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let keys = if expected.is_empty() {
            "none".to_owned()
        } else {
            expected.join(", ")
        };
        KeysError(KeyError::new(
            field,
            format!("{field} does not apply to this kind (its keys: {keys})"),
        ))
    }
}

impl KeysError {
    /// The error about the value of `key`, unless it already names a key.
    fn about(self, key: &str) -> Self {
        if self.0.key.is_empty() {
            KeysError(KeyError::new(key, format!("{key}: {}", self.0.message)))
        } else {
            self
        }
    }
}

impl<'de> Deserializer<'de> for Keys {
    type Error = KeysError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(KeysAccess {
            entries: self.0.into_iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct KeysAccess {
    entries: <toml::Table as IntoIterator>::IntoIter,
    /// The key just read, and its value.
    current: Option<(String, toml::Value)>,
}

impl<'de> MapAccess<'de> for KeysAccess {
    type Error = KeysError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name: StringDeserializer<KeysError> = key.clone().into_deserializer();
        let read = seed.deserialize(name).map_err(|e| e.about(&key))?;
        self.current = Some((key, value));
        Ok(Some(read))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (key, value) = self
            .current
            .take()
            .ok_or_else(|| KeysError::custom("a value without a key"))?;
        seed.deserialize(value)
            .map_err(|e| KeysError::custom(e.message()).about(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        count: u32,
        #[serde(default)]
        verbose: bool,
    }

    fn read(text: &str) -> Result<Example, KeyError> {
        from_keys(toml::from_str(text).unwrap())
    }

    #[test]
    fn errors_name_the_key_they_are_about() {
        let example = read("count = 1\nverbose = true").unwrap();
        assert_eq!((example.count, example.verbose), (1, true));
        for (text, key, message) in [
            ("count = 1\ncolour = 2", "colour", "colour does not apply"),
            ("verbose = true", "count", "count is required"),
            ("count = \"x\"", "count", "count: invalid type"),
            ("count = 1\nverbose = 3", "verbose", "verbose: invalid type"),
        ] {
            let err = read(text).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(err.message.starts_with(message), "{err}");
        }
    }
}
