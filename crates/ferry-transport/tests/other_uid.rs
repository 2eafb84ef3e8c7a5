//! A client running as another user is refused, by a real second uid: the test (as root) starts a
//! child process that switches to uid/gid 65534 ("nobody") before connecting.
//!
//! Two doors are checked. Through the library, the other user's client refuses the runtime
//! directory itself (it belongs to someone else). Keeping only `CAP_DAC_OVERRIDE` (so file modes
//! do not stop it first), the child reaches the socket and says Hello: the server checks the
//! peer's uid with `SO_PEERCRED` and answers `Refuse` with the reason, and keeps serving its own
//! user.
//!
//! The test needs root, so it is `#[ignore]`d (a run as another user shows it as ignored, not
//! passed); `cargo xtask ci` runs it with `--ignored` when it runs as root.

#![cfg(target_os = "linux")]

mod common;

use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use ferry_frame::{ErrorCode, ErrorPayload, Hello, Kind};
use ferry_transport::unix::control;
use ferry_transport::{Client, Error};

const SERVICE: &str = "otheruid";
const NOBODY: u32 = 65534;

child_entry!(|role, dir| {
    assert_eq!(role, "nobody");
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let uid = rustix::process::Uid::from_raw(NOBODY);
    let gid = rustix::process::Gid::from_raw(NOBODY);
    rustix::thread::set_keep_capabilities(true).expect("keepcaps");
    rustix::thread::set_thread_groups(&[]).expect("setgroups");
    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
    assert_eq!(rustix::process::geteuid().as_raw(), NOBODY);

    // 1. The library, as the other user: the directory is not theirs.
    let lib = match Client::connect_with(SERVICE, client_config(&dir)) {
        Ok(_) => "connected".to_owned(),
        Err(Error::UnsafeDirectory { .. }) => "unsafe-directory".to_owned(),
        Err(e) => format!("other: {e}"),
    };

    // 2. Past the file modes, at the server's uid check.
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::DAC_OVERRIDE,
            permitted: CapabilitySet::DAC_OVERRIDE,
            inheritable: CapabilitySet::empty(),
        },
    )
    .expect("capset");
    let sock = UnixStream::connect(dir.join(format!("{SERVICE}.sock"))).expect("connect as nobody");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = Hello::new(ferry_frame::Limits::default()).to_bytes();
    control::send_frame(&sock, Kind::Hello, 0, &hello, &[]).expect("send Hello");
    let frame = control::recv_frame(&sock)
        .expect("read the answer")
        .expect("an answer, not a hang-up");
    let reply = if frame.header.kind() == Kind::Refuse {
        let p = ErrorPayload::decode(&frame.payload).expect("a Refuse payload");
        format!("refused code={:#x} message={}", p.code.0, p.message)
    } else {
        format!("accepted kind={:?}", frame.header.kind())
    };
    println!("OUTCOME {lib} | {reply}");
});

#[test]
#[ignore = "needs root (switches to uid 65534): `cargo test --test other_uid -- --ignored` as root; \
            `cargo xtask ci` runs it when it runs as root"]
fn another_uid_is_refused_and_the_owner_is_still_served() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test switches a child process to uid {NOBODY}, which needs root: run it as root"
    );
    let dir = TestDir::new("otheruid");
    let server = echo_plus_one_server(&dir, SERVICE);
    let mut child = spawn("nobody", dir.path(), &[]);
    let outcome = wait_line(&mut child, "OUTCOME ", Duration::from_secs(20));
    let (lib, raw) = outcome.split_once(" | ").expect("`<lib> | <raw>`");
    let raw = raw.trim();
    let status = child.wait().unwrap();
    assert!(status.success(), "the other-uid child failed: {status}");
    assert_eq!(
        lib.trim(),
        "unsafe-directory",
        "library connect as uid {NOBODY}"
    );
    assert!(
        raw.starts_with(&format!("refused code={:#x}", ErrorCode::REFUSED.0)),
        "raw Hello as uid {NOBODY}: {raw}"
    );
    assert!(
        raw.contains(&format!("uid {NOBODY}")),
        "the reason names the uid: {raw}"
    );
    assert_eq!(server.stats().connections_accepted, 0);
    // The owner is still served.
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    assert_eq!(&*client.call(&[1, 2]).unwrap(), &[2, 3]);
}
