//! Bad service names and unsafe directories give clear errors, before anything is bound.

#![cfg(any(target_os = "linux", target_os = "macos"))]

use std::os::unix::fs::PermissionsExt;

use ferry_transport::Error;
use ferry_transport::unix::service_dir::{
    check_private_dir, ensure_private_dir, resolve_in, validate_name,
};

#[test]
fn service_names_are_validated_with_the_reason() {
    let cases = [
        ("", "empty"),
        (".hidden", "starts with a dot"),
        ("a/b", "'/'"),
        ("sp ace", "' '"),
        ("x".repeat(65).leak() as &str, "longer than 64"),
    ];
    for (name, why) in cases {
        match validate_name(name) {
            Err(e @ Error::InvalidServiceName { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(why), "{name:?}: {msg}");
            }
            other => panic!("{name:?} accepted: {other:?}"),
        }
    }
    for ok in ["engine", "ferry-echo", "a.b_c-9", &"x".repeat(64)] {
        validate_name(ok).unwrap();
    }
}

#[test]
fn a_socket_path_too_long_for_sockaddr_un_is_refused() {
    let dir = std::path::PathBuf::from("/tmp").join("d".repeat(100));
    match resolve_in(&dir, "engine") {
        Err(e @ Error::SocketPathTooLong { .. }) => {
            assert!(e.to_string().contains("FERRY_RUNTIME_DIR"), "{e}");
        }
        other => panic!("expected SocketPathTooLong, got {other:?}"),
    }
    let paths = resolve_in(std::path::Path::new("/tmp/x"), "engine").unwrap();
    assert_eq!(paths.socket, std::path::Path::new("/tmp/x/engine.sock"));
    assert_eq!(paths.lock, std::path::Path::new("/tmp/x/engine.lock"));
}

#[test]
fn symlinks_files_and_open_directories_are_not_private() {
    let base = std::env::temp_dir().join(format!("ferry-sd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    // Created when missing, with mode 0700, parents included.
    let private = base.join("nested").join("private");
    ensure_private_dir(&private).unwrap();
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A symlink to a private directory is still refused: it could be swapped.
    let link = base.join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let e = check_private_dir(&link).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // A file is not a directory.
    let file = base.join("file");
    std::fs::write(&file, b"").unwrap();
    let e = check_private_dir(&file).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    // Group-writable is refused; the message names the mode.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o770)).unwrap();
    let e = check_private_dir(&private).unwrap_err();
    assert!(e.to_string().contains("770"), "{e}");
    // A path that does not exist is an I/O error saying what was being done.
    let e = check_private_dir(&base.join("missing")).unwrap_err();
    assert!(e.to_string().contains("inspecting"), "{e}");
    std::fs::remove_dir_all(&base).unwrap();
}
