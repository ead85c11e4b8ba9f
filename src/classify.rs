//! The whole answer for one article: its label and scores, every topic it substantially
//! covers, and, when asked, its segments and the terms that explain the decision.

use std::ops::Range;

use crate::bag::Bag;
use crate::explain::{self, Contribution};
use crate::model::NONE;
use crate::model::{Model, Prediction};
use crate::segment;

/// A topic other than the dominant one is listed when the segments labeled with it make
/// up at least this share of the text: a tenth of the article, one paragraph in ten.
pub const COVERAGE_SHARE: f32 = 0.1;

/// What to compute beyond the label and scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Classify each segment and return them.
    pub segments: bool,
    /// How many explaining terms to return (capped at [`explain::MAX_TERMS`]).
    pub explain: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Of the whole text.
    pub prediction: Prediction,
    /// Label indices: the dominant label first, then the other topics covered.
    pub labels: Vec<usize>,
    /// Empty unless asked for.
    pub segments: Vec<SegmentPrediction>,
    /// Empty unless asked for.
    pub explanation: Vec<Contribution>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPrediction {
    /// Byte range in the text.
    pub range: Range<usize>,
    pub prediction: Prediction,
}

impl Model {
    /// Classifies `text` as a whole and segment by segment. The text is read once: each
    /// segment's features are the occurrences that lie wholly inside it, which is what
    /// reading the segment alone would give.
    pub fn classify(&self, text: &str, options: Options) -> Classification {
        let ranges = segment::split(text);
        // One segment is the whole text: no need to classify it twice.
        let mut per_segment: Vec<Vec<u32>> = vec![Vec::new(); if ranges.len() > 1 { ranges.len() } else { 0 }];
        let mut locate = SegmentCursor::new(&ranges);
        // Only an explanation needs to know where each feature occurred.
        let mut occurrences: Vec<(u32, Range<usize>)> = Vec::new();
        // News has about two distinct features per byte of text.
        let mut bag = Bag::with_capacity(text.len().saturating_mul(2).min(self.vectorizer().vocabulary_size()));
        self.vectorizer().for_each_feature(text, |feature, span| {
            bag.add(feature);
            if let Some(features) = locate.segment_of(&span).and_then(|k| per_segment.get_mut(k)) {
                features.push(feature);
            }
            if options.explain > 0 {
                occurrences.push((feature, span));
            }
        });
        let prediction = self.score_bag(&bag);
        let explanation = match options.explain {
            0 => Vec::new(),
            n => explain::explain(self, text, &occurrences, &self.vectorizer().row(&bag), n),
        };

        let segments: Vec<SegmentPrediction> = if per_segment.is_empty() {
            ranges.into_iter().map(|range| SegmentPrediction { range, prediction: prediction.clone() }).collect()
        } else {
            ranges
                .into_iter()
                .zip(per_segment)
                .map(|(range, features)| {
                    bag.clear(features.len().min(self.vectorizer().vocabulary_size()));
                    features.iter().for_each(|&feature| bag.add(feature));
                    SegmentPrediction { range, prediction: self.score_bag(&bag) }
                })
                .collect()
        };
        let labels = self.covered_labels(&prediction, &segments);
        Classification {
            prediction,
            labels,
            segments: if options.segments { segments } else { Vec::new() },
            explanation,
        }
    }

    /// The dominant label, then every other topic whose segments make up at least
    /// [`COVERAGE_SHARE`] of the text, largest share first. An out-of-scope article
    /// covers no topic.
    fn covered_labels(&self, prediction: &Prediction, segments: &[SegmentPrediction]) -> Vec<usize> {
        let top = prediction.label();
        let mut labels = vec![top];
        if self.labels()[top] == NONE {
            return labels;
        }
        let total: usize = segments.iter().map(|s| s.range.len()).sum();
        if total == 0 {
            return labels;
        }
        let mut share = vec![0.0f32; self.labels().len()];
        for segment in segments {
            share[segment.prediction.label()] += segment.range.len() as f32 / total as f32;
        }
        let mut others: Vec<usize> =
            (0..share.len()).filter(|&l| l != top && self.labels()[l] != NONE && share[l] >= COVERAGE_SHARE).collect();
        others.sort_by(|&a, &b| share[b].total_cmp(&share[a]).then(a.cmp(&b)));
        labels.extend(others);
        labels
    }
}

