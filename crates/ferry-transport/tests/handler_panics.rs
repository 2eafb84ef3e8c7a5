//! A handler that panics: the caller gets exactly one answer for its request. Before the panic
//! the handler may have answered (then that answer stands, and no error follows it), taken a
//! `Responder` (which answers when the unwinding drops it), started a stream, or done nothing
//! (then the worker answers "the handler panicked"). Server and client run in this process;
//! what went over the ring is read from the server's metrics.

#![cfg(any(target_os = "linux", target_os = "macos", windows))]

mod common;

use std::time::Duration;

use common::*;
use ferry_transport::ErrorCode;
use ferry_transport::{Client, Error, Request, Server};

const SERVICE: &str = "panics";

fn handle(req: Request<'_>) {
    match req.payload() {
        b"respond then panic" => {
            let _ = req.respond(b"answered");
            panic!("handler panics after answering");
        }
        b"error then panic" => {
            let _ = req.respond_error(ErrorCode(0x8000_0007), "answered with an error");
            panic!("handler panics after answering with an error");
        }
        b"responder then panic" => {
            let _responder = req.into_responder();
            panic!("handler panics holding a Responder");
        }
        b"stream then panic" => {
            let stream = req.into_stream();
            stream.send(b"item").unwrap();
            stream.finish().unwrap();
            panic!("handler panics after finishing a stream");
        }
        b"panic" => panic!("handler panics without answering"),
        other => {
            let other = other.to_vec();
            let _ = req.respond(&other);
        }
    }
}

fn sent(server: &Server, kind: &str) -> f64 {
    metric(
        &server.metrics_text(),
        &format!("ferry_server_messages_sent_total{{kind=\"{kind}\"}}"),
    )
    .expect("the server counts what it sends by kind")
}

fn panics(server: &Server) -> f64 {
    metric(
        &server.metrics_text(),
        r#"ferry_server_errors_total{kind="handler_panic"}"#,
    )
    .expect("the server counts handler panics")
}

/// Calls `request`, then a plain echo (which the server answers only after it handled the
/// panic, so the counts below are final), and returns the first call's outcome.
fn call_then_sync(client: &Client, request: &[u8]) -> Result<Vec<u8>, Error> {
    let r = client.call(request).map(|r| r.to_vec());
    assert_eq!(&*client.call(b"sync").unwrap(), b"sync");
    r
}

#[test]
fn a_handler_that_panics_sends_exactly_one_answer() {
    let dir = TestDir::new("panics");
    let server = Server::bind(SERVICE, server_config(dir.path()), handle).unwrap();
    let client = Client::connect_with(SERVICE, client_config(dir.path())).unwrap();
    let (responses, errors) = (sent(&server, "response"), sent(&server, "error_response"));
    assert_eq!(panics(&server), 0.0);

    // Answered, then panicked: the answer stands and no error response follows.
    assert_eq!(
        call_then_sync(&client, b"respond then panic").unwrap(),
        b"answered"
    );
    assert_eq!(panics(&server), 1.0, "the panic is still counted");
    assert_eq!(sent(&server, "response"), responses + 2.0);
    assert_eq!(
        sent(&server, "error_response"),
        errors,
        "a second answer (an ErrorResponse) went out for a request already answered"
    );

    // Answered with an error, then panicked: that error is the one answer.
    match call_then_sync(&client, b"error then panic") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(0x8000_0007));
            assert_eq!(message, "answered with an error");
        }
        other => panic!("expected the handler's own error, got {other:?}"),
    }
    assert_eq!(panics(&server), 2.0);
    assert_eq!(sent(&server, "error_response"), errors + 1.0);

    // Took a Responder, then panicked: the unwinding drops the Responder, which answers.
    match call_then_sync(&client, b"responder then panic") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ferry_frame::ErrorCode::HANDLER_FAILED);
            assert!(message.contains("without answering"), "{message}");
        }
        other => panic!("expected a handler failure, got {other:?}"),
    }
    assert_eq!(panics(&server), 3.0);
    assert_eq!(sent(&server, "error_response"), errors + 2.0);

    // Finished a stream, then panicked: the stream's end is the answer.
    let mut stream = client.stream(b"stream then panic").unwrap();
    assert_eq!(stream.next_item().unwrap().as_deref(), Some(&b"item"[..]));
    assert_eq!(stream.next_item().unwrap(), None);
    drop(stream);
    assert_eq!(&*client.call(b"sync").unwrap(), b"sync");
    assert_eq!(panics(&server), 4.0);
    assert_eq!(sent(&server, "stream_end"), 1.0);
    assert_eq!(sent(&server, "error_response"), errors + 2.0);

    // Panicked without answering: the worker answers for it, once.
    match call_then_sync(&client, b"panic") {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ferry_frame::ErrorCode::HANDLER_FAILED);
            assert_eq!(message, "the handler panicked");
        }
        other => panic!("expected a handler failure, got {other:?}"),
    }
    assert_eq!(panics(&server), 5.0);
    assert_eq!(sent(&server, "error_response"), errors + 3.0);

    // Nothing is left in flight, and the connection still serves.
    assert_eq!(
        metric(&server.metrics_text(), "ferry_server_requests_in_flight"),
        Some(0.0)
    );
    assert_eq!(
        &*client
            .call_timeout(b"still here", Duration::from_secs(5))
            .unwrap(),
        b"still here"
    );
}
