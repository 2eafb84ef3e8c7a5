//! Helpers shared by the integration tests: raw pokes into a ring region,
//! standing in for a buggy or hostile peer.
#![allow(dead_code)]

use ferry_ring::{HEADER_SIZE, Region};

/// Offsets of header words (see the crate docs' layout table).
pub const MAGIC_OFF: usize = 0;
pub const VERSION_OFF: usize = 8;
pub const CAPACITY_OFF: usize = 12;
pub const TAIL_OFF: usize = 128;
pub const CONSUMER_SLEEP_OFF: usize = 136; // in the producer line (since layout v2)
pub const HEAD_OFF: usize = 256;
pub const PRODUCER_SLEEP_OFF: usize = 264; // in the consumer line (since layout v2)

/// Offset in the region of data-area offset `off`.
pub fn data(off: usize) -> usize {
    HEADER_SIZE + off
}

/// Pointer to byte `off` of the region (checked to be in bounds).
fn at<R: Region + ?Sized>(region: &R, off: usize) -> *mut u8 {
    assert!(off < region.len());
    region.as_ptr().wrapping_add(off)
}

pub fn poke_u64<R: Region + ?Sized>(region: &R, off: usize, v: u64) {
    assert!(off.is_multiple_of(8) && off + 8 <= region.len());
    // SAFETY: in bounds and aligned (asserted); tests poke only while no other
    // thread uses the region.
    unsafe { at(region, off).cast::<u64>().write_volatile(v) }
}

pub fn poke_u32<R: Region + ?Sized>(region: &R, off: usize, v: u32) {
    assert!(off.is_multiple_of(4) && off + 4 <= region.len());
    // SAFETY: as `poke_u64`.
    unsafe { at(region, off).cast::<u32>().write_volatile(v) }
}

pub fn peek_u64<R: Region + ?Sized>(region: &R, off: usize) -> u64 {
    assert!(off.is_multiple_of(8) && off + 8 <= region.len());
    // SAFETY: as `poke_u64`.
    unsafe { at(region, off).cast::<u64>().read_volatile() }
}

pub fn peek_u32<R: Region + ?Sized>(region: &R, off: usize) -> u32 {
    assert!(off.is_multiple_of(4) && off + 4 <= region.len());
    // SAFETY: as `poke_u64`.
    unsafe { at(region, off).cast::<u32>().read_volatile() }
}

/// Writes a record header word (`len`, `tag`) at data offset `off`.
pub fn poke_record<R: Region + ?Sized>(region: &R, off: usize, len: u32, tag: u32) {
    poke_u64(region, data(off), u64::from(len) | (u64::from(tag) << 32));
}

/// Reads the record header at data offset `off` as `(len, tag)`.
pub fn peek_record<R: Region + ?Sized>(region: &R, off: usize) -> (u32, u32) {
    let w = peek_u64(region, data(off));
    (w as u32, (w >> 32) as u32)
}

/// Deterministic payload for record number `seq` of length `len`.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}
