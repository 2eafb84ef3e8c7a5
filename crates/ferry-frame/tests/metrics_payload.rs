//! The control-socket metrics exchange's payload checks: an empty query, a bounded UTF-8 reply.

use ferry_frame::{MAX_METRICS_REPLY, PayloadError, check_metrics_query, metrics_reply_text};

#[test]
fn metrics_query_must_be_empty() {
    assert_eq!(check_metrics_query(&[]), Ok(()));
    let err = check_metrics_query(b"x").unwrap_err();
    assert_eq!(
        err,
        PayloadError::WrongLength {
            what: "MetricsQuery",
            expected: 0,
            got: 1
        }
    );
    assert!(err.to_string().contains("MetricsQuery payload has 1 bytes"));
}

#[test]
fn metrics_reply_is_bounded_utf8() {
    assert_eq!(metrics_reply_text(b"a 1\n# EOF\n"), Ok("a 1\n# EOF\n"));
    assert_eq!(metrics_reply_text(b""), Ok(""));
    assert_eq!(
        metrics_reply_text(b"ok \xff"),
        Err(PayloadError::InvalidUtf8 { valid_up_to: 3 })
    );
    let at_limit = vec![b'a'; MAX_METRICS_REPLY];
    assert_eq!(
        metrics_reply_text(&at_limit).map(str::len),
        Ok(MAX_METRICS_REPLY)
    );
    let over = vec![b'a'; MAX_METRICS_REPLY + 1];
    let err = metrics_reply_text(&over).unwrap_err();
    assert_eq!(
        err,
        PayloadError::TooLong {
            what: "MetricsReply",
            max: MAX_METRICS_REPLY,
            got: MAX_METRICS_REPLY + 1
        }
    );
    assert!(err.to_string().contains("more than the 16777216 allowed"));
}
