//! Service names, the same on every platform: what `unix::service_dir` turns into a socket
//! path and `windows::pipe_name` into a named pipe.

use crate::error::Error;

/// Longest service name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` is usable as a service name: 1 to 64 characters from `[A-Za-z0-9._-]`,
/// not starting with a dot.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::InvalidServiceName {
        name: name.to_owned(),
        why: why.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 64 bytes"));
    }
    if name.starts_with('.') {
        return Err(bad("it starts with a dot"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "it contains {c:?}; use only ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}
