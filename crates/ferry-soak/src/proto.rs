//! The soak's own message format, independent of Ferry's frames: every message carries the
//! sender's identity, a sequence number and a checksum over header and body, so the receiver
//! detects loss, duplication, reordering and corruption whatever the transport does.
//!
//! Header (48 bytes, little-endian): magic u32, op u8, 3 reserved, client u32, lane u32, seq u64,
//! arg u64, body_len u32, 4 reserved, checksum u64 (over bytes 0..40 and the body).

pub const MAGIC: u32 = u32::from_le_bytes(*b"SOAK");
pub const HEADER: usize = 48;

/// Request ops (client → server) and answer ops (server → client).
pub mod op {
    /// Completion-style call: small body; `arg` = response body length.
    pub const CALL: u8 = 1;
    /// File-analysis call: large body; the answer carries the checksum the server computed.
    pub const FILE: u8 = 2;
    /// Chat-style stream: `arg` = item count (low 32 bits) | largest item body (high 32).
    pub const STREAM: u8 = 3;
    /// Deferred call answered after `arg` milliseconds unless cancelled.
    pub const SLOW: u8 = 4;
    /// Client → server notification.
    pub const NOTE: u8 = 5;
    /// Answer to CALL / FILE / SLOW.
    pub const ANSWER: u8 = 6;
    /// One stream item: `seq` = item index, `arg` = the stream request's seq.
    pub const ITEM: u8 = 7;
    /// Server → client notification: `client` = server connection id, `lane` = server pid.
    pub const PUSH: u8 = 8;
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub op: u8,
    pub client: u32,
    pub lane: u32,
    pub seq: u64,
    pub arg: u64,
}

/// What is wrong with a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Short,
    Magic,
    Length,
    Checksum,
}

impl Bad {
    pub fn name(self) -> &'static str {
        match self {
            Bad::Short => "short",
            Bad::Magic => "magic",
            Bad::Length => "length",
            Bad::Checksum => "checksum",
        }
    }
}

/// 64-bit content checksum: each 8-byte word is mixed in with a bijective step, so any change of
/// one word always changes the result; the length is mixed in last.
pub fn checksum(parts: &[&[u8]]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    let mut total = 0usize;
    for part in parts {
        total += part.len();
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(w) ^ 0xFF)
                .wrapping_mul(K)
                .rotate_left(29);
        }
    }
    (h ^ total as u64).wrapping_mul(K)
}

/// Writes a message with a `body_len`-byte body filled from `fill_seed` into `out` (cleared).
pub fn build(out: &mut Vec<u8>, head: Head, body_len: usize, fill_seed: u64) {
    out.clear();
    out.resize(HEADER + body_len, 0);
    fill(&mut out[HEADER..], fill_seed);
    seal(out, head);
}

/// Writes the header of `msg` (whose body is already in place) and its checksum.
pub fn seal(msg: &mut [u8], head: Head) {
    let body_len = (msg.len() - HEADER) as u32;
    msg[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    msg[4] = head.op;
    msg[5..8].fill(0);
    msg[8..12].copy_from_slice(&head.client.to_le_bytes());
    msg[12..16].copy_from_slice(&head.lane.to_le_bytes());
    msg[16..24].copy_from_slice(&head.seq.to_le_bytes());
    msg[24..32].copy_from_slice(&head.arg.to_le_bytes());
    msg[32..36].copy_from_slice(&body_len.to_le_bytes());
    msg[36..40].fill(0);
    let sum = checksum(&[&msg[..40], &msg[HEADER..]]);
    msg[40..48].copy_from_slice(&sum.to_le_bytes());
}

/// Validates a message and returns its header.
pub fn parse(msg: &[u8]) -> Result<Head, Bad> {
    if msg.len() < HEADER {
        return Err(Bad::Short);
    }
    let u32_at = |o: usize| u32::from_le_bytes(msg[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(msg[o..o + 8].try_into().expect("8 bytes"));
    if u32_at(0) != MAGIC {
        return Err(Bad::Magic);
    }
    if u32_at(32) as usize != msg.len() - HEADER {
        return Err(Bad::Length);
    }
    if checksum(&[&msg[..40], &msg[HEADER..]]) != u64_at(40) {
        return Err(Bad::Checksum);
    }
    Ok(Head {
        op: msg[4],
        client: u32_at(8),
        lane: u32_at(12),
        seq: u64_at(16),
        arg: u64_at(24),
    })
}

/// The checksum field of a message (meaningful after `parse` succeeded).
pub fn sum_of(msg: &[u8]) -> u64 {
    u64::from_le_bytes(msg[40..48].try_into().expect("8 bytes"))
}

/// Fills `out` with pseudo-random bytes from `seed`.
pub fn fill(out: &mut [u8], seed: u64) {
    let mut r = Rng::new(seed);
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = r.next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// splitmix64: small, seedable, good enough for workloads and fault schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform in `lo..=hi` (both > 0): as many draws between 1 KiB and 2 KiB as between
    /// 1 MiB and 2 MiB.
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(lo).max(1) as f64).ln());
        ((l + (h - l) * self.unit()).exp() as usize).clamp(lo, hi)
    }
}

/// Mixes several numbers into one seed.
pub fn mix(parts: &[u64]) -> u64 {
    let mut r = Rng::new(0);
    let mut h = 0u64;
    for &p in parts {
        r.0 ^= p.wrapping_add(h);
        h = r.next();
    }
    h
}

/// Log-scale latency histogram: 8 buckets per power of two of microseconds.
pub const BUCKETS_PER_OCTAVE: f64 = 8.0;

pub fn bucket_of(micros: f64) -> usize {
    if micros <= 1.0 {
        return 0;
    }
    (micros.log2() * BUCKETS_PER_OCTAVE).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_flip_is_caught() {
        let head = Head {
            op: op::CALL,
            client: 7,
            lane: 1,
            seq: 42,
            arg: 99,
        };
        let mut msg = Vec::new();
        build(&mut msg, head, 37, 5);
        assert_eq!(parse(&msg), Ok(head));
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x10;
            assert!(parse(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert_eq!(parse(&msg[..msg.len() - 1]), Err(Bad::Length));
        assert_eq!(parse(&msg[..10]), Err(Bad::Short));
    }

    #[test]
    fn log_sizes_stay_in_range_and_spread_over_octaves() {
        let mut r = Rng::new(1);
        let mut small = 0;
        for _ in 0..10_000 {
            let s = r.log_size(64 << 10, 16 << 20);
            assert!((64 << 10..=16 << 20).contains(&s));
            if s < 128 << 10 {
                small += 1;
            }
        }
        // One octave of eight: about an eighth of the draws.
        assert!((900..1600).contains(&small), "{small}");
    }
}
