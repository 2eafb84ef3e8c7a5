//! Unix control plane (Linux; macOS compile-checked): service directory, bound socket, control
//! frames, shared memory.

pub mod control;
pub mod listener;
pub(crate) mod poller;
pub mod service_dir;
pub mod shm;
