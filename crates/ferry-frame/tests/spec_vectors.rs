//! Checks the hex test vectors of `docs/protocol.md` against the implementation,
//! in both directions: decode(bytes) gives the documented fields, and encoding
//! the documented fields gives the documented bytes, byte for byte.

use std::collections::BTreeMap;

use ferry_frame::{
    DecodeLimits, ErrorCode, ErrorPayload, Event, Flags, Frame, HEADER_LEN, HandleEntry,
    HandleRole, Handles, Hello, Kind, Limits, Reassembler, ReassemblyLimits, Welcome,
    check_metrics_query, decode, encode, encode_header_in_place, metrics_reply_text, offset,
};

const SPEC: &str = include_str!("../../../docs/protocol.md");

#[derive(Debug)]
struct Vector {
    fields: BTreeMap<String, String>,
    bytes: Vec<u8>,
}

impl Vector {
    fn name(&self) -> &str {
        &self.fields["name"]
    }

    fn field(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("vector {} lacks `# {key}:`", self.name()))
    }

    fn num(&self, key: &str) -> u64 {
        parse_num(self.field(key))
    }
}

fn parse_num(s: &str) -> u64 {
    let s = s.split_whitespace().next().unwrap_or("");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

fn parse_hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad hex byte {b:?}")))
        .collect()
}

fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```hex" {
            continue;
        }
        let mut fields = BTreeMap::new();
        let mut hex = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some(meta) = l.strip_prefix('#') {
                let (k, v) = meta.split_once(':').expect("`# key: value`");
                fields.insert(k.trim().to_owned(), v.trim().to_owned());
            } else {
                hex.push_str(l);
                hex.push(' ');
            }
        }
        assert!(fields.contains_key("name"), "hex block without `# name:`");
        out.push(Vector {
            fields,
            bytes: parse_hex(&hex),
        });
    }
    out
}

/// `# handles: 1=0x40 2=0x44` as entries.
fn handles_of(v: &Vector) -> Vec<HandleEntry> {
    v.field("handles")
        .split_whitespace()
        .map(|pair| {
            let (role, value) = pair.split_once('=').expect("`role=value`");
            HandleEntry {
                role: HandleRole::from_u32(u32::try_from(parse_num(role)).unwrap())
                    .expect("known role"),
                value: parse_num(value),
            }
        })
        .collect()
}

fn limits_of(v: &Vector) -> Limits {
    let n = |k| u32::try_from(v.num(k)).unwrap();
    Limits {
        max_message_size: n("max_message_size"),
        max_partial_messages: n("max_partial_messages"),
        max_buffered_bytes: n("max_buffered_bytes"),
        client_to_server_ring_bytes: n("client_to_server_ring_bytes"),
        server_to_client_ring_bytes: n("server_to_client_ring_bytes"),
    }
}

