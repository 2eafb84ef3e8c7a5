//! What each codec costs on the issue's `complete` request (path 40 B, prefix 2 KiB, suffix
//! 512 B, line, column), and what rkyv's validation costs:
//!
//! - `codecs/postcard/{encode,decode}`: serde + postcard; decoding borrows the strings.
//! - `codecs/json/{encode,decode}`: serde_json; decoding allocates the strings (the code's
//!   newlines are escaped in JSON, so they cannot be borrowed).
//! - `codecs/rkyv/encode`: archiving into a reused buffer.
//! - `codecs/rkyv/access_validated`: `rkyv::access` with `bytecheck`, what the server does.
//! - `codecs/rkyv/access_unchecked`: the same access without validation (what it would cost
//!   to trust the peer; Ferry never does), so validated − unchecked is validation's price.
//! - `codecs/rkyv/decode_owned`: validation + deserializing into owned values (the client).
//!
//! Run: `cargo bench -p ferry-rpc --bench codecs`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_rpc::codec;
use rkyv::rancor;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Borrowed<'a> {
    path: &'a str,
    line: u32,
    column: u32,
    prefix: &'a str,
    suffix: &'a str,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Serialize, Deserialize)]
struct Owned {
    path: String,
    line: u32,
    column: u32,
    prefix: String,
    suffix: String,
}

fn codecs(c: &mut Criterion) {
    let path = "src/editor/components/buffer_view_ext.rs"; // 40 B
    let prefix: String = "fn main() { let x = 1; }\n"
        .chars()
        .cycle()
        .take(2048)
        .collect();
    let suffix: String = "}\n".chars().cycle().take(512).collect();
    let b = Borrowed {
        path,
        line: 120,
        column: 17,
        prefix: &prefix,
        suffix: &suffix,
    };
    let o = Owned {
        path: path.into(),
        line: 120,
        column: 17,
        prefix: prefix.clone(),
        suffix: suffix.clone(),
    };
    let mut g = c.benchmark_group("codecs");

    let mut buf = Vec::with_capacity(4096);
    g.bench_function("postcard/encode", |bench| {
        bench.iter(|| {
            buf.clear();
            codec::postcard_encode(black_box(&b), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let bytes = postcard::to_stdvec(&b).unwrap();
    g.bench_function("postcard/decode", |bench| {
        bench.iter(|| {
            let v: Borrowed<'_> = codec::postcard_decode(black_box(&bytes)).unwrap();
            black_box(v.prefix.len())
        })
    });

    g.bench_function("json/encode", |bench| {
        bench.iter(|| {
            buf.clear();
            codec::json_encode(black_box(&b), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let json = serde_json::to_vec(&b).unwrap();
    g.bench_function("json/decode", |bench| {
        bench.iter(|| {
            // Owned strings: the code's newlines are escaped in JSON, so `&str` cannot borrow.
            let v: Owned = codec::json_decode(black_box(&json)).unwrap();
            black_box(v.prefix.len())
        })
    });

    g.bench_function("rkyv/encode", |bench| {
        bench.iter(|| {
            buf.clear();
            codec::rkyv_encode(black_box(&o), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let archive = rkyv::to_bytes::<rancor::Error>(&o).unwrap();
    g.bench_function("rkyv/access_validated", |bench| {
        bench.iter(|| {
            let a = codec::rkyv_access::<Owned>(black_box(&archive)).unwrap();
            black_box(a.prefix.len())
        })
    });
    g.bench_function("rkyv/access_unchecked", |bench| {
        bench.iter(|| {
            // SAFETY: `archive` was produced by `rkyv::to_bytes` for `Owned` just above, in this
            // process, and is aligned (an `AlignedVec`); this is the baseline that shows what
            // validation adds, never what Ferry does with a peer's bytes.
            let a = unsafe { rkyv::access_unchecked::<ArchivedOwned>(black_box(&archive)) };
            black_box(a.prefix.len())
        })
    });
    g.bench_function("rkyv/decode_owned", |bench| {
        bench.iter(|| {
            let v: Owned = codec::rkyv_decode_owned(black_box(&archive)).unwrap();
            black_box(v.prefix.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
