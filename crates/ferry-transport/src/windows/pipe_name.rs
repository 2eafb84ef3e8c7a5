//! Where a service's control pipe lives: `\\.\pipe\ferry-<user SID>-<service name>`.
//!
//! The service name is validated exactly as on Unix ([`validate_name`]: 1 to 64 characters
//! from `[A-Za-z0-9._-]`, not starting with a dot). The user's SID in the name keeps two
//! users' services apart: their pipes never share a name, so neither can be in the other's way
//! by accident. (On purpose, a squatter can still create *our* name first; the server's
//! `FILE_FLAG_FIRST_PIPE_INSTANCE` and both sides' identity checks catch that, see
//! [`pipe`](super::pipe).)
//!
//! Named pipe names are case-insensitive: services `Engine` and `engine` share a pipe on
//! Windows (the second server to bind gets [`Error::AlreadyRunning`]), where on Unix they are
//! two sockets.

pub use crate::service_name::{MAX_NAME_LEN, validate_name};

use super::identity::Sid;
use crate::error::Error;

/// What every Ferry pipe name starts with.
pub const PIPE_PREFIX: &str = r"\\.\pipe\ferry-";

/// Longest pipe name Windows accepts (characters, the `\\.\pipe\` prefix included).
pub const MAX_PIPE_NAME: usize = 256;

/// The pipe of service `name` for the current user.
///
/// # Errors
/// [`Error::InvalidServiceName`] for a name [`validate_name`] refuses or whose pipe name would
/// be too long; [`Error::Io`] if the current user's SID cannot be read.
pub fn resolve(name: &str) -> Result<String, Error> {
    resolve_for(&Sid::current_user()?, name)
}

/// The pipe of service `name` for user `sid`.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_for(sid: &Sid, name: &str) -> Result<String, Error> {
    validate_name(name)?;
    let pipe = format!("{PIPE_PREFIX}{sid}-{name}");
    checked_len(name, pipe)
}

/// The pipe of service `name` for user `sid`, in the scope of `runtime_dir` when given:
/// `\\.\pipe\ferry-<SID>@<16 hex digits>-<name>`, the digits a 64-bit FNV-1a hash of the
/// path's UTF-8 bytes (as written: `C:\a` and `c:\a\` are two scopes). A scope lets two sets
/// of servers and clients of one user use the same service names without meeting (what a
/// runtime directory does on Unix); a hash keeps the name short and free of characters a pipe
/// name cannot hold.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_scoped(
    sid: &Sid,
    name: &str,
    runtime_dir: Option<&std::path::Path>,
) -> Result<String, Error> {
    let Some(dir) = runtime_dir else {
        return resolve_for(sid, name);
    };
    validate_name(name)?;
    let pipe = format!(
        "{PIPE_PREFIX}{sid}@{:016x}-{name}",
        fnv1a(dir.to_string_lossy().as_bytes())
    );
    checked_len(name, pipe)
}

/// `pipe`, if Windows accepts a name that long.
fn checked_len(name: &str, pipe: String) -> Result<String, Error> {
    if pipe.len() > MAX_PIPE_NAME {
        return Err(Error::InvalidServiceName {
            name: name.to_owned(),
            why: format!(
                "its pipe name {pipe} would be {} characters, more than the {MAX_PIPE_NAME} \
                 Windows allows; use a shorter service name",
                pipe.len()
            ),
        });
    }
    Ok(pipe)
}

/// 64-bit FNV-1a: stable across processes and Rust versions (unlike `std`'s hashers).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_makes_another_pipe_name_and_the_same_one_every_time() {
        let sid: Sid = "S-1-5-21-1-2-3-1000".parse().unwrap();
        let a = resolve_scoped(&sid, "engine", Some(std::path::Path::new("C:\\t\\a"))).unwrap();
        let b = resolve_scoped(&sid, "engine", Some(std::path::Path::new("C:\\t\\b"))).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            resolve_scoped(&sid, "engine", Some(std::path::Path::new("C:\\t\\a"))).unwrap()
        );
        assert!(a.starts_with(r"\\.\pipe\ferry-S-1-5-21-1-2-3-1000@"), "{a}");
        assert!(a.ends_with("-engine"), "{a}");
        assert_eq!(
            resolve_scoped(&sid, "engine", None).unwrap(),
            resolve_for(&sid, "engine").unwrap()
        );
        // FNV-1a's published test vector: the hash is the same everywhere.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pipe_names_carry_the_user_and_the_service() {
        let sid: Sid = "S-1-5-21-1-2-3-1000".parse().unwrap();
        assert_eq!(
            resolve_for(&sid, "engine").unwrap(),
            r"\\.\pipe\ferry-S-1-5-21-1-2-3-1000-engine"
        );
        let other: Sid = "S-1-5-21-1-2-3-1001".parse().unwrap();
        assert_ne!(
            resolve_for(&sid, "engine").unwrap(),
            resolve_for(&other, "engine").unwrap(),
            "two users never share a pipe"
        );
        let mine = resolve("engine").expect("current user");
        assert!(mine.starts_with(PIPE_PREFIX), "{mine}");
        assert!(
            mine.contains(&Sid::current_user().unwrap().to_string()),
            "{mine}"
        );
    }

    #[test]
    fn names_are_validated_as_on_unix() {
        let sid: Sid = "S-1-5-21-1-2-3-1000".parse().unwrap();
        for bad in ["", ".hidden", "a/b", r"a\b", "with space", &"x".repeat(65)] {
            let err = resolve_for(&sid, bad).expect_err(bad);
            assert!(
                matches!(err, Error::InvalidServiceName { .. }),
                "{bad:?}: {err}"
            );
        }
        resolve_for(&sid, &"x".repeat(64)).expect("64 characters are fine");
        // The longest SID there is (15 sub-authorities of 10 digits) with the longest name
        // exceeds Windows' limit: refused with a reason, not truncated.
        let huge: Sid = format!("S-1-0x123456789ABC{}", "-4294967295".repeat(15))
            .parse()
            .unwrap();
        let err = resolve_for(&huge, &"x".repeat(64)).expect_err("too long");
        assert!(err.to_string().contains("more than the 256"), "{err}");
    }
}
