//! The dispatcher against a hostile client: arbitrary method ids (known ones and others),
//! kinds, codecs, flags (compression included), deadlines and bodies, sent as calls, streams
//! and notifications over a real connection to a server of a service with every codec.
//!
//! Checks: every call gets an answer (a value or a typed error, never a hang: a 10 s timeout
//! fails the run), the connection stays up, nothing panics (libFuzzer aborts on a panic in
//! any thread, the server's included).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use ferry_rpc::envelope::{CodecId, Envelope, MessageKind};
use ferry_rpc::{Context, RpcConfig, Sink, Status};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Borrowed<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    pub n: Option<u64>,
    pub list: Vec<i32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Archivable {
    pub id: u64,
    pub words: Vec<String>,
    pub nested: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
pub enum Shape {
    A(u32),
    B { x: f64, label: String },
    C,
}

#[ferry_rpc::service]
pub trait Fuzzed {
    fn borrowed(req: Borrowed<'_>) -> u64;
    #[codec(rkyv)]
    fn archived(req: Archivable) -> u64;
    #[codec(json)]
    fn json(shape: Shape) -> String;
    fn raw(bytes: &[u8]) -> u64;
    fn items(n: u16) -> impl Stream<Item = u16>;
    #[notification]
    fn note(shape: Shape);
}

struct Server;

impl Fuzzed for Server {
    fn borrowed(&self, _cx: &Context<'_>, req: Borrowed<'_>) -> Result<u64, Status> {
        Ok(req.name.len() as u64 + req.data.len() as u64 + req.n.unwrap_or(0) % 7)
    }
    fn archived(
        &self,
        _cx: &Context<'_>,
        req: &ferry_rpc::codec::Archived<Archivable>,
    ) -> Result<u64, Status> {
        let words: usize = req.words.iter().map(|w| w.len()).sum();
        Ok(req.id.to_native() ^ words as u64)
    }
    fn json(&self, _cx: &Context<'_>, shape: Shape) -> Result<String, Status> {
        Ok(match shape {
            Shape::A(n) => n.to_string(),
            Shape::B { label, .. } => label,
            Shape::C => return Err(Status::new(1, "C")),
        })
    }
    fn raw(&self, _cx: &Context<'_>, bytes: &[u8]) -> Result<u64, Status> {
        Ok(bytes.len() as u64)
    }
    fn items(&self, _cx: &Context<'_>, n: u16, items: &Sink<'_, u16>) -> Result<(), Status> {
        for i in 0..n.min(8) {
            items.send(&i).map_err(|e| Status::new(2, e.to_string()))?;
        }
        Ok(())
    }
    fn note(&self, _cx: &Context<'_>, _shape: Shape) {}
}

struct Setup {
    _server: ferry_rpc::Server,
    client: ferry_transport::Client,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-rpc-fuzz-{}", std::process::id()));
        let server = ferry_rpc::serve(
            "fuzz",
            ferry_rpc::ServerConfig::default().with_runtime_dir(dir.clone()),
            RpcConfig {
                max_decompressed: 1 << 20,
                ..RpcConfig::default()
            },
            FuzzedServer::new(Server),
        )
        .expect("serve");
        let client = ferry_transport::Client::connect_with(
            "fuzz",
            ferry_transport::ClientConfig::default()
                .with_runtime_dir(dir)
                .with_reconnect(false),
        )
        .expect("connect");
        Setup {
            _server: server,
            client,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Target {
    Known(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    target: Target,
    kind: u8,
    codec: u8,
    flags: u8,
    budget_us: u32,
    uncompressed_len: u32,
    /// Send the body alone, without an envelope.
    bare: bool,
    body: Vec<u8>,
}

const METHODS: [&str; 6] = ["borrowed", "archived", "json", "raw", "items", "note"];

fuzz_target!(|input: Input| {
    let s = setup();
    let method = match input.target {
        Target::Known(i) => ferry_rpc::method_id("Fuzzed", METHODS[usize::from(i) % METHODS.len()]),
        Target::Any(id) => id,
    };
    let mut message = Vec::new();
    if !input.bare {
        let env = Envelope::new(
            MessageKind::Call,
            CodecId::from_u8(input.codec % 4).unwrap_or(CodecId::Raw),
            method,
        );
        let mut head = env.to_bytes();
        head[1] = input.kind % 7; // mostly valid kinds, sometimes not
        head[3] = input.flags;
        head[8..12].copy_from_slice(&input.budget_us.to_le_bytes());
        head[12..16].copy_from_slice(&input.uncompressed_len.to_le_bytes());
        message.extend_from_slice(&head);
    }
    message.extend_from_slice(&input.body);
    let limit = Duration::from_secs(10);
    match input.kind % 3 {
        0 => match s.client.call_timeout(&message, limit) {
            Ok(_) | Err(ferry_transport::Error::Remote { .. }) => {}
            Err(e) => panic!("no typed answer: {e}"),
        },
        1 => {
            let mut stream = s.client.stream(&message).expect("stream");
            let mut out = Vec::new();
            for _ in 0..16 {
                match stream.next_into(&mut out) {
                    Ok(true) => {}
                    Ok(false) | Err(ferry_transport::Error::Remote { .. }) => break,
                    Err(e) => panic!("stream failed: {e}"),
                }
            }
        }
        _ => s.client.notify(&message).expect("notify"),
    }
    // The connection is still up.
    let mut probe = Envelope::new(
        MessageKind::Call,
        CodecId::Raw,
        ferry_rpc::method_id("Fuzzed", "raw"),
    )
    .to_bytes()
    .to_vec();
    probe.extend_from_slice(b"ok");
    s.client
        .call_timeout(&probe, limit)
        .expect("the connection stays up");
});
