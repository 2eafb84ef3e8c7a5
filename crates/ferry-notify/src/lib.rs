//! ferry-notify (skeleton: being built).