/// Finds the segment an occurrence belongs to: the one its span starts in, provided it
/// also ends there. Segments are disjoint and in text order.
struct SegmentCursor<'a> {
    ranges: &'a [Range<usize>],
    /// Where the previous occurrence was found.
    at: usize,
}

impl<'a> SegmentCursor<'a> {
    fn new(ranges: &'a [Range<usize>]) -> Self {
        Self { ranges, at: 0 }
    }

    fn segment_of(&mut self, span: &Range<usize>) -> Option<usize> {
        // Occurrences come almost in text order: step forward from the previous one's
        // segment, and search only where the order breaks.
        if self.ranges.get(self.at).is_none_or(|range| range.start > span.start) {
            self.at = self.ranges.partition_point(|range| range.end <= span.start);
        }
        while self.ranges.get(self.at).is_some_and(|range| range.end <= span.start) {
            self.at += 1;
        }
        let range = self.ranges.get(self.at)?;
        (range.start <= span.start && span.end <= range.end).then_some(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::four_label_model;

    fn names(model: &Model, labels: &[usize]) -> Vec<String> {
        labels.iter().map(|&l| model.labels()[l].clone()).collect()
    }

    #[test]
    fn paragraphs_add_the_topics_they_cover() {
        let model = four_label_model();
        let text = "troops attacked troops attacked\ntroops attacked again\ncamp camp camp";
        let answer = model.classify(text, Options { segments: true, explain: 3 });
        assert_eq!(names(&model, &answer.labels), ["security", "humanitarian"]);
        assert_eq!(answer.segments.len(), 3);
        assert_eq!(&text[answer.segments[2].range.clone()], "camp camp camp");
        assert_eq!(model.labels()[answer.segments[2].prediction.label()], "humanitarian");
        assert_eq!(answer.explanation.len(), 3);
        assert_eq!(model.labels()[answer.explanation[0].label], "security");
    }

    #[test]
    fn a_passing_mention_is_not_a_topic() {
        let model = four_label_model();
        let text = format!("{}\ncamp", "troops attacked ".repeat(20));
        let answer = model.classify(&text, Options::default());
        assert_eq!(names(&model, &answer.labels), ["security"]);
        assert!(answer.segments.is_empty() && answer.explanation.is_empty());
    }

    #[test]
    fn out_of_scope_covers_no_topic() {
        let model = four_label_model();
        let answer = model.classify("football football\ntroops", Options::default());
        assert_eq!(names(&model, &answer.labels), ["none"]);
    }

    #[test]
    fn a_segment_scores_as_if_read_alone() {
        let model =
            crate::model_file::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/topics.model"))
                .unwrap();
        let text = "Troops shelled the border town overnight, the army said.\n\
                    Aid agencies said families fled to a camp without water.\n\
                    The foreign minister called his counterpart to discuss a truce.";
        let answer = model.classify(text, Options { segments: true, explain: 0 });
        assert_eq!(answer.segments.len(), 3);
        for segment in &answer.segments {
            assert_eq!(segment.prediction, model.predict(&text[segment.range.clone()]));
        }
        assert_eq!(answer.prediction, model.predict(text));
    }

    #[test]
    fn a_segment_ending_in_an_invisible_character_scores_as_if_read_alone() {
        let model =
            crate::model_file::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/topics.model"))
                .unwrap();
        for invisible in ['\u{200B}', '\u{200F}', '\u{FEFF}', '\u{00AD}'] {
            let text = format!(
                "Troops shelled the border town overnight{invisible}\nAid agencies said families fled to a camp{invisible}"
            );
            let answer = model.classify(&text, Options { segments: true, explain: 0 });
            assert_eq!(answer.segments.len(), 2);
            for segment in &answer.segments {
                assert_eq!(segment.prediction, model.predict(&text[segment.range.clone()]), "{invisible:?}");
            }
        }
    }

    #[test]
    fn one_segment_reuses_the_whole_text_prediction() {
        let model = four_label_model();
        let answer = model.classify("talked", Options { segments: true, explain: 0 });
        assert_eq!(answer.segments.len(), 1);
        assert_eq!(answer.segments[0].prediction, answer.prediction);
        assert_eq!(names(&model, &answer.labels), ["diplomacy"]);
    }
}
