//! Linux: shared futex words and eventfd doorbells.

pub(crate) mod eventfd;
pub(crate) mod futex;
