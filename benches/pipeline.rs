//! In-process speed of each stage of the pipeline and of the whole classification, on
//! the first 600 bytes of the seed article and on the whole 4.7 KB article, with the
//! bundled model: `cargo bench --bench pipeline`.
//!
//! Targets (issue 5): whole classify of 600 bytes of Arabic ≤ 10 µs median on one core;
//! a batch of such documents ≥ 100,000 documents/s on two cores (`batch`, which spawns
//! its two threads on every iteration, as a server handing a batch to two workers would).

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use topics::classify::Options;
use topics::model_file;

fn seed_article() -> String {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/corpus/seed.jsonl");
    let text = std::fs::read_to_string(corpus).expect("seed corpus");
    text.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("seed line")["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn stages(c: &mut Criterion) {
    let model = model_file::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/topics.model")).expect("model");
    let seed = seed_article();
    let inputs = [("600B", prefix(&seed, 600).to_string()), ("4.7KB", seed.clone())];

    let mut group = c.benchmark_group("stage");
    for (name, text) in &inputs {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("normalize", name), text, |b, t| {
            b.iter(|| topics::text::normalize(black_box(t)))
        });
        group.bench_with_input(BenchmarkId::new("tokenize", name), text, |b, t| {
            b.iter(|| {
                let mut words = 0usize;
                topics::text::for_each_token(black_box(t), |_, _| words += 1);
                words
            })
        });
        group.bench_with_input(BenchmarkId::new("featurize", name), text, |b, t| {
            b.iter(|| model.vectorizer().transform(black_box(t)))
        });
        let features = model.vectorizer().transform(text);
        group.bench_with_input(BenchmarkId::new("predict", name), &features, |b, f| {
            b.iter(|| model.layer().predict(black_box(f)))
        });
        group.bench_with_input(BenchmarkId::new("classify", name), text, |b, t| {
            b.iter(|| model.classify(black_box(t), Options::default()))
        });
        group.bench_with_input(BenchmarkId::new("classify+segments+explain", name), text, |b, t| {
            b.iter(|| model.classify(black_box(t), Options { segments: true, explain: 10 }))
        });
    }
    group.finish();

    // The batch target is for two cores: each of two threads classifies half the batch.
    let batch: Vec<String> = (0..256).map(|_| prefix(&seed, 600).to_string()).collect();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("classify 256 x 600B on 2 threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                let (left, right) = batch.split_at(batch.len() / 2);
                let halves = [left, right].map(|half| {
                    let model = &model;
                    scope.spawn(move || {
                        half.iter().map(|t| model.classify(black_box(t), Options::default()).labels.len()).sum::<usize>()
                    })
                });
                halves.map(|h| h.join().expect("bench thread")).iter().sum::<usize>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
