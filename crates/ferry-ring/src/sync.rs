//! Atomics shim: `core`'s atomics normally, `loom`'s under `--cfg loom`.
//!
//! Every atomic in the crate comes from here, so that the loom models in
//! `tests/loom.rs` explore the real code (crossbeam-utils style). The data
//! area (record headers and payload) is plain memory ordered by the
//! `tail`/`head` cursors, which loom does model. The header's reserved words
//! are `core` atomics even under loom: they are never read.

#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(not(loom))]
pub use core::hint::spin_loop;
#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicU64, fence};

pub use core::sync::atomic::Ordering;
