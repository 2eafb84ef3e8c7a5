//! ferry-frame (skeleton: being built).
