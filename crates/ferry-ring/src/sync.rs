//! Atomics shim: `core`'s atomics normally, `loom`'s under `--cfg loom`.
//!
//! Every atomic in the crate comes from here, so that the loom models in
//! `tests/loom.rs` explore the real code (crossbeam-utils style). The one
//! deliberate exception is the record header word in the data area, which is
//! accessed through `core::sync::atomic::AtomicU64::from_ptr` because loom
//! atomics cannot live at an arbitrary address; its ordering is carried by the
//! `tail`/`head` cursors, which loom does model.

#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(not(loom))]
pub use core::hint::spin_loop;
#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicU64, fence};

pub use core::sync::atomic::Ordering;
