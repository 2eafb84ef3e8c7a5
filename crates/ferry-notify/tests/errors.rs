//! Untrusted input and OS refusals give errors that say what went wrong and what to do.

use ferry_notify::{NotifyError, ParkerSpec, SetupError};

#[test]
fn hot_path_errors_say_what_to_do() {
    let unsupported = NotifyError::Unsupported.to_string();
    assert!(unsupported.contains("not supported") && unsupported.contains("Parker or a Doorbell"));
    let invalid = NotifyError::InvalidObject.to_string();
    assert!(invalid.contains("rejected") && invalid.contains("reconnect"));
    let os = NotifyError::Os(13).to_string();
    assert!(
        os.contains("OS error 13") && os.contains("reconnect"),
        "{os}"
    );
}

#[test]
fn a_garbage_parker_spec_from_the_peer_is_refused() {
    for text in ["", "futex ", "event:", "sem:/x", "nonsense", "\u{0}\u{1}"] {
        match ParkerSpec::parse(text) {
            Err(e @ SetupError::InvalidName { .. }) => {
                let msg = e.to_string();
                assert!(!msg.is_empty());
                // On Linux every one of these falls through to the generic refusal.
                #[cfg(target_os = "linux")]
                assert!(msg.contains("not a parker spec"), "{msg}");
            }
            other => panic!("{text:?} parsed as {other:?}"),
        }
        assert!(text.parse::<ParkerSpec>().is_err());
    }
}

#[test]
fn a_spec_survives_its_text_form() {
    let parker = ferry_notify::Parker::new().unwrap();
    let text = parker.spec().to_string();
    let parsed: ParkerSpec = text.parse().unwrap();
    assert_eq!(parsed.as_str(), parker.spec().as_str());
}

#[cfg(target_os = "linux")]
#[test]
fn a_descriptor_that_is_not_an_eventfd_is_not_a_doorbell() {
    use std::os::fd::OwnedFd;
    let file = std::fs::File::open("/dev/null").unwrap();
    match ferry_notify::Doorbell::from_owned_fd(OwnedFd::from(file)) {
        Err(e @ SetupError::NotADoorbell { .. }) => assert!(!e.to_string().is_empty()),
        other => panic!("/dev/null accepted as a doorbell: {other:?}"),
    }
}
