//! Bounded containers: every variable-length field of a domain type is one
//! of these, so a value that exists (built or decoded) respects its limit.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::ValidationError;

/// A `Vec` holding at most `MAX` items.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    pub const MAX_LEN: usize = MAX;

    /// Fails with the field's name when `items` holds more than `MAX`.
    pub fn new(field: &'static str, items: Vec<T>) -> Result<Self, ValidationError> {
        if items.len() > MAX {
            return Err(ValidationError::TooLong { field, len: items.len(), max: MAX });
        }
        Ok(Self(items))
    }

    pub fn empty() -> Self {
        Self(Vec::new())
    }

    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug, const MAX: usize> fmt::Debug for BoundedVec<T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(deserializer)?;
        Self::new("sequence", items).map_err(serde::de::Error::custom)
    }
}

impl<T: Canonical, const MAX: usize> Canonical for BoundedVec<T, MAX> {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        self.0.write_canonical(writer);
    }
}

/// A UTF-8 string of at most `MAX` bytes and no control characters. Shared,
/// so cloning a message that carries one does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedText<const MAX: usize>(std::sync::Arc<str>);

impl<const MAX: usize> BoundedText<MAX> {
    pub fn new(field: &'static str, text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        if text.len() > MAX {
            return Err(ValidationError::TooLong { field, len: text.len(), max: MAX });
        }
        if let Some(bad) = text.chars().find(|c| c.is_control()) {
            return Err(ValidationError::BadCharacter { field, found: bad });
        }
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Deref for BoundedText<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedText<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedText<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Serialize for BoundedText<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedText<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new("text", text.into_owned()).map_err(serde::de::Error::custom)
    }
}

impl<const MAX: usize> Canonical for BoundedText<MAX> {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.str(&self.0);
    }
}
