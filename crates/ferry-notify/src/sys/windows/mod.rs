//! Windows: named auto-reset events.

pub(crate) mod event;
