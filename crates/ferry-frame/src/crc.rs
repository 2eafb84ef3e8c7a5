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
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
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
    fn append_composes_and_matches_software() {
        let data: [u8; 300] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for split in [0, 1, 24, 150, 299, 300] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
            assert_eq!(software_append(software_append(0, a), b), crc32c(&data));
        }
    }
}
