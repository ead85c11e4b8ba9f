//! Fuzzes featurizing and classifying arbitrary (lossily decoded) text with the bundled
//! default model, the one the server answers with out of the box.
//!
//! Every answer must be a probability distribution over the model's labels: finite
//! scores in [0, 1] summing to one, every label index one of the model's, every
//! segment and explained term a real stretch of the text.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use topics::Model;
use topics::Prediction;
use topics::classify::Options;

/// Compiled in, so the target finds its model wherever it runs.
static MODEL: LazyLock<Model> = LazyLock::new(|| {
    topics::model_file::decode(include_bytes!("../../models/topics.model"))
        .unwrap_or_else(|e| panic!("the bundled model loads: {e}"))
});

fn check(model: &Model, prediction: &Prediction) {
    let labels = model.labels().len();
    assert_eq!(prediction.ranked.len(), labels, "one score per label");
    assert!(prediction.label() < labels);
    let mut seen = vec![false; labels];
    let mut sum = 0.0f64;
    for &(label, score) in &prediction.ranked {
        assert!(label < labels && !seen[label], "label {label} out of range or repeated");
        seen[label] = true;
        assert!(score.is_finite() && (0.0..=1.0).contains(&score), "score {score}");
        sum += f64::from(score);
    }
    assert!((sum - 1.0).abs() < 1e-3, "scores sum to {sum}");
    for pair in prediction.ranked.windows(2) {
        assert!(pair[0].1 >= pair[1].1, "ranked out of order: {:?}", prediction.ranked);
    }
}

fuzz_target!(|data: &[u8]| {
    let model = &*MODEL;
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let prediction = model.predict(text);
    check(model, &prediction);

    let answer = model.classify(text, Options { segments: true, explain: 8 });
    check(model, &answer.prediction);
    assert_eq!(answer.prediction, prediction, "classify and predict disagree");
    assert_eq!(answer.labels.first(), Some(&prediction.label()));
    for &label in &answer.labels {
        assert!(label < model.labels().len());
    }
    let mut previous_end = 0;
    for segment in &answer.segments {
        let range = segment.range.clone();
        assert!(range.start >= previous_end && range.start < range.end && range.end <= text.len(), "{range:?}");
        assert!(text.get(range.clone()).is_some(), "segment {range:?} splits a character");
        previous_end = range.end;
        check(model, &segment.prediction);
    }
    assert!(answer.explanation.len() <= 8);
    for term in &answer.explanation {
        assert!(term.label < model.labels().len());
        assert!(term.weight.is_finite() && term.weight > 0.0, "weight {}", term.weight);
        assert!(text.contains(term.term.as_str()), "explained term {:?} is not in the text", term.term);
    }
});
