//! The seeded schedule: the random number generator every choice of a run draws from, and the
//! faults the chaos schedule injects.

use std::time::Duration;

/// splitmix64 (xtask has no dependencies).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Faults the chaos schedule injects, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL a random honest client (often mid-write of a large message) and start a new one.
    KillClient,
    /// SIGKILL the server and start a new one; clients reconnect.
    KillServer,
    /// SIGSTOP a client for 0.5–3 s (a peer that stops reading), then SIGCONT.
    StopClient,
    /// Three hostile clients at once, modes cycling through all of `HOSTILE_MODES`.
    Hostile,
    /// One process connecting and disconnecting as fast as it can for 2 s.
    Churn,
    /// The server opens descriptors up to 3 below its limit; a new connection must get a clear
    /// error, existing ones go on; then it lets go and a new connection must work.
    FdLimit,
    /// A connection attempt from uid 65534.
    OtherUid,
    /// The server's RLIMIT_FSIZE drops below a connection's size: creating a connection's
    /// shared memory fails (ftruncate: EFBIG); a new connection must be refused saying so.
    ShmLimit,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::KillClient,
        Fault::KillServer,
        Fault::StopClient,
        Fault::Hostile,
        Fault::Churn,
        Fault::FdLimit,
        Fault::OtherUid,
        Fault::ShmLimit,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillClient => "kill_client",
            Fault::KillServer => "kill_server",
            Fault::StopClient => "stop_client",
            Fault::Hostile => "hostile",
            Fault::Churn => "churn",
            Fault::FdLimit => "fd_limit",
            Fault::OtherUid => "other_uid",
            Fault::ShmLimit => "shm_limit",
        }
    }
}

pub const HOSTILE_MODES: [&str; 11] = [
    "scribble",
    "cursor",
    "length",
    "frames",
    "s2c_cursor",
    "garbage",
    "oversized",
    "version",
    "hdrversion",
    "wrongkind",
    "silent",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let mut x: Vec<u32> = (0..20).collect();
        let mut y = x.clone();
        a.shuffle(&mut x);
        b.shuffle(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, (0..20).collect::<Vec<_>>());
    }
}
