//! Windows: auto-reset events, named (`Local\ferry-<SID>-<random>`) or unnamed (handed over
//! with `DuplicateHandle`).

pub(crate) mod event;
