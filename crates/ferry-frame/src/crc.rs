//! CRC-32C (Castagnoli), the checksum carried in every frame header.
//!
//! Parameters (the "CRC-32/ISCSI" entry of the Rocksoft catalogue): polynomial
//! `0x1EDC6F41` (reflected `0x82F63B78`), initial value `0xFFFFFFFF`, input and
//! output reflected, final XOR `0xFFFFFFFF`. Check value of the ASCII bytes
//! `"123456789"`: `0xE3069283`.
//!
//! With the `std` feature the hardware-accelerated [`crc32c`](https://docs.rs/crc32c)
//! crate computes it (SSE 4.2 `crc32` instruction on x86-64, ARMv8 CRC on aarch64,
//! chosen at run time); without `std` a portable table-driven implementation is used.
//! Both give identical results (a test checks this).

/// Reflected CRC-32C polynomial.
pub const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// Continues a CRC-32C over `data`, starting from a previous result `crc`
/// (pass `0` to start). `crc32c_append(crc32c_append(0, a), b)` equals the CRC of
/// `a` followed by `b`.
#[inline]
#[must_use]
#[allow(unsafe_code)]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if data.len() <= SMALL && std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `append_small_sse42` requires only that the CPU supports SSE 4.2,
            // which was detected at run time just above.
            return unsafe { append_small_sse42(crc, data) };
        }
    }
    #[cfg(feature = "std")]
    {
        crc32c::crc32c_append(crc, data)
    }
    #[cfg(not(feature = "std"))]
    {
        software_append(crc, data)
    }
}

/// CRC-32C of `data`.
#[inline]
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// CRC-32C of a 24-byte frame header with its CRC field (bytes 12..16) taken
/// as zero, as a finished CRC that [`crc32c_append`] can continue over the payload.
///
/// On x86-64 with SSE 4.2 this is four `crc32` instructions, inlined; a general
/// CRC call costs several times that for so few bytes, and this runs twice per
/// message (encode and decode).
#[inline]
#[must_use]
#[allow(unsafe_code)]
pub(crate) fn header_crc(h: &[u8; crate::HEADER_LEN]) -> u32 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `header_crc_sse42` requires only that the CPU supports
            // SSE 4.2, which was detected at run time just above.
            return unsafe { header_crc_sse42(h) };
        }
    }
    header_crc_portable(h)
}

/// Up to this many bytes, [`crc32c_append`] runs `crc32` instructions in a plain inlined loop
/// instead of calling the `crc32c` crate, whose dispatch and three-way split cost more than
/// the CRC itself for a small message's payload (a quarter of the server's time in a one-way
/// 64 B run, by `perf`).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
const SMALL: usize = 256;

/// CRC-32C continued over `data` (at most a few hundred bytes) with SSE 4.2, eight bytes per
/// instruction, then the tail byte by byte.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "sse4.2")]
fn append_small_sse42(crc: u32, data: &[u8]) -> u32 {
    use core::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(!crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// [`header_crc`] without the SSE 4.2 path: CRC of a zeroed copy.
fn header_crc_portable(h: &[u8; crate::HEADER_LEN]) -> u32 {
    let mut zeroed = *h;
    zeroed[crate::offset::CRC..crate::offset::CRC + 4].fill(0);
    crc32c_append(0, &zeroed)
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "sse4.2")]
fn header_crc_sse42(h: &[u8; crate::HEADER_LEN]) -> u32 {
    use core::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let w0 = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    let w1 = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let w3 = u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]);
    let mut c = _mm_crc32_u64(u64::from(u32::MAX), w0);
    c = u64::from(_mm_crc32_u32(c as u32, w1));
    // The CRC field, taken as zero.
    c = u64::from(_mm_crc32_u32(c as u32, 0));
    c = _mm_crc32_u64(c, w3);
    !(c as u32)
}

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static TABLE: [u32; 256] = make_table();

/// Portable byte-at-a-time CRC-32C (used without `std`; also the reference the
/// tests compare the accelerated path against).
#[must_use]
pub fn software_append(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(software_append(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn header_crc_skips_the_crc_field() {
        for seed in 0..64u8 {
            let h: [u8; crate::HEADER_LEN] =
                core::array::from_fn(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed));
            let mut zeroed = h;
            zeroed[crate::offset::CRC..crate::offset::CRC + 4].fill(0);
            assert_eq!(header_crc(&h), software_append(0, &zeroed), "seed {seed}");
            assert_eq!(header_crc(&h), header_crc(&zeroed));
            assert_eq!(header_crc(&h), header_crc_portable(&h));
        }
    }

    #[test]
    fn every_small_length_and_alignment_matches_software() {
        let data: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ 0x5a);
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let part = &data[start..start + len];
                for seed in [0, 0xdead_beef] {
                    assert_eq!(
                        crc32c_append(seed, part),
                        software_append(seed, part),
                        "start {start}, len {len}, seed {seed:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn append_composes_and_matches_software() {
        let data: [u8; 300] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for split in [0, 1, 24, 150, 299, 300] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
            assert_eq!(software_append(software_append(0, a), b), crc32c(&data));
        }
    }
}
