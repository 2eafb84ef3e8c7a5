//! The codecs: how a value becomes the body of a message and back. The generated code calls
//! these; applications rarely need to.
//!
//! - **postcard** (serde): compact, borrows `&str` / `&[u8]` fields from the received bytes.
//!   Decoding reads missing trailing bytes as zeros and ignores extra trailing bytes: that is how
//!   a message of an older or newer definition of a type decodes (docs/rpc.md §5).
//! - **rkyv** 0.8: always validated (`bytecheck`) before access; the archive is read in place
//!   when the body is 16-aligned, else from an aligned copy.
//! - **JSON** (serde_json): self-describing; unknown fields are ignored, missing `Option` fields
//!   are `None`.
//! - **lz4** (`lz4_flex`, block format) on top of any of them, with a cap on the decompressed
//!   size.

use std::cell::RefCell;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use serde::{Deserialize, Serialize};

/// A codec failure, with the codec's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// postcard

/// Appends the postcard encoding of `value` to `out`.
///
/// # Errors
/// When `value`'s `Serialize` fails (postcard itself cannot fail on a `Vec`).
pub fn postcard_encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let buf = std::mem::take(out);
    match postcard::to_extend(value, buf) {
        Ok(buf) => {
            *out = buf;
            Ok(())
        }
        Err(e) => Err(CodecError(format!("postcard: {e}"))),
    }
}

/// Decodes `bytes` as a `T` with postcard, borrowing `&str` / `&[u8]` fields from `bytes`.
/// Bytes missing at the end read as zeros (an older peer's message: appended fields decode as
/// `None`, `0`, empty); bytes left over are ignored (a newer peer's appended fields).
///
/// # Errors
/// When the bytes are not a `T` (bad UTF-8, an unknown enum variant, a length past the end...).
pub fn postcard_decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    let mut de = postcard::Deserializer::from_flavor(ZeroPadded {
        rest: bytes,
        padded: 0,
    });
    T::deserialize(&mut de).map_err(|e| CodecError(format!("postcard: {e}")))
}

/// A postcard input that reads zeros past its end, and only what a missing field needs: single
/// bytes (varints, `Option` tags, lengths) and fixed-width numbers of up to 16 bytes, at most
/// [`MAX_ZERO_PADDING`] bytes in all.
struct ZeroPadded<'de> {
    rest: &'de [u8],
    /// Zero bytes handed out past the end so far.
    padded: usize,
}

static ZEROS: [u8; 16] = [0; 16];

/// How many zero bytes past its end a postcard body may be read with: room for 256 appended
/// fields of one byte (an `Option`, a collection, a small number) or 16 of the widest numbers.
/// Without a bound, a length read from the real bytes (a hostile `u64::MAX` elements) followed by
/// elements read from endless zeros would grow a collection until the process runs out of memory
/// (found by the `dispatch` fuzz target).
pub const MAX_ZERO_PADDING: usize = 256;

impl ZeroPadded<'_> {
    fn pad(&mut self, n: usize) -> postcard::Result<()> {
        if n <= MAX_ZERO_PADDING - self.padded {
            self.padded += n;
            Ok(())
        } else {
            Err(postcard::Error::DeserializeUnexpectedEnd)
        }
    }
}

impl<'de> postcard::de_flavors::Flavor<'de> for ZeroPadded<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                Ok(b)
            }
            None => self.pad(1).map(|()| 0),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        if let Some((head, rest)) = self.rest.split_at_checked(ct) {
            self.rest = rest;
            Ok(head)
        } else if self.rest.is_empty() && ct <= ZEROS.len() {
            // A fixed-width field (f32, u128...) appended by a newer definition.
            self.pad(ct)?;
            Ok(&ZEROS[..ct])
        } else {
            Err(postcard::Error::DeserializeUnexpectedEnd)
        }
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        Ok(self.rest)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Appends the JSON encoding of `value` to `out`.
///
/// # Errors
/// When `value`'s `Serialize` fails (a map with non-string keys, ...).
pub fn json_encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| CodecError(format!("json: {e}")))
}

