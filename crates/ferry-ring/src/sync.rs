//! Atomics shim: `core`'s atomics normally, `loom`'s under `--cfg loom`.
//!
//! Every atomic in the crate comes from here, so that the loom models in
//! `tests/loom.rs` explore the real code (crossbeam-utils style). Since layout
//! version 3 a record is published by its record word (the 8-byte word that
//! starts it, stored last with Release) and the consumer finds records by
//! loading the record word at its head (Acquire), not the producer's `tail`:
//! the record words are atomics, and under loom they live in a table of loom
//! atomics after the data area (see `raw.rs` and the loom `region_size`),
//! since loom atomics cannot live in plain bytes. The payload is plain memory
//! ordered by its record word. The header's reserved words are `core` atomics
//! even under loom: they are never read.

#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(not(loom))]
pub use core::hint::spin_loop;
#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicU64, fence};

pub use core::sync::atomic::Ordering;
