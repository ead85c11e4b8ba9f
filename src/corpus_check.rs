//! Quality checks for a labeled corpus, beyond what reading it enforces: allowed
//! labels, a language that matches the script, exact and near duplicates, and the
//! balance of labels per language.

use std::collections::BTreeMap;
use std::fmt;

use rustc_hash::FxHashMap;

use crate::corpus::Document;
use crate::model::NONE;
use crate::{lang, text};

/// Words per shingle for near-duplicate detection.
const SHINGLE_WORDS: usize = 5;
/// A shingle in more documents than this is boilerplate (a dateline, an agency's
/// sign-off), not evidence that two documents are copies.
const BOILERPLATE_DOCUMENTS: usize = 25;

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub allowed_labels: Vec<String>,
    /// Two documents sharing at least this fraction of the smaller one's shingles are near duplicates.
    pub near_duplicate_overlap: f64,
    /// A language/label cell smaller than this fraction of its language's largest cell is reported.
    pub min_balance: f64,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            allowed_labels: ["diplomacy", "security", "humanitarian", NONE].map(String::from).to_vec(),
            near_duplicate_overlap: 0.5,
            min_balance: 0.25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub documents: usize,
    pub findings: Vec<Finding>,
    /// Documents per (language, primary label), mixed documents counted under their dominant label.
    pub balance: BTreeMap<(String, String), usize>,
    /// Documents with more than one label, per language.
    pub mixed: BTreeMap<String, usize>,
}

impl CheckReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    fn error(&mut self, message: String) {
        self.findings.push(Finding { severity: Severity::Error, message });
    }

    fn warn(&mut self, message: String) {
        self.findings.push(Finding { severity: Severity::Warning, message });
    }
}

pub fn check(documents: &[Document], settings: &CheckSettings) -> CheckReport {
    let mut report = CheckReport { documents: documents.len(), ..CheckReport::default() };

    for d in documents {
        for label in &d.labels {
            if !settings.allowed_labels.contains(label) {
                report.error(format!("{}: label {label:?} is not one of {:?}", d.id, settings.allowed_labels));
            }
        }
        if d.labels.len() > 1 && d.labels.iter().any(|l| l == NONE) {
            report.error(format!("{}: \"{NONE}\" cannot be combined with other labels", d.id));
        }
        let detected = lang::detect(&d.text);
        if detected != d.lang {
            report.error(format!("{}: lang is {:?} but the text reads as {detected:?}", d.id, d.lang));
        }
        *report.balance.entry((d.lang.clone(), d.primary_label().to_string())).or_default() += 1;
        if d.labels.len() > 1 {
            *report.mixed.entry(d.lang.clone()).or_default() += 1;
        }
    }

    duplicates(documents, settings, &mut report);

    let mut largest: BTreeMap<&str, usize> = BTreeMap::new();
    for ((language, _), &count) in &report.balance {
        let entry = largest.entry(language.as_str()).or_default();
        *entry = (*entry).max(count);
    }
    let small: Vec<String> = report
        .balance
        .iter()
        .filter(|((language, _), count)| (**count as f64) < settings.min_balance * largest[language.as_str()] as f64)
        .map(|((language, label), count)| format!("{language}/{label} has only {count} documents"))
        .collect();
    for message in small {
        report.warn(message);
    }
    report
}

fn duplicates(documents: &[Document], settings: &CheckSettings, report: &mut CheckReport) {
    let normalized: Vec<Vec<String>> = documents
        .iter()
        .map(|d| {
            let mut words = Vec::new();
            text::for_each_token(&d.text, |w, _| words.push(w.to_string()));
            words
        })
        .collect();

    let mut first_with_text: FxHashMap<&[String], usize> = FxHashMap::default();
    for (i, words) in normalized.iter().enumerate() {
        if let Some(&j) = first_with_text.get(words.as_slice()) {
            report.error(format!("{}: same text as {}", documents[i].id, documents[j].id));
        } else {
            first_with_text.insert(words, i);
        }
    }

    let shingles: Vec<Vec<u64>> = normalized
        .iter()
        .map(|words| {
            let mut set: Vec<u64> = words.windows(SHINGLE_WORDS).map(fx_hash).collect();
            set.sort_unstable();
            set.dedup();
            set
        })
        .collect();
    let mut postings: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
    for (i, set) in shingles.iter().enumerate() {
        for &shingle in set {
            postings.entry(shingle).or_default().push(i);
        }
    }
    for (i, set) in shingles.iter().enumerate() {
        let mut shared: FxHashMap<usize, usize> = FxHashMap::default();
        for shingle in set {
            let holders = &postings[shingle];
            if holders.len() > BOILERPLATE_DOCUMENTS {
                continue;
            }
            for &j in holders.iter().filter(|&&j| j > i) {
                *shared.entry(j).or_default() += 1;
            }
        }
        let mut close: Vec<(usize, f64)> = shared
            .into_iter()
            .map(|(j, count)| (j, count as f64 / set.len().min(shingles[j].len()) as f64))
            .filter(|&(j, overlap)| overlap >= settings.near_duplicate_overlap && normalized[i] != normalized[j])
            .collect();
        close.sort_by_key(|&(j, _)| j);
        for (j, overlap) in close {
            report.error(format!(
                "{} and {} are near duplicates ({:.0}% of {SHINGLE_WORDS}-word shingles shared)",
                documents[i].id,
                documents[j].id,
                overlap * 100.0
            ));
        }
    }
}

