//! Unix control plane (Linux; macOS compile-checked only): service directory, bound socket,
//! control frames, shared memory; and the server workers' poller (epoll; macOS: kqueue).

pub mod control;
pub mod listener;
pub(crate) mod poller;
pub mod service_dir;
pub mod shm;
