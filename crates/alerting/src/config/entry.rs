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
use std::cell::RefCell;

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
    let current = RefCell::new(None);
    T::deserialize(Keys {
        table,
        current: &current,
    })
    .map_err(|e| match current.take() {
        Some(key) => KeyError::new(&key, format!("{key}: {}", e.message())),
        // After the last key: a missing field, which the message names.
        None => KeyError::new("", e.message()),
    })
}

/// A table as a deserializer that remembers the key being read.
struct Keys<'a> {
    table: toml::Table,
    current: &'a RefCell<Option<String>>,
}

impl<'de> Deserializer<'de> for Keys<'_> {
    type Error = toml::de::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(KeysAccess {
            entries: self.table.into_iter(),
            value: None,
            current: self.current,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct KeysAccess<'a> {
    entries: <toml::Table as IntoIterator>::IntoIter,
    value: Option<toml::Value>,
    current: &'a RefCell<Option<String>>,
}

impl<'de> MapAccess<'de> for KeysAccess<'_> {
    type Error = toml::de::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            *self.current.borrow_mut() = None;
            return Ok(None);
        };
        self.value = Some(value);
        *self.current.borrow_mut() = Some(key.clone());
        let key: StringDeserializer<toml::de::Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| toml::de::Error::custom("a value without a key"))?;
        seed.deserialize(value)
    }
}
