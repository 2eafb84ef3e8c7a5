//! The JSON-RPC 2.0 shape of a JSON-codec service (docs/rpc.md §7): how each Ferry message of a
//! `#[codec(json)]` method maps to the JSON-RPC message an LSP / Agent Client Protocol peer
//! would send, so that a bridge (stdio ↔ Ferry) is a translation, not a reinterpretation.
//!
//! | JSON-RPC 2.0 | Ferry |
//! |---|---|
//! | request `{"jsonrpc":"2.0","id":N,"method":"m","params":P}` | a call (or stream) of method `m`; `id` ↔ the transport's correlation id; body = `P` |
//! | response `{"id":N,"result":R}` | the answer, body = `R` |
//! | error `{"id":N,"error":{"code":C,"message":M}}` | an error answer (code mapped below) |
//! | notification (no `id`) | a notification |
//! | `$/cancelRequest {"id":N}` | the transport's `Cancel` of correlation id N (dropping the call) |
//! | `$/progress {"token":N,"value":V}` | one stream item of call N, body = `V`; the stream's end is the response |
//!
//! This module holds the data types and the code mapping; the bodies themselves are the JSON
//! codec's (`codec::json_encode` / `json_decode`), byte for byte what `params` / `result`
//! hold.

use serde::{Deserialize, Serialize};

use crate::error::code;

/// A JSON-RPC 2.0 request or notification (`id` absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request<P> {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The correlation id; `None` for a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The method's name (the Ferry method's name, without the service).
    pub method: String,
    /// The body of the Ferry message.
    pub params: P,
}

/// A JSON-RPC 2.0 error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The JSON-RPC code ([`error_code`] maps Ferry's).
    pub code: i64,
    /// The message.
    pub message: String,
}

/// A JSON-RPC 2.0 response: `result` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<R> {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id.
    pub id: u64,
    /// The answer's body, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// The JSON-RPC error code for a Ferry error code: the typed layer's codes map to JSON-RPC's
/// reserved ones (method not found -32601, invalid params -32602, invalid request -32600,
/// internal error -32603, LSP's RequestCancelled -32800); a handler's `Status` code `c` maps to
/// `c` itself.
pub fn error_code(ferry_code: u32) -> i64 {
    match ferry_code {
        code::UNKNOWN_METHOD => -32601,
        code::BAD_REQUEST => -32602,
        code::BAD_ENVELOPE => -32600,
        code::BAD_RESPONSE | code::BUSY => -32603,
        code::DEADLINE_EXCEEDED | 2 => -32800, // deadline, or the transport's CANCELLED
        c if (0x8000_0000..code::RESERVED_BASE).contains(&c) => i64::from(c - 0x8000_0000),
        _ => -32603,
    }
}

/// The JSON-RPC request a Ferry call of `method` with correlation id `id` stands for.
pub fn request<P>(id: Option<u64>, method: &str, params: P) -> Request<P> {
    Request {
        jsonrpc: "2.0".into(),
        id,
        method: method.into(),
        params,
    }
}

/// The `$/cancelRequest` notification for correlation id `id`.
pub fn cancel_request(id: u64) -> Request<serde_json::Value> {
    request(None, "$/cancelRequest", serde_json::json!({ "id": id }))
}

/// The `$/progress` notification carrying stream item `value` of call `id`.
pub fn progress<V: Serialize>(id: u64, value: V) -> Request<serde_json::Value> {
    request(
        None,
        "$/progress",
        serde_json::json!({ "token": id, "value": value }),
    )
}
