//! The payload of `Handles` (Windows named pipe only, server → client, right after
//! `Welcome`): the handles the server duplicated into the client's process. See
//! `docs/protocol.md` §5.5.
//!
//! Only the numbers travel: the server calls `DuplicateHandle` into the client's process and
//! sends the values the handles have *there*. The client treats them as untrusted: this module
//! checks the layout (count, roles, value range); the transport then checks that each handle is
//! the object its role claims before using it.

use crate::codec::EncodeError;
use crate::payload::PayloadError;

/// What a handle in a [`Handles`] payload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum HandleRole {
    /// The connection's shared memory: a file-mapping (section) object holding both rings.
    SharedMemory = 1,
    /// The doorbell the server waits on (an event the client sets).
    ServerDoorbell = 2,
    /// The doorbell the client waits on (an event the server sets).
    ClientDoorbell = 3,
}

impl HandleRole {
    /// The role with wire value `value`, or `None` if no role has it.
    #[must_use]
    pub const fn from_u32(value: u32) -> Option<HandleRole> {
        Some(match value {
            1 => HandleRole::SharedMemory,
            2 => HandleRole::ServerDoorbell,
            3 => HandleRole::ClientDoorbell,
            _ => return None,
        })
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self as u32
    }
}

/// One handle: its role and its value in the receiving (client) process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandleEntry {
    /// What the handle is for.
    pub role: HandleRole,
    /// The handle's value in the client's process.
    pub value: u64,
}

/// `Handles` payload: 1 to [`Handles::MAX_HANDLES`] handles, each role at most once.
///
/// Layout (little-endian): `count: u32`, `reserved: u32` (0), then `count` entries of 16 bytes:
/// `role: u32`, `reserved: u32` (0), `value: u64`. The payload is exactly `8 + 16 × count`
/// bytes. A value must be a valid kernel handle number: non-zero, a multiple of 4, below 2^31
/// (this rules out the pseudo-handles such as `GetCurrentProcess()`, whose values are small
/// negative numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handles {
    entries: [HandleEntry; Handles::MAX_HANDLES],
    len: usize,
}

const WHAT: &str = "Handles";
const HEAD: usize = 8;
const ENTRY: usize = 16;

impl Handles {
    /// Most handles one payload may carry.
    pub const MAX_HANDLES: usize = 4;
    /// Longest encoded payload: 8 + 16 × [`MAX_HANDLES`](Self::MAX_HANDLES) bytes.
    pub const MAX_LEN: usize = HEAD + ENTRY * Handles::MAX_HANDLES;
    /// Values at or above this are not handle numbers (sign-extended, they would be
    /// pseudo-handles).
    pub const VALUE_LIMIT: u64 = 1 << 31;

    /// A payload listing `entries`, validated as [`decode`](Self::decode) would.
    ///
    /// # Errors
    ///
    /// [`PayloadError::BadHandleCount`], [`PayloadError::DuplicateHandleRole`] or
    /// [`PayloadError::BadHandleValue`].
    pub fn new(entries: &[HandleEntry]) -> Result<Self, PayloadError> {
        if entries.is_empty() || entries.len() > Self::MAX_HANDLES {
            return Err(PayloadError::BadHandleCount {
                count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
                max: Self::MAX_HANDLES,
            });
        }
        let mut out = Handles::empty();
        for e in entries {
            out.push(*e)?;
        }
        Ok(out)
    }

    /// No entries (the unused slots are never read: `len` bounds them).
    const fn empty() -> Self {
        Handles {
            entries: [HandleEntry {
                role: HandleRole::SharedMemory,
                value: 0,
            }; Self::MAX_HANDLES],
            len: 0,
        }
    }

    fn push(&mut self, e: HandleEntry) -> Result<(), PayloadError> {
        if e.value == 0 || !e.value.is_multiple_of(4) || e.value >= Self::VALUE_LIMIT {
            return Err(PayloadError::BadHandleValue {
                role: e.role.as_u32(),
                value: e.value,
            });
        }
        if self.get(e.role).is_some() {
            return Err(PayloadError::DuplicateHandleRole {
                role: e.role.as_u32(),
            });
        }
        self.entries[self.len] = e;
        self.len += 1;
        Ok(())
    }