/// Decodes `bytes` as a `T` from JSON (borrowing `&str` fields that need no unescaping).
///
/// # Errors
/// When the bytes are not JSON, or not a `T`.
pub fn json_decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError(format!("json: {e}")))
}

// ---------------------------------------------------------------------------------------------
// rkyv

/// The archived form of `T`, what a handler of an rkyv method receives (by reference, validated,
/// in place).
pub type Archived<T> = <T as rkyv::Archive>::Archived;

/// The alignment rkyv bodies are read at.
const RKYV_ALIGN: usize = 16;

/// Appends the rkyv archive of `value` to `out`, whose length must be a multiple of 16 (the
/// envelope's 16 bytes), so that the archive's alignment holds relative to its first byte.
///
/// # Errors
/// When `value`'s `Serialize` fails.
pub fn rkyv_encode<T>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                Vec<u8>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    debug_assert_eq!(out.len() % RKYV_ALIGN, 0);
    let buf = std::mem::take(out);
    let buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buf)
        .map_err(|e| CodecError(format!("rkyv: {e}")))?;
    *out = buf;
    Ok(())
}

thread_local! {
    /// Where a misaligned rkyv body is copied to be read (reused: no allocation once grown).
    static ALIGNED: RefCell<AlignedVec<RKYV_ALIGN>> = RefCell::new(AlignedVec::new());
}

/// Validates `bytes` as an archived `T` and gives `f` a reference to it: in place when `bytes`
/// is 16-aligned, else from an aligned copy (a per-thread buffer, reused).
///
/// # Errors
/// When the bytes are not a valid archive of `T` (validation failed).
pub fn rkyv_view<T, R>(bytes: &[u8], f: impl FnOnce(&Archived<T>) -> R) -> Result<R, CodecError>
where
    T: rkyv::Archive,
    Archived<T>:
        for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    if (bytes.as_ptr() as usize).is_multiple_of(RKYV_ALIGN) {
        let archived = rkyv::access::<Archived<T>, rancor::Error>(bytes)
            .map_err(|e| CodecError(format!("rkyv: invalid archive: {e}")))?;
        return Ok(f(archived));
    }
    // Take the buffer out of its cell, so that a handler that itself reads an rkyv body (a
    // nested call on this thread) finds an empty one rather than a borrowed one.
    let mut buf = ALIGNED.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    buf.extend_from_slice(bytes);
    let r = rkyv::access::<Archived<T>, rancor::Error>(&buf)
        .map(f)
        .map_err(|e| CodecError(format!("rkyv: invalid archive: {e}")));
    ALIGNED.with(|b| *b.borrow_mut() = buf);
    r
}

/// A body at rkyv's alignment: borrowed when it already is, else an aligned copy.
#[derive(Debug)]
pub enum AlignedBody<'a> {
    /// The bytes, already 16-aligned.
    Borrowed(&'a [u8]),
    /// An aligned copy.
    Copied(AlignedVec<RKYV_ALIGN>),
}

impl<'a> AlignedBody<'a> {
    /// `bytes` at rkyv's alignment (copied only when misaligned).
    pub fn new(bytes: &'a [u8]) -> AlignedBody<'a> {
        if (bytes.as_ptr() as usize).is_multiple_of(RKYV_ALIGN) {
            AlignedBody::Borrowed(bytes)
        } else {
            let mut v = AlignedVec::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            AlignedBody::Copied(v)
        }
    }
    /// The aligned bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            AlignedBody::Borrowed(b) => b,
            AlignedBody::Copied(v) => v,
        }
    }
}

/// Validates `bytes` (16-aligned, see [`AlignedBody`]) as an archived `T`.
///
/// # Errors
/// When the bytes are misaligned or not a valid archive of `T`.
pub fn rkyv_access<T>(bytes: &[u8]) -> Result<&Archived<T>, CodecError>
where
    T: rkyv::Archive,
    Archived<T>:
        for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<Archived<T>, rancor::Error>(bytes)
        .map_err(|e| CodecError(format!("rkyv: invalid archive: {e}")))
}

