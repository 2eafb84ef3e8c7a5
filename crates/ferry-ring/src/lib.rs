//! ferry-ring (skeleton: being built).