    /// The handles, in wire order.
    #[must_use]
    pub fn entries(&self) -> &[HandleEntry] {
        &self.entries[..self.len]
    }

    /// The value of the handle with role `role`, if listed.
    #[must_use]
    pub fn get(&self, role: HandleRole) -> Option<u64> {
        self.entries()
            .iter()
            .find(|e| e.role == role)
            .map(|e| e.value)
    }

    /// Encoded length: 8 + 16 × the number of handles.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEAD + ENTRY * self.len
    }

    /// Writes the payload to the front of `out`. Returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if `out` is too short; nothing is written then.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(EncodeError::BufferTooSmall {
                needed: len,
                got: out.len(),
            });
        };
        // `len` is at most MAX_HANDLES, so it fits in a u32.
        out[..4].copy_from_slice(&(self.len as u32).to_le_bytes());
        out[4..HEAD].fill(0);
        for (e, chunk) in self
            .entries()
            .iter()
            .zip(out[HEAD..].chunks_exact_mut(ENTRY))
        {
            chunk[..4].copy_from_slice(&e.role.as_u32().to_le_bytes());
            chunk[4..8].fill(0);
            chunk[8..].copy_from_slice(&e.value.to_le_bytes());
        }
        Ok(len)
    }

    /// The encoded payload in a fixed buffer, and its length.
    #[must_use]
    pub fn to_bytes(&self) -> ([u8; Handles::MAX_LEN], usize) {
        let mut out = [0u8; Handles::MAX_LEN];
        let len = self.encoded_len();
        // Cannot fail: the buffer holds the longest payload.
        let _ = self.encode(&mut out);
        (out, len)
    }

    /// Parses and validates a `Handles` payload.
    ///
    /// # Errors
    ///
    /// [`PayloadError::WrongLength`] if shorter than 8 bytes or not exactly `8 + 16 × count`;
    /// [`PayloadError::BadHandleCount`] if `count` is 0 or above
    /// [`MAX_HANDLES`](Self::MAX_HANDLES); [`PayloadError::ReservedNonZero`];
    /// [`PayloadError::UnknownHandleRole`]; [`PayloadError::DuplicateHandleRole`];
    /// [`PayloadError::BadHandleValue`].
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let Some((count, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(PayloadError::WrongLength {
                what: WHAT,
                expected: HEAD,
                got: bytes.len(),
            });
        };
        let count = u32::from_le_bytes(*count);
        if count == 0 || count as usize > Self::MAX_HANDLES {
            return Err(PayloadError::BadHandleCount {
                count,
                max: Self::MAX_HANDLES,
            });
        }
        let expected = HEAD + ENTRY * count as usize;
        if bytes.len() != expected {
            return Err(PayloadError::WrongLength {
                what: WHAT,
                expected,
                got: bytes.len(),
            });
        }
        let reserved = read_u32(rest, 0);
        if reserved != 0 {
            return Err(PayloadError::ReservedNonZero {
                what: WHAT,
                field: "reserved",
                value: reserved,
            });
        }
        let mut out = Handles::empty();
        for chunk in bytes[HEAD..].chunks_exact(ENTRY) {
            let role = read_u32(chunk, 0);
            let Some(role) = HandleRole::from_u32(role) else {
                return Err(PayloadError::UnknownHandleRole { role });
            };
            let reserved = read_u32(chunk, 4);
            if reserved != 0 {
                return Err(PayloadError::ReservedNonZero {
                    what: WHAT,
                    field: "entry reserved",
                    value: reserved,
                });
            }
            let mut value = [0u8; 8];
            value.copy_from_slice(&chunk[8..16]);
            out.push(HandleEntry {
                role,
                value: u64::from_le_bytes(value),
            })?;
        }
        Ok(out)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}