/// Validates `bytes` as an archived `T` and deserializes it into an owned `T`.
///
/// # Errors
/// As [`rkyv_view`], or when deserializing fails.
pub fn rkyv_decode_owned<T>(bytes: &[u8]) -> Result<T, CodecError>
where
    T: rkyv::Archive,
    Archived<T>: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    rkyv_view::<T, _>(bytes, |a| {
        rkyv::deserialize::<T, rancor::Error>(a).map_err(|e| CodecError(format!("rkyv: {e}")))
    })?
}

// ---------------------------------------------------------------------------------------------
// lz4

/// Compresses `body` (lz4 block format) into `out` (cleared first).
pub fn lz4_compress(body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(lz4_flex::block::get_maximum_output_size(body.len()), 0);
    // Cannot fail: `out` has the maximum size the block can take.
    let n = lz4_flex::block::compress_into(body, out).unwrap_or(0);
    out.truncate(n);
}

/// Decompresses `compressed` into `out` (cleared first), which must come to exactly
/// `uncompressed_len` bytes, at most `max`.
///
/// # Errors
/// When `uncompressed_len` is above `max` (checked before anything is allocated: a compression
/// bomb costs nothing), or the data is not lz4 of that size.
pub fn lz4_decompress(
    compressed: &[u8],
    uncompressed_len: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if uncompressed_len > max {
        return Err(CodecError(format!(
            "the compressed body claims {uncompressed_len} bytes once decompressed, more than the \
             {max} this side accepts (RpcConfig::max_decompressed)"
        )));
    }
    out.clear();
    out.resize(uncompressed_len, 0);
    match lz4_flex::block::decompress_into(compressed, out) {
        Ok(n) if n == uncompressed_len => Ok(()),
        Ok(n) => Err(CodecError(format!(
            "the compressed body decompresses to {n} bytes, not the {uncompressed_len} its \
             envelope claims"
        ))),
        Err(e) => Err(CodecError(format!("lz4: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Old {
        a: u32,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct New {
        a: u32,
        b: Option<String>,
        c: Vec<u64>,
        d: u128,
        e: f64,
    }

    #[test]
    fn missing_trailing_fields_read_as_zeros() {
        let mut buf = Vec::new();
        postcard_encode(&Old { a: 7 }, &mut buf).unwrap();
        let new: New = postcard_decode(&buf).unwrap();
        assert_eq!(
            new,
            New {
                a: 7,
                b: None,
                c: vec![],
                d: 0,
                e: 0.0
            }
        );
    }

    #[test]
    fn a_huge_length_over_the_zero_padding_is_an_error_not_an_allocation() {
        // A length of u64::MAX elements and no elements: before the padding was bounded, every
        // element decoded from endless zeros and the vector grew until the process ran out of
        // memory.
        let mut body = Vec::new();
        postcard_encode(&u64::MAX, &mut body).unwrap();
        let err = postcard_decode::<Vec<i32>>(&body).unwrap_err();
        assert!(err.0.contains("postcard"), "{err}");
        // Exactly the bound still decodes (one byte per element), one more does not.
        let mut body = Vec::new();
        postcard_encode(&(MAX_ZERO_PADDING as u64), &mut body).unwrap();
        assert_eq!(
            postcard_decode::<Vec<i32>>(&body).unwrap(),
            vec![0; MAX_ZERO_PADDING]
        );
        let mut body = Vec::new();
        postcard_encode(&(MAX_ZERO_PADDING as u64 + 1), &mut body).unwrap();
        assert!(postcard_decode::<Vec<i32>>(&body).is_err());
    }

    #[test]
    fn the_fuzzers_out_of_memory_input_is_refused() {
        // crates/ferry-rpc/fuzz's `dispatch` target, CI run of 8138d18: its `Borrowed` type, an
        // empty name and data, no `n`, then a `list` whose length is read from the 0xff bytes
        // and whose elements would all come from past the end.
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Borrowed<'a> {
            name: &'a str,
            data: &'a [u8],
            n: Option<u64>,
            list: Vec<i32>,
        }
        let body = [0u8, 0, 0, 255, 255, 255, 255, 255, 5];
        assert!(postcard_decode::<Borrowed<'_>>(&body).is_err());
    }
}
