//! A metrics query: the other conversation a control channel may hold (a querier asks, the
//! server answers with its metrics text, and the channel closes).

use std::path::Path;
use std::time::Duration;

use ferry_frame::Kind;

use crate::error::Error;

/// How long [`read_server_metrics`] waits for the server (to connect, and for the reply).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the metrics of the server running on service `name` from another process, through its
/// control socket: the same text as that server's [`Server::metrics_text`](crate::Server::metrics_text).
///
/// The runtime directory is `runtime_dir`, or the default one (as for
/// [`Client::connect`](crate::Client::connect)). Like a client, the querier only talks to a
/// server of its own user, and the server answers only users it accepts as clients
/// (`ServerConfig::allowed_uids`). The reply is checked: at most
/// [`ferry_frame::MAX_METRICS_REPLY`] bytes of UTF-8.
///
/// # Errors
/// [`Error::NotRunning`] when no server listens; [`Error::Refused`] when the server turns the
/// query away (its message says why); [`Error::PeerNotAllowed`] when the socket belongs to
/// another user; [`Error::Closed`] when the server hangs up without answering (a server older
/// than metrics queries does); [`Error::Protocol`] for a reply that is not valid;
/// [`Error::Timeout`] when the server does not answer within 5 s.
pub fn read_server_metrics(name: &str, runtime_dir: Option<&Path>) -> Result<String, Error> {
    let endpoint = crate::sys::resolve(name, runtime_dir)?;
    let (control, _server) =
        crate::sys::Control::connect(&endpoint, QUERY_TIMEOUT, "metrics reader")?;
    control.send(Kind::MetricsQuery, 0, &[])?;
    let frame = control
        .recv_limited(ferry_frame::MAX_METRICS_REPLY)?
        .ok_or(Error::Closed(
            "the server hung up without answering the metrics query (a server older than \
             metrics queries does)",
        ))?;
    match frame.header.kind() {
        Kind::MetricsReply => ferry_frame::metrics_reply_text(&frame.payload)
            .map(str::to_owned)
            .map_err(|e| Error::Protocol(format!("bad MetricsReply: {e}"))),
        Kind::Refuse => {
            let (code, message) = crate::error::decode_error(&frame.payload);
            Err(Error::Refused { code, message })
        }
        other => Err(Error::Protocol(format!(
            "expected MetricsReply or Refuse, got {other}"
        ))),
    }
}
