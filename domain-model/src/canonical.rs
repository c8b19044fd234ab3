//! Canonical signing bytes.
//!
//! A signed value is signed over bytes that this module produces from its
//! fields, independently of any wire codec: the same value always gives the
//! same bytes, and every field but the signature is covered. Each signed type
//! starts with a distinct domain tag so that a signature over one type can
//! never be replayed as a signature over another.

/// Builds canonical bytes field by field. Integers are big-endian with a
/// fixed width; byte strings and sequences carry a 32-bit length prefix;
/// options carry a presence byte. The layout is therefore unambiguous.
#[derive(Debug, Default)]
pub struct CanonicalWriter {
    bytes: Vec<u8>,
}

impl CanonicalWriter {
    /// Starts the bytes of a value of the type named by `domain_tag`.
    pub fn new(domain_tag: &str) -> Self {
        let mut writer = Self { bytes: Vec::with_capacity(128) };
        writer.str(domain_tag);
        writer
    }

    /// Starts bytes with no tag: a body whose type its protocol already
    /// says (the messages engines exchange).
    pub fn untagged() -> Self {
        Self { bytes: Vec::with_capacity(128) }
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(u8::from(value))
    }

    /// A length-prefixed byte string. Lengths never exceed `u32::MAX`
    /// because every variable-length field is bounded far below that.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// A sequence count; the caller writes the items after it.
    pub fn count(&mut self, len: usize) -> &mut Self {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX))
    }

    /// Writes an option: a presence byte, then the value when present.
    pub fn option<T>(&mut self, value: Option<&T>, mut write: impl FnMut(&mut Self, &T)) -> &mut Self {
        match value {
            None => {
                self.u8(0);
            }
            Some(inner) => {
                self.u8(1);
                write(self, inner);
            }
        }
        self
    }

    pub fn field(&mut self, value: &impl Canonical) -> &mut Self {
        value.write_canonical(self);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// A value with a canonical byte layout, used inside signing bytes.
pub trait Canonical {
    fn write_canonical(&self, writer: &mut CanonicalWriter);
}

impl<T: Canonical> Canonical for [T] {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.count(self.len());
        for item in self {
            item.write_canonical(writer);
        }
    }
}

impl<T: Canonical> Canonical for Vec<T> {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        self.as_slice().write_canonical(writer);
    }
}

impl Canonical for String {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.str(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_byte_strings_cannot_be_confused() {
        let mut a = CanonicalWriter::new("t");
        a.bytes(b"ab").bytes(b"c");
        let mut b = CanonicalWriter::new("t");
        b.bytes(b"a").bytes(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn domain_tags_separate_types() {
        let mut a = CanonicalWriter::new("netmachine/A");
        a.u64(7);
        let mut b = CanonicalWriter::new("netmachine/B");
        b.u64(7);
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn options_are_unambiguous() {
        let mut none = CanonicalWriter::new("t");
        none.option(None::<&u64>, |w, v| {
            w.u64(*v);
        });
        let mut zero = CanonicalWriter::new("t");
        zero.option(Some(&0u64), |w, v| {
            w.u64(*v);
        });
        assert_ne!(none.finish(), zero.finish());
    }
}
