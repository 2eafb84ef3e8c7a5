//! `cargo xtask bench-gate`: placeholder until issue 6 fills it in.

use std::process::ExitCode;

/// Says the gate is not written yet and exits with status 2, so no script mistakes it for a pass.
pub fn run() -> ExitCode {
    eprintln!(
        "xtask bench-gate: not implemented yet (coming with issue 6: compare `cargo bench` \
         results against a recorded baseline). Exiting with status 2."
    );
    ExitCode::from(2)
}
