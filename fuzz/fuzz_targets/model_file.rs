//! Fuzzes the model-file decoder: any bytes must give a model or a typed error, never a
//! panic, an abort or an allocation out of proportion to the input.
//!
//! An input that starts with the magic bytes is decoded as a whole file, which exercises
//! the header checks. Any other input is taken as a payload and given a valid header
//! and checksum first: random bytes almost never match a SHA-256, so without this the
//! fuzzer would never get past the checksum into the payload decoder and the model's
//! consistency checks. A model that loads must then answer like a model.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use topics::model_file::{self, FORMAT_VERSION, MAGIC};

fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(52 + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    bytes
}

fuzz_target!(|data: &[u8]| {
    let decoded =
        if data.starts_with(MAGIC) { model_file::decode(data) } else { model_file::decode(&with_header(data)) };
    let Ok(model) = decoded else { return };

    // A loaded model re-encodes to a file that loads again.
    let encoded = model_file::encode(&model);
    if let Err(e) = model_file::decode(&encoded) {
        panic!("a loaded model does not load after encoding: {e}");
    }

    // Its own word terms are the text most likely to reach its weights.
    let mut text: String = model
        .vectorizer()
        .terms()
        .iter()
        .filter(|t| !t.starts_with(topics::analyzer::CHAR_MARK))
        .take(64)
        .map(|t| format!("{t} {t}\n"))
        .collect();
    text.push_str("Troops shelled the camp. قصفت القوات المخيم\nThe minister met his counterpart.");
    let labels = model.labels().len();
    for prediction in [model.predict(&text), model.predict("")] {
        assert!(prediction.label() < labels);
        assert_eq!(prediction.ranked.len(), labels);
        for &(label, score) in &prediction.ranked {
            assert!(label < labels);
            assert!(score.is_finite() && (0.0..=1.0).contains(&score), "score {score} from a loaded model");
        }
    }
});
