//! Frame codec cost: encode + decode (both with CRC32C) per frame.
//!
//! - `frame_codec/encode_decode/<size>`: `encode` (copies the payload, writes the
//!   header and CRC) then `decode` (validates, checks the CRC, borrows the payload),
//!   for 64 B, 1 KiB, 64 KiB and 1 MiB payloads. Throughput is payload bytes.
//! - `frame_codec/header_in_place/64`: the zero-copy send path, payload already in
//!   the buffer: `encode_header_in_place` + `decode`, 64 B payload. Target < 50 ns.
//!
//! Run: `cargo bench --bench frame_codec`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::frame::{
    DecodeLimits, Flags, Frame, HEADER_LEN, Kind, decode, encode, encode_header_in_place,
};

const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn encode_decode(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("frame_codec/encode_decode");
    for (size, name) in SIZES {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; HEADER_LEN + size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let frame = Frame::new(Kind::Request, Flags::NONE, 7, black_box(&payload))
                    .expect("valid frame");
                let n = encode(&frame, &mut buf).expect("buffer fits");
                let back = decode(black_box(&buf[..n]), &limits).expect("round trip");
                black_box(back.payload.len())
            });
        });
    }
    group.finish();
}

fn header_in_place(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("frame_codec/header_in_place");
    let mut buf = vec![0u8; HEADER_LEN + 64];
    for (i, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
        *b = i as u8;
    }
    group.throughput(Throughput::Bytes(64));
    let mut id = 0u64;
    group.bench_function("64B", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            let n = encode_header_in_place(black_box(&mut buf), Kind::Request, Flags::NONE, id, 64)
                .expect("buffer fits");
            let frame = decode(black_box(&buf[..n]), &limits).expect("round trip");
            black_box(frame.header.correlation_id())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = encode_decode, header_in_place
}
criterion_main!(benches);
