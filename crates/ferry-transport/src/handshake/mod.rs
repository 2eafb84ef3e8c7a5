//! The connection handshake: how a client and a server agree on a connection over the control
//! channel (the Unix socket, or the Windows pipe), and the metrics query, the other conversation
//! a control channel may hold. See docs/protocol.md §7.
//!
//! - [`client`]: the client's side (`Hello`, then the `Welcome` or `Refuse`, then the shared
//!   memory and doorbells are received and the rings attached).
//! - [`server`]: the server's side (the peer's user checked, the `Hello` read and negotiated,
//!   the connection's memory and doorbells created and sent with the `Welcome`, or a `Refuse`
//!   that says why).
//! - [`metrics_query`]: another process reads a running server's metrics text.
//!
//! What lives elsewhere, on purpose: the payloads (`Hello`, `Welcome`, the negotiation itself)
//! are sans-IO in `ferry-frame` (`payload.rs`); sending the connection's handles with the
//! `Welcome` is platform code in `sys/` (`Control::send_welcome` / `receive_connection`: file
//! descriptors over `SCM_RIGHTS` on Unix, duplicated handles on Windows).

pub(crate) mod client;
pub(crate) mod metrics_query;
pub(crate) mod server;
