//! The model file: one self-checking, versioned file holding everything serving needs.
//!
//! Layout (integers little-endian):
//!
//! | bytes   | content                                   |
//! |---------|-------------------------------------------|
//! | 0..8    | magic `TOPICMDL`                          |
//! | 8..12   | format version (u32)                      |
//! | 12..20  | payload length in bytes (u64)             |
//! | 20..52  | SHA-256 of the payload                    |
//! | 52..    | payload: postcard-encoded [`Payload`]     |
//!
//! The header is checked before the payload is decoded, so a truncated, corrupted or
//! foreign file is refused with a message that says which, never half-loaded.
//! Encoding is deterministic: the same model always gives the same bytes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{InvalidModel, LinearLayer, Model, ModelMeta};
use crate::tfidf::{FeatureSettings, TfIdf};

pub const MAGIC: &[u8; 8] = b"TOPICMDL";
/// Bumped whenever [`Payload`] changes shape; files of other versions are refused.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Why a model file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot read model file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write model file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("not a topics model file (bad magic bytes)")]
    NotAModel,
    #[error("model file is truncated: {found} bytes, expected {expected}")]
    Truncated { found: usize, expected: usize },
    #[error("model file has {extra} unexpected bytes after its payload")]
    TrailingBytes { extra: usize },
    #[error(
        "model file format version {found} is not supported (this build reads version {supported}); retrain with `topics train`"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("model file is corrupted: checksum mismatch")]
    ChecksumMismatch,
    #[error("model file payload cannot be decoded: {0}")]
    Decode(#[from] postcard::Error),
    #[error("model file is inconsistent: {0}")]
    Invalid(#[from] InvalidModel),
}

/// What the payload holds. Field order is part of the format: postcard encodes by position.
#[derive(Serialize, Deserialize)]
struct Payload {
    meta: ModelMeta,
    labels: Vec<String>,
    features: FeatureSettings,
    terms: Vec<String>,
    idf: Vec<f32>,
    /// Features × labels, row-major.
    weights: Vec<f32>,
    intercept: Vec<f32>,
}

/// Encodes `model` as the bytes of a model file.
pub fn encode(model: &Model) -> Vec<u8> {
    let vectorizer = model.vectorizer();
    let layer = model.layer();
    let payload = Payload {
        meta: model.meta().clone(),
        labels: model.labels().to_vec(),
        features: vectorizer.settings().clone(),
        terms: vectorizer.terms().to_vec(),
        idf: vectorizer.idf().to_vec(),
        weights: layer.weights.iter().copied().collect(),
        intercept: layer.intercept.to_vec(),
    };
    // Serializing plain vectors, strings and numbers into a Vec cannot fail.
    let body = postcard::to_stdvec(&payload).expect("postcard encodes plain data into a Vec");
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&body));
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes and validates the bytes of a model file.
pub fn decode(bytes: &[u8]) -> Result<Model, ModelFileError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ModelFileError::NotAModel);
    }
    if bytes.len() < HEADER_LEN {
        return Err(ModelFileError::Truncated { found: bytes.len(), expected: HEADER_LEN });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4-byte slice"));
    if version != FORMAT_VERSION {
        return Err(ModelFileError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let declared = u64::from_le_bytes(bytes[12..20].try_into().expect("8-byte slice"));
    let body = &bytes[HEADER_LEN..];
    let expected = usize::try_from(declared).ok().and_then(|n| n.checked_add(HEADER_LEN)).unwrap_or(usize::MAX);
    if bytes.len() < expected {
        return Err(ModelFileError::Truncated { found: bytes.len(), expected });
    }
    if bytes.len() > expected {
        return Err(ModelFileError::TrailingBytes { extra: bytes.len() - expected });
    }
    if Sha256::digest(body).as_slice() != &bytes[20..52] {
        return Err(ModelFileError::ChecksumMismatch);
    }

    let (payload, rest): (Payload, &[u8]) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(ModelFileError::TrailingBytes { extra: rest.len() });
    }
    let vectorizer = TfIdf::from_parts(payload.features, payload.terms, payload.idf).map_err(InvalidModel::from)?;
    let rows = vectorizer.vocabulary_size();
    let columns = payload.labels.len();
    if Some(payload.weights.len()) != rows.checked_mul(columns) {
        return Err(InvalidModel::WeightCount { weights: payload.weights.len(), rows, columns }.into());
    }
    let weights = Array2::from_shape_vec((rows, columns), payload.weights).expect("length checked against the shape");
    let layer = LinearLayer { weights, intercept: Array1::from(payload.intercept) };
    Ok(Model::new(payload.meta, payload.labels, vectorizer, layer)?)
}

/// Reads and validates a model file.
pub fn load(path: &Path) -> Result<Model, ModelFileError> {
    let read_error = |source| ModelFileError::Read { path: path.to_owned(), source };
    // A device or a pipe (a reload asked for /dev/zero) could be read forever.
    if !std::fs::metadata(path).map_err(read_error)?.is_file() {
        return Err(read_error(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    decode(&bytes)
}

/// Writes `model` to `path` atomically: a reader sees either the old file or the
/// whole new one, never a half-written file, even if the writer crashes.
pub fn save(model: &Model, path: &Path) -> Result<(), ModelFileError> {
    let write_error = |source| ModelFileError::Write { path: path.to_owned(), source };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(directory).map_err(write_error)?;
    file.write_all(&encode(model)).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    file.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::meta;
    use ndarray::array;

    fn model() -> Model {
        let vectorizer =
            TfIdf::from_parts(crate::tfidf::tests::words(1), vec!["camp".into(), "troops".into()], vec![1.5, 1.25])
                .unwrap();
        let layer = LinearLayer { weights: array![[0.25, -1.0], [3.0, 0.125]], intercept: array![0.5, -0.5] };
        Model::new(meta(), vec!["security".into(), "humanitarian".into()], vectorizer, layer).unwrap()
    }

    #[test]
    fn round_trip_keeps_every_part() {
        let original = model();
        let bytes = encode(&original);
        let loaded = decode(&bytes).unwrap();
        assert_eq!(loaded.meta(), original.meta());
        assert_eq!(loaded.labels(), original.labels());
        assert_eq!(loaded.vectorizer().terms(), original.vectorizer().terms());
        assert_eq!(loaded.vectorizer().idf(), original.vectorizer().idf());
        assert_eq!(loaded.layer(), original.layer());
        assert_eq!(encode(&loaded), bytes);
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let bytes = encode(&model());
        assert!(matches!(decode(b""), Err(ModelFileError::NotAModel)));
        assert!(matches!(decode(b"{\"json\": true}"), Err(ModelFileError::NotAModel)));
        assert!(matches!(decode(&bytes[..30]), Err(ModelFileError::Truncated { .. })));
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(ModelFileError::Truncated { .. })));

        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(ModelFileError::TrailingBytes { extra: 1 })));

        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert!(matches!(decode(&flipped), Err(ModelFileError::ChecksumMismatch)));

        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&99u32.to_le_bytes());
        let err = decode(&future).unwrap_err();
        assert!(matches!(err, ModelFileError::UnsupportedVersion { found: 99, supported: FORMAT_VERSION }));
        assert!(err.to_string().contains("version 99"));

        let mut huge = bytes;
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(ModelFileError::Truncated { .. })));
    }

    #[test]
    fn any_flipped_bit_anywhere_in_the_file_is_refused() {
        let bytes = encode(&model());
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[index] ^= 1 << bit;
                let refused = decode(&damaged);
                assert!(refused.is_err(), "byte {index} bit {bit} went unnoticed");
                if index >= 20 {
                    // Past the length field, only the checksum can notice.
                    assert!(
                        matches!(refused, Err(ModelFileError::ChecksumMismatch)),
                        "byte {index} bit {bit}: {refused:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_valid_checksum_over_an_inconsistent_payload_is_still_refused() {
        let good = model();
        let mut payload: Payload = postcard::from_bytes(&encode(&good)[HEADER_LEN..]).unwrap();
        payload.intercept.push(1.0);
        let body = postcard::to_stdvec(&payload).unwrap();
        let mut bytes = encode(&good)[..HEADER_LEN].to_vec();
        bytes[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
        bytes[20..52].copy_from_slice(&Sha256::digest(&body));
        bytes.extend_from_slice(&body);
        assert!(matches!(decode(&bytes), Err(ModelFileError::Invalid(InvalidModel::ColumnMismatch { .. }))));
    }

    #[test]
    fn bytes_after_the_payload_inside_the_checksum_are_refused() {
        let good = encode(&model());
        let mut body = good[HEADER_LEN..].to_vec();
        body.extend_from_slice(b"junk");
        let mut bytes = good[..HEADER_LEN].to_vec();
        bytes[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
        bytes[20..52].copy_from_slice(&Sha256::digest(&body));
        bytes.extend_from_slice(&body);
        assert!(matches!(decode(&bytes), Err(ModelFileError::TrailingBytes { extra: 4 })));
    }

    /// The `model_file` fuzz target's seeds are small real models, as whole files and as
    /// bare payloads (the bundled model is over a megabyte: too big to mutate quickly).
    /// A format change leaves them stale and fails here; rewrite them with
    /// `TOPICS_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds`.
    #[test]
    fn fuzz_seeds_are_current() {
        let documents = [
            "Troops shelled the border town; the army said troops advanced.",
            "Aid agencies said families fled to a camp without water or aid.",
            "قصفت القوات البلدة الحدودية وقالت القوات إن الجيش تقدم",
            "وصلت قافلة مساعدات إلى مخيم النازحين ووزعت المساعدات",
        ];
        let settings = FeatureSettings {
            analyzer: crate::analyzer::AnalyzerSettings { char_ngrams: (3, 4), ..Default::default() },
            min_df: 1,
            max_features: 24,
            sublinear_tf: true,
        };
        let vectorizer = TfIdf::fit(&documents, settings).unwrap();
        let weights = Array2::from_shape_fn((vectorizer.vocabulary_size(), 4), |(r, c)| {
            ((r * 7 + c * 3) % 11) as f32 / 4.0 - 1.25
        });
        let layer = LinearLayer { weights, intercept: array![0.0, 0.125, 0.25, 0.375] };
        let labels = ["diplomacy", "humanitarian", "none", "security"].map(String::from).to_vec();
        let grams = Model::new(meta(), labels, vectorizer, layer).unwrap();

        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/model_file");
        let write = std::env::var_os("TOPICS_WRITE_FUZZ_SEEDS").is_some();
        for (name, model) in
            [("words", model()), ("four-labels", crate::model::tests::four_label_model()), ("grams", grams)]
        {
            let file = encode(&model);
            for (path, bytes) in [
                (directory.join(format!("{name}.model")), &file[..]),
                (directory.join(format!("{name}.payload")), &file[HEADER_LEN..]),
            ] {
                if write {
                    std::fs::write(&path, bytes).unwrap();
                }
                let seed = std::fs::read(&path).unwrap();
                assert!(seed == bytes, "{} is stale; rewrite it with TOPICS_WRITE_FUZZ_SEEDS=1", path.display());
            }
        }
    }

    #[test]
    fn save_then_load_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.model");
        save(&model(), &path).unwrap();
        assert_eq!(load(&path).unwrap().labels(), model().labels());
        let missing = load(&dir.path().join("absent.model")).unwrap_err();
        assert!(missing.to_string().contains("absent.model"), "{missing}");
        let directory = load(dir.path()).unwrap_err();
        assert!(directory.to_string().contains("not a regular file"), "{directory}");
    }
}