#[test]
fn spec_has_the_required_vectors() {
    let all = vectors();
    let names: Vec<&str> = all.iter().map(Vector::name).collect();
    for required in [
        "minimal-request",
        "request-small",
        "stream-item",
        "error-response",
        "fragment-1",
        "fragment-2",
        "hello",
        "welcome",
        "refuse",
        "cancel",
        "abort",
        "metrics-query",
        "metrics-reply",
        "handles",
    ] {
        assert!(
            names.contains(&required),
            "docs/protocol.md lacks vector {required}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate vector names");
}

#[test]
fn vectors_decode_to_their_fields() {
    for v in vectors() {
        let name = v.name();
        let frame = decode(&v.bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("vector {name} does not decode: {e}"));
        let h = frame.header;
        assert_eq!(u64::from(h.kind().as_u8()), v.num("kind"), "{name}: kind");
        assert_eq!(u64::from(h.flags().bits()), v.num("flags"), "{name}: flags");
        assert_eq!(h.correlation_id(), v.num("correlation_id"), "{name}: id");
        assert_eq!(
            u64::from(h.payload_len()),
            v.num("payload_len"),
            "{name}: len"
        );
        let crc = u32::from_le_bytes(v.bytes[offset::CRC..offset::CRC + 4].try_into().unwrap());
        assert_eq!(u64::from(crc), v.num("crc"), "{name}: crc");
        // The kind's name is written next to its value.
        let kind_name = v.field("kind").split_whitespace().nth(1).unwrap();
        assert_eq!(format!("{:?}", h.kind()), kind_name, "{name}: kind name");

        if let Some(code) = v.fields.get("error_code") {
            let e = ErrorPayload::decode(frame.payload).unwrap();
            assert_eq!(u64::from(e.code.0), parse_num(code), "{name}: error code");
            assert_eq!(e.message, v.field("error_message"), "{name}: message");
        }
        match h.kind() {
            Kind::Hello => {
                let hello = Hello::decode(frame.payload).unwrap();
                assert_eq!(u64::from(hello.min_version), v.num("min_version"));
                assert_eq!(u64::from(hello.max_version), v.num("max_version"));
                assert_eq!(hello.limits, limits_of(&v));
            }
            Kind::Welcome => {
                let welcome = Welcome::decode(frame.payload).unwrap();
                assert_eq!(u64::from(welcome.version), v.num("version"));
                assert_eq!(welcome.limits, limits_of(&v));
            }
            Kind::MetricsQuery => {
                check_metrics_query(frame.payload).unwrap();
            }
            Kind::MetricsReply => {
                let text = metrics_reply_text(frame.payload).unwrap();
                assert_eq!(text, v.field("text").replace("\\n", "\n"), "{name}: text");
            }
            Kind::Handles => {
                let handles = Handles::decode(frame.payload).unwrap();
                assert_eq!(handles.entries(), handles_of(&v), "{name}: handles");
            }
            _ => {}
        }
    }
}

#[test]
fn fields_encode_to_the_vector_bytes() {
    for v in vectors() {
        let name = v.name();
        let kind = Kind::from_u8(u8::try_from(v.num("kind")).unwrap()).unwrap();
        let flags = Flags::from_bits(u16::try_from(v.num("flags")).unwrap()).unwrap();
        let id = v.num("correlation_id");
        // Payload: rebuilt from the documented fields where they are structured,
        // taken from the bytes otherwise.
        let payload: Vec<u8> = if let Some(code) = v.fields.get("error_code") {
            let e = ErrorPayload::new(
                ErrorCode(u32::try_from(parse_num(code)).unwrap()),
                v.field("error_message"),
            );
            let mut b = vec![0; e.encoded_len()];
            e.encode(&mut b).unwrap();
            b
        } else if kind == Kind::Hello {
            Hello {
                min_version: u8::try_from(v.num("min_version")).unwrap(),
                max_version: u8::try_from(v.num("max_version")).unwrap(),
                limits: limits_of(&v),
            }
            .to_bytes()
            .to_vec()
        } else if kind == Kind::Welcome {
            Welcome {
                version: u8::try_from(v.num("version")).unwrap(),
                limits: limits_of(&v),
            }
            .to_bytes()
            .to_vec()
        } else if kind == Kind::Handles {
            let (bytes, len) = Handles::new(&handles_of(&v)).unwrap().to_bytes();
            bytes[..len].to_vec()
        } else {
            v.bytes[HEADER_LEN..].to_vec()
        };
        assert_eq!(payload.len() as u64, v.num("payload_len"), "{name}");

        let frame = Frame::new(kind, flags, id, &payload).unwrap();
        let mut out = vec![0xAA; frame.encoded_len()];
        assert_eq!(encode(&frame, &mut out).unwrap(), out.len());
        assert_eq!(out, v.bytes, "{name}: encode differs from the spec");

        let mut in_place = vec![0x55; HEADER_LEN + payload.len()];
        in_place[HEADER_LEN..].copy_from_slice(&payload);
        encode_header_in_place(&mut in_place, kind, flags, id, payload.len()).unwrap();
        assert_eq!(
            in_place, v.bytes,
            "{name}: in-place encode differs from the spec"
        );
    }
}

#[test]
fn fragment_vectors_reassemble_to_message() {
    let all = vectors();
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut checked = 0;
    for v in all.iter().filter(|v| v.name().starts_with("fragment-")) {
        let frame = decode(&v.bytes, &DecodeLimits::default()).unwrap();
        match r.push(frame).unwrap() {
            Event::Pending => assert!(!v.fields.contains_key("message")),
            Event::Message(m) => {
                assert_eq!(*m.payload, parse_hex(v.field("message")), "{}", v.name());
                checked += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        checked, 1,
        "exactly one fragment vector completes a message"
    );
    assert_eq!(r.partial_count(), 0);
}

#[test]
fn spec_crc_check_value_matches() {
    let line = SPEC
        .lines()
        .find(|l| l.contains("check (`\"123456789\"`)"))
        .expect("CRC check value row in the spec");
    let value = line.split('`').nth(3).expect("`0x...` cell");
    assert_eq!(
        u64::from(ferry_frame::crc::crc32c(b"123456789")),
        parse_num(value)
    );
}

/// The frames the ring vectors of §14.2–§14.3 carry (`# kind:`, `# correlation_id:`,
/// `# payload:` beside a `# record:`): each record decodes, with all the receiver's checks of
/// §8, to the documented frame, and the documented fields encode to the record. The ring
/// bytes themselves are checked by ferry-ring's `tests/spec_ring_vectors.rs`.
#[test]
fn frames_in_the_ring_vectors_decode() {
    let mut checked = 0;
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```ring" {
            continue;
        }
        let mut fields = BTreeMap::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some(meta) = l.strip_prefix('#') {
                let (k, v) = meta.split_once(':').expect("`# key: value`");
                fields.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let Some(kind) = fields.get("kind") else {
            continue;
        };
        let name = &fields["name"];
        let record = parse_hex(&fields["record"]);
        let kind = Kind::from_u8(u8::try_from(parse_num(kind)).unwrap()).expect("known kind");
        let id = parse_num(&fields["correlation_id"]);
        let payload = parse_hex(&fields["payload"]);
        let frame = decode(&record, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: the record is not a valid frame: {e}"));
        assert_eq!(frame.header.kind(), kind, "{name}");
        assert_eq!(frame.header.correlation_id(), id, "{name}");
        assert_eq!(frame.payload, &payload[..], "{name}");
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        buf[HEADER_LEN..].copy_from_slice(&payload);
        encode_header_in_place(&mut buf, kind, Flags::NONE, id, payload.len()).unwrap();
        assert_eq!(buf, record, "{name}: encoding the fields");
        checked += 1;
    }
    assert!(checked >= 2, "the worked example's request and response");
}
