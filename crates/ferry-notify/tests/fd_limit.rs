//! Running out of descriptors yields a `SetupError` that says what to do, not a panic.
//!
//! Alone in its own test binary because it lowers the process-wide `RLIMIT_NOFILE`.

#![cfg(target_os = "linux")]

use ferry_notify::{Doorbell, SetupError};
use rustix::process::{Resource, getrlimit, setrlimit};

#[test]
fn doorbell_creation_reports_the_descriptor_limit() {
    let saved = getrlimit(Resource::Nofile);
    // With a soft limit of 0 no new descriptor can be created (EMFILE).
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: saved.maximum,
        },
    )
    .expect("lower RLIMIT_NOFILE");
    let result = Doorbell::new();
    setrlimit(Resource::Nofile, saved).expect("restore RLIMIT_NOFILE");

    let err = result.expect_err("no descriptor can be created");
    assert!(matches!(err, SetupError::ProcessLimit { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("EMFILE") && msg.contains("ulimit -n"), "{msg}");
    // And with the limit restored it works again.
    Doorbell::new().expect("doorbell after restoring the limit");
}
