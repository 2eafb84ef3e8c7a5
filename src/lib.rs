//! Ferry: shared-memory IPC between processes on one machine.
//!
//! This facade re-exports the layered crates so that the workspace's top-level
//! `tests/` and `benches/` can use them; applications depend on the individual
//! crates (`ferry-ring`, `ferry-frame`, `ferry-notify`, `ferry-transport`).

pub use ferry_frame as frame;
pub use ferry_notify as notify;
pub use ferry_ring as ring;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use ferry_transport as transport;
