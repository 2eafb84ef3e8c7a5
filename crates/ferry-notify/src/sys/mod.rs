//! One module per OS mechanism; `lib.rs` picks among them.

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod linux;

#[cfg(windows)]
pub(crate) mod windows;

#[cfg(target_vendor = "apple")]
pub(crate) mod macos;

/// The in-process word wait where the OS has none (macOS before 14.4); built everywhere for
/// its tests.
#[cfg(any(target_vendor = "apple", test))]
pub(crate) mod address_table;

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    windows,
    target_vendor = "apple"
)))]
compile_error!("ferry-notify supports Linux, Windows and macOS only");
