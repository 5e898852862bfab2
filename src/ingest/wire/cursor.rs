//! A protobuf field cursor over one message's bytes, on prost's encoding primitives: keys,
//! length-delimited fields, fixed64 and varint values, packed repeats, skipping; plus the
//! UTF-8 shortcuts the decoder uses for a point's attribute strings.

use prost::encoding::{check_wire_type, decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;

use super::{WireError, WireResult};

/// A cursor over one message's bytes; [`Fields::next`] yields each field's number and wire type.
#[derive(Clone, Copy)]
pub(super) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Fields { buf }
    }

    #[inline(always)]
    pub(super) fn next(&mut self) -> Option<WireResult<(u32, WireType)>> {
        let &first = self.buf.first()?;
        // Fast path: a one-byte key (field numbers 1 to 15) with a known wire type. Anything
        // else, errors included, goes through prost's own decoding.
        let wire_type = match first & 0x07 {
            0 => Some(WireType::Varint),
            1 => Some(WireType::SixtyFourBit),
            2 => Some(WireType::LengthDelimited),
            5 => Some(WireType::ThirtyTwoBit),
            _ => None,
        };
        if (0x08..0x80).contains(&first) {
            if let Some(wire_type) = wire_type {
                self.buf = &self.buf[1..];
                return Some(Ok((u32::from(first >> 3), wire_type)));
            }
        }
        Some(decode_key(&mut self.buf).map_err(WireError::from))
    }

    #[inline(always)]
    pub(super) fn len_delimited(&mut self, wire_type: WireType, message: &'static str) -> WireResult<&'a [u8]> {
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = match self.buf.first() {
            Some(&byte) if byte < 0x80 => {
                self.buf = &self.buf[1..];
                u64::from(byte)
            }
            _ => decode_varint(&mut self.buf)?,
        };
        if len > self.buf.len() as u64 {
            return Err(WireError::Truncated { message });
        }
        let (field, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(field)
    }

    #[inline(always)]
    pub(super) fn string(&mut self, wire_type: WireType, field: &'static str) -> WireResult<&'a str> {
        let bytes = self.len_delimited(wire_type, field)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field })
    }

    /// [`Fields::string`], answered from `checked` without a second UTF-8 check when the
    /// string lies inside it.
    #[inline(always)]
    pub(super) fn checked_string(
        &mut self,
        wire_type: WireType,
        field: &'static str,
        checked: Option<CheckedText<'a>>,
    ) -> WireResult<&'a str> {
        let bytes = self.len_delimited(wire_type, field)?;
        match checked.and_then(|checked| checked.get(bytes)) {
            Some(text) => Ok(text),
            None => std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field }),
        }
    }

    #[inline(always)]
    pub(super) fn fixed64(&mut self, wire_type: WireType, message: &'static str) -> WireResult<u64> {
        check_wire_type(WireType::SixtyFourBit, wire_type)?;
        if self.buf.len() < 8 {
            return Err(WireError::Truncated { message });
        }
        let (word, rest) = self.buf.split_at(8);
        self.buf = rest;
        Ok(u64::from_le_bytes(word.try_into().expect("eight bytes")))
    }

    #[inline]
    pub(super) fn varint(&mut self, wire_type: WireType) -> WireResult<u64> {
        check_wire_type(WireType::Varint, wire_type)?;
        Ok(decode_varint(&mut self.buf)?)
    }

    pub(super) fn skip(&mut self, wire_type: WireType, tag: u32) -> WireResult<()> {
        Ok(skip_field(wire_type, tag, &mut self.buf, DecodeContext::default())?)
    }

    /// A repeated fixed64/double field, packed or not: calls `each` with every element.
    pub(super) fn repeated_fixed64(
        &mut self,
        wire_type: WireType,
        message: &'static str,
        mut each: impl FnMut(u64),
    ) -> WireResult<()> {
        if wire_type == WireType::LengthDelimited {
            let packed = self.len_delimited(wire_type, message)?;
            if packed.len() % 8 != 0 {
                return Err(WireError::Truncated { message });
            }
            packed.chunks_exact(8).for_each(|word| each(u64::from_le_bytes(word.try_into().expect("eight bytes"))));
            Ok(())
        } else {
            each(self.fixed64(wire_type, message)?);
            Ok(())
        }
    }
}

/// A span of the request already validated as UTF-8 as a whole: one check for all the labels of
/// a point instead of one per string. A string inside it is valid exactly when its ends are
/// character boundaries of the span, which `str::get` checks.
#[derive(Clone, Copy)]
pub(super) struct CheckedText<'a> {
    bytes: &'a [u8],
    text: &'a str,
}

impl<'a> CheckedText<'a> {
    /// The span of `parent` from the first to the end of the last of `parts` (sub-slices of
    /// `parent`, in order), if it is valid UTF-8. Usually the attributes of a point are adjacent
    /// and ASCII apart from their strings; when they are not, every string is checked alone.
    pub(super) fn spanning(parent: &'a [u8], parts: &[&'a [u8]]) -> Option<Self> {
        let (first, last) = (parts.first()?, parts.last()?);
        let base = parent.as_ptr() as usize;
        let start = (first.as_ptr() as usize).checked_sub(base)?;
        let end = (last.as_ptr() as usize).checked_sub(base)?.checked_add(last.len())?;
        let bytes = parent.get(start..end)?;
        let text = std::str::from_utf8(bytes).ok()?;
        Some(CheckedText { bytes, text })
    }

    #[inline(always)]
    pub(super) fn get(&self, part: &[u8]) -> Option<&'a str> {
        let start = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        self.text.get(start..start.checked_add(part.len())?)
    }
}

/// The key and string value of a `KeyValue` in the layout every exporter writes for a string
/// attribute: `key` (field 1), then `value` (field 2) holding only `string_value` (field 1), all
/// lengths below 128. Anything else is `None`, and the caller walks the fields one by one.
#[inline(always)]
pub(super) fn string_key_value(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len, rest @ ..] = bytes else { return None };
    let (key, rest) = rest.split_at_checked(usize::from(*key_len))?;
    let [0x12, value_len, 0x0a, string_len, string @ ..] = rest else { return None };
    let exact = *key_len < 0x80
        && *value_len < 0x80
        && *string_len < 0x80
        && usize::from(*string_len) == string.len()
        && usize::from(*value_len) == string.len() + 2;
    exact.then_some((key, string))
}

/// Checks a sub-message the decoder does not interpret, with its prost type.
pub(super) fn validate_with_prost<M: Message + Default>(bytes: &[u8]) -> WireResult<()> {
    M::decode(bytes).map(|_| ()).map_err(WireError::from)
}