fn fx_hash(words: &[String]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(words)
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} documents", self.documents)?;
        let labels: Vec<&str> = {
            let mut l: Vec<&str> = self.balance.keys().map(|(_, label)| label.as_str()).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        let languages: Vec<&str> = {
            let mut l: Vec<&str> = self.balance.keys().map(|(language, _)| language.as_str()).collect();
            l.dedup();
            l
        };
        write!(f, "{:8}", "language")?;
        for label in &labels {
            write!(f, "  {label:>12}")?;
        }
        writeln!(f, "  {:>12}", "(mixed)")?;
        for language in &languages {
            write!(f, "{language:8}")?;
            for label in &labels {
                let count = self.balance.get(&(language.to_string(), label.to_string())).copied().unwrap_or(0);
                write!(f, "  {count:>12}")?;
            }
            writeln!(f, "  {:>12}", self.mixed.get(*language).copied().unwrap_or(0))?;
        }
        for finding in &self.findings {
            let tag = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            writeln!(f, "{tag}: {}", finding.message)?;
        }
        let errors = self.errors().count();
        writeln!(f, "{errors} error(s), {} warning(s)", self.findings.len() - errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, lang: &str, text: &str, labels: &[&str]) -> Document {
        Document {
            id: id.into(),
            lang: lang.into(),
            text: text.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    const STORY: &str = "Troops pushed into the northern district on Monday after two days of shelling, officers said, \
        and engineers began clearing mines from the main road.";

    #[test]
    fn a_clean_corpus_passes() {
        let documents = [
            doc("a", "en", STORY, &["security"]),
            doc("b", "ar", "وصلت قافلة تحمل الطحين والأدوية إلى المخيم بعد أسبوعين من الانتظار", &["humanitarian"]),
        ];
        let report = check(&documents, &CheckSettings::default());
        assert_eq!(report.errors().count(), 0, "{report}");
        assert_eq!(report.balance[&("en".to_string(), "security".to_string())], 1);
    }

    #[test]
    fn every_problem_is_reported() {
        let near = STORY.replace("Monday", "Tuesday");
        let documents = [
            doc("a", "en", STORY, &["security"]),
            doc("b", "en", &STORY.to_uppercase(), &["security"]),
            doc("c", "en", &near, &["security"]),
            doc("d", "ar", "The minister met the ambassador.", &["diplomacy"]),
            doc("e", "en", "The league leaders won again.", &["sport"]),
            doc("f", "en", "The match was called off.", &["none", "security"]),
        ];
        let report = check(&documents, &CheckSettings::default());
        let errors: Vec<&str> = report.errors().map(|f| f.message.as_str()).collect();
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(has("b: same text as a"), "{errors:?}");
        assert!(has("a and c are near duplicates"), "{errors:?}");
        assert!(has("d: lang is \"ar\" but the text reads as \"en\""), "{errors:?}");
        assert!(has("label \"sport\" is not one of"), "{errors:?}");
        assert!(has("cannot be combined"), "{errors:?}");
    }

    #[test]
    fn small_cells_are_warned_about() {
        let mut documents: Vec<Document> = (0..8)
            .map(|i| doc(&i.to_string(), "en", &format!("story number {i} about troops"), &["security"]))
            .collect();
        documents.push(doc("x", "en", "one story about an envoy", &["diplomacy"]));
        let report = check(&documents, &CheckSettings::default());
        let warnings: Vec<&Finding> = report.findings.iter().filter(|f| f.severity == Severity::Warning).collect();
        assert_eq!(warnings.len(), 1, "{report}");
        assert!(warnings[0].message.contains("en/diplomacy has only 1"));
    }
}
