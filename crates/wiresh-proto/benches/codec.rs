//! Codec throughput: encoding and decoding a small control frame (`exec`), a
//! 64 KiB `stdout` frame and a 1 MiB `stdout` frame.
//!
//! Groups:
//! - `encode`: one frame appended to a reused buffer, as `FramedWrite` does.
//! - `decode_sticky`: many frames already in one buffer (sticky packets);
//!   measures header parsing and body splitting only. Bodies are split off
//!   without copying, so the large-frame figures are per-frame costs
//!   expressed as bytes per second, not memory bandwidth.
//! - `decode_reads`: the same stream delivered in 64 KiB reads into a growing
//!   buffer, as `FramedRead` receives it from a socket; includes the copy
//!   into the read buffer.
//!
//! Run with `cargo bench -p wiresh-proto`; shorten with
//! `-- --warm-up-time 1 --measurement-time 2`.

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder;
use wiresh_proto::{ExecRequest, FrameCodec, Message};

/// How big a read from the socket is in `decode_reads`.
const READ_SIZE: usize = 64 * 1024;

/// One benchmark case: a message, a body, and how many of them a sticky
/// buffer holds (about 1 MiB, at least a few frames).
struct Case {
    name: &'static str,
    message: Message,
    body: Vec<u8>,
    sticky_count: usize,
}

fn cases() -> Vec<Case> {
    let mut env = BTreeMap::new();
    env.insert("LANG".to_string(), "C.UTF-8".to_string());
    env.insert("CI".to_string(), "1".to_string());
    let exec = ExecRequest {
        command: Some("cd /srv/app && make -j2 test".into()),
        env,
        cwd: Some("/srv/app".into()),
        timeout_ms: Some(60_000),
        stdin: true,
        ..Default::default()
    };
    // Output-like bytes, not all zero.
    let body = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    vec![
        Case {
            name: "exec",
            message: Message::Exec(exec),
            body: Vec::new(),
            sticky_count: 1000,
        },
        Case {
            name: "stdout_64KiB",
            message: Message::Stdout,
            body: body(64 * 1024),
            sticky_count: 16,
        },
        Case {
            name: "stdout_1MiB",
            message: Message::Stdout,
            body: body(1024 * 1024),
            sticky_count: 4,
        },
    ]
}

/// The wire bytes of `count` copies of the case's frame.
fn wire(case: &Case, count: usize) -> Vec<u8> {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for _ in 0..count {
        codec
            .encode_parts(&case.message, &case.body, &mut buf)
            .unwrap();
    }
    buf.to_vec()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for case in cases() {
        let frame_len = wire(&case, 1).len();
        group.throughput(Throughput::Bytes(frame_len as u64));
        let codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(frame_len);
        group.bench_function(case.name, |b| {
            b.iter(|| {
                buf.clear();
                codec
                    .encode_parts(black_box(&case.message), black_box(&case.body), &mut buf)
                    .unwrap();
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

fn decode_sticky(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_sticky");
    for case in cases() {
        let bytes = wire(&case, case.sticky_count);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let id = format!("{}_x{}", case.name, case.sticky_count);
        group.bench_function(id, |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                |mut buf| {
                    let mut codec = FrameCodec::default();
                    let mut n = 0;
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        black_box(&frame);
                        n += 1;
                    }
                    assert_eq!(n, case.sticky_count);
                    buf
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn decode_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_reads");
    for case in cases() {
        let bytes = wire(&case, case.sticky_count);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let id = format!("{}_x{}", case.name, case.sticky_count);
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut codec = FrameCodec::default();
                // FramedRead's initial buffer capacity.
                let mut buf = BytesMut::with_capacity(8 * 1024);
                let mut n = 0;
                for read in bytes.chunks(READ_SIZE) {
                    buf.extend_from_slice(read);
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        black_box(&frame);
                        n += 1;
                    }
                }
                assert_eq!(n, case.sticky_count);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode_sticky, decode_reads);
criterion_main!(benches);
