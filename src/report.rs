//! Evaluation reports on disk, for people: `report.md` (what was trained or scored, the
//! candidate comparison, per-class and per-language scores, the confusion matrix) and
//! `confusion.svg`, a heatmap of the confusion matrix drawn with plotters' SVG backend,
//! which writes `<text>` elements and so needs no font files or system libraries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::classifier::ClassifierSettings;
use crate::evaluate::Evaluation;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::train::Candidate;

pub const MARKDOWN_FILE: &str = "report.md";
pub const CONFUSION_FILE: &str = "confusion.svg";

/// What a report says, gathered from a trained model or from an evaluation.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub title: String,
    /// Name/value facts listed first: version, corpus, settings.
    pub facts: Vec<(String, String)>,
    /// Model selection, empty when there was none.
    pub selection: &'a [Candidate],
    pub kept: Option<ClassifierSettings>,
    /// The scores of the kept model, with a sentence on where they come from.
    pub metrics: &'a Metrics,
    pub metrics_source: String,
    /// Extra Markdown appended at the end.
    pub notes: String,
}

impl<'a> Report<'a> {
    /// The report of a freshly trained model: its cross-validated scores, as stored in it.
    pub fn training(model: &'a Model) -> Self {
        let meta = model.meta();
        let mut facts = vec![
            ("model version".to_string(), meta.version.clone()),
            ("classifier".to_string(), meta.settings.classifier.to_string()),
            ("trained at".to_string(), crate::model::rfc3339(meta.trained_at).unwrap_or_default()),
            ("corpus".to_string(), format!("{} documents, digest {}", meta.corpus_documents, meta.corpus_digest)),
            ("labels".to_string(), model.labels().join(", ")),
            ("vocabulary".to_string(), format!("{} terms", model.vectorizer().vocabulary_size())),
        ];
        facts.extend(meta.settings.describe());
        let metrics_source = if meta.metrics.folds == 1 {
            format!(
                "One stratified held-out fold of {} of the {} documents (held-out predictions): above {} \
                 documents, a holdout replaces k-fold cross-validation.",
                meta.metrics.documents,
                meta.corpus_documents,
                crate::train::HOLDOUT_ABOVE
            )
        } else if meta.metrics.folds > 0 {
            format!(
                "{}-fold stratified cross-validation over {} documents (held-out predictions).",
                meta.metrics.folds, meta.metrics.documents
            )
        } else {
            "Not cross-validated (trained with fewer than two folds): no scores.".to_string()
        };
        Self {
            title: format!("Training report: model {}", meta.version),
            facts,
            selection: &meta.selection,
            kept: Some(meta.settings.classifier),
            metrics: &meta.metrics,
            metrics_source,
            notes: String::new(),
        }
    }

    /// The report of `model` scored on held-out `data` (described by `data`).
    pub fn evaluation(model: &'a Model, evaluation: &'a Evaluation, data: &str) -> Self {
        let meta = model.meta();
        let facts = vec![
            ("model version".to_string(), meta.version.clone()),
            ("classifier".to_string(), meta.settings.classifier.to_string()),
            ("data".to_string(), data.to_string()),
            ("documents".to_string(), evaluation.documents.to_string()),
        ];
        let mut notes = String::new();
        let _ = writeln!(notes, "## Beyond single-label documents\n");
        let _ = writeln!(notes, "| measure | value |\n|---|---|");
        let _ = writeln!(notes, "| topic macro-F1 (excluding \"none\") | {:.4} |", evaluation.topic_macro_f1);
        for (language, f1) in &evaluation.topic_macro_f1_by_language {
            let _ = writeln!(notes, "| topic macro-F1, {} | {f1:.4} |", cell(language));
        }
        let _ = writeln!(
            notes,
            "| in-scope documents on their primary label: accuracy | {:.4} |",
            evaluation.in_scope_primary.accuracy
        );
        let _ = writeln!(notes, "| mixed documents | {} |", evaluation.mixed.documents);
        let _ = writeln!(
            notes,
            "| mixed: predicted label is the dominant one | {:.4} |",
            evaluation.mixed.primary_hit_rate
        );
        let _ = writeln!(notes, "| mixed: predicted label is one of theirs | {:.4} |", evaluation.mixed.any_hit_rate);
        let _ =
            writeln!(notes, "| mixed: recall of their labels in `labels` | {:.4} |", evaluation.mixed.labels_recall);
        let _ = writeln!(notes, "| out of scope: recall of \"none\" | {:.4} |", evaluation.out_of_scope.recall);
        let _ = writeln!(notes, "| in scope: false \"none\" rate | {:.4} |", evaluation.out_of_scope.false_none_rate);
        Self {
            title: format!("Evaluation report: model {}", meta.version),
            facts,
            selection: &[],
            kept: None,
            metrics: &evaluation.single_label,
            metrics_source: format!(
                "Single-label documents of {data}, {} documents.",
                evaluation.single_label.documents
            ),
            notes,
        }
    }

    /// The report as Markdown; the picture is linked, not embedded.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_markdown(&mut out);
        out
    }

    fn write_markdown(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "# {}\n", cell(&self.title))?;
        writeln!(out, "| | |\n|---|---|")?;
        for (name, value) in &self.facts {
            writeln!(out, "| {} | {} |", cell(name), cell(value))?;
        }
        writeln!(out)?;
        if !self.selection.is_empty() {
            writeln!(out, "## Model selection\n")?;
            let how = if self.metrics.folds == 1 {
                "Every candidate scored on the same held-out fold (the standard error from equal shares of it)"
            } else {
                "Every candidate cross-validated on the same folds"
            };
            writeln!(
                out,
                "{how}; the most regularized model within one standard error of the best macro-F1 is kept.\n"
            )?;
            writeln!(out, "| classifier | accuracy | macro-F1 | ± s.e. | |\n|---|---:|---:|---:|---|")?;
            for candidate in self.selection {
                let kept = if Some(candidate.classifier) == self.kept { "kept" } else { "" };
                writeln!(
                    out,
                    "| {} | {:.4} | {:.4} | {:.4} | {kept} |",
                    cell(&candidate.classifier.to_string()),
                    candidate.metrics.accuracy,
                    candidate.metrics.macro_f1,
                    candidate.macro_f1_standard_error
                )?;
            }
            writeln!(out)?;
        }
        writeln!(out, "## Scores\n\n{}\n", self.metrics_source)?;
        let m = self.metrics;
        if m.documents == 0 {
            return write!(out, "{}", self.notes);
        }
        writeln!(out, "accuracy **{:.4}**, macro-F1 **{:.4}**\n", m.accuracy, m.macro_f1)?;
        writeln!(out, "| label | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|")?;
        for c in &m.per_class {
            writeln!(
                out,
                "| {} | {:.4} | {:.4} | {:.4} | {} |",
                cell(&c.label),
                c.precision,
                c.recall,
                c.f1,
                c.support
            )?;
        }
        writeln!(out, "\n### Per language\n")?;
        writeln!(out, "| language | documents | accuracy | macro-F1 |\n|---|---:|---:|---:|")?;
        for l in &m.per_language {
            writeln!(out, "| {} | {} | {:.4} | {:.4} |", cell(&l.language), l.documents, l.accuracy, l.macro_f1)?;
        }
        writeln!(out, "\n### Confusion matrix\n")?;
        writeln!(out, "Rows: true label; columns: predicted label.\n")?;
        write!(out, "| true \\ predicted |")?;
        for c in &m.per_class {
            write!(out, " {} |", cell(&c.label))?;
        }
        writeln!(out)?;
        writeln!(out, "|---|{}", "---:|".repeat(m.per_class.len()))?;
        for (row, c) in m.confusion.iter().zip(&m.per_class) {
            write!(out, "| **{}** |", cell(&c.label))?;
            for count in row {
                write!(out, " {count} |")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "\n![confusion matrix]({CONFUSION_FILE})\n")?;
        write!(out, "{}", self.notes)
    }

    /// Writes `report.md` and, when there are scores, `confusion.svg` into `dir` (created
    /// if needed). Returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ReportError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut written = Vec::new();
        if self.metrics.documents > 0 {
            let svg = confusion_svg(self.metrics, &self.title)?;
            let path = dir.join(CONFUSION_FILE);
            std::fs::write(&path, svg).map_err(io(&path))?;
            written.push(path);
        }
        let path = dir.join(MARKDOWN_FILE);
        std::fs::write(&path, self.markdown()).map_err(io(&path))?;
        written.insert(0, path);
        Ok(written)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the confusion matrix: {0}")]
    Drawing(String),
}

/// A Markdown table cell: pipes would end the cell, line breaks the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The confusion matrix as an SVG heatmap: a cell per (true, predicted) pair with its
/// count, shaded by its share of the true label's documents so that small classes read
/// as clearly as large ones.
pub fn confusion_svg(metrics: &Metrics, title: &str) -> Result<String, ReportError> {
    let labels: Vec<&str> = metrics.per_class.iter().map(|c| c.label.as_str()).collect();
    let k = labels.len() as i32;
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as i32;
    // The SVG backend cannot measure text: size from a generous 8 px a character at 14 px.
    let cell_size = (longest * 8 + 16).clamp(64, 160);
    let left = longest * 8 + 48;
    let top = 96;
    let width = (left + k * cell_size + 24).max(title.chars().count() as i32 * 9 + 40);
    let height = top + k * cell_size + 24;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width as u32, height as u32)).into_drawing_area();
        draw_confusion(&root, metrics, &labels, title, (left, top, cell_size))
            .map_err(|e| ReportError::Drawing(e.to_string()))?;
        root.present().map_err(|e| ReportError::Drawing(e.to_string()))?;
    }
    Ok(svg)
}

type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw_confusion(
    root: &Area<'_>,
    metrics: &Metrics,
    labels: &[&str],
    title: &str,
    (left, top, cell_size): (i32, i32, i32),
) -> DrawResult {
    root.fill(&WHITE)?;
    let font = |size: i32, h: HPos, v: VPos| TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(h, v));
    root.draw(&Text::new(title.to_string(), (12, 12), font(16, HPos::Left, VPos::Top)))?;
    let grid_width = labels.len() as i32 * cell_size;
    root.draw(&Text::new(
        "predicted label".to_string(),
        (left + grid_width / 2, 44),
        font(14, HPos::Center, VPos::Top),
    ))?;
    root.draw(&Text::new("true label".to_string(), (12, top - 20), font(14, HPos::Left, VPos::Bottom)))?;
    for (j, label) in labels.iter().enumerate() {
        let x = left + j as i32 * cell_size + cell_size / 2;
        root.draw(&Text::new(label.to_string(), (x, top - 8), font(13, HPos::Center, VPos::Bottom)))?;
    }
    for (i, (row, label)) in metrics.confusion.iter().zip(labels).enumerate() {
        let y = top + i as i32 * cell_size;
        root.draw(&Text::new(label.to_string(), (left - 10, y + cell_size / 2), font(13, HPos::Right, VPos::Center)))?;
        let total: u64 = row.iter().sum();
        for (j, &count) in row.iter().enumerate() {
            let x = left + j as i32 * cell_size;
            let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            // White to a deep blue; correct cells and errors share one scale.
            let shade = |full: u8| (255.0 - (255.0 - f64::from(full)) * share).round() as u8;
            let fill = RGBColor(shade(8), shade(48), shade(107));
            root.draw(&Rectangle::new([(x, y), (x + cell_size, y + cell_size)], fill.filled()))?;
            root.draw(&Rectangle::new([(x, y), (x + cell_size, y + cell_size)], RGBColor(200, 200, 200)))?;
            let ink = if share > 0.5 { WHITE } else { BLACK };
            let style = font(15, HPos::Center, VPos::Center).color(&ink);
            root.draw(&Text::new(count.to_string(), (x + cell_size / 2, y + cell_size / 2), style))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;

    fn metrics() -> Metrics {
        let labels: Vec<String> = ["diplomacy", "security", "a|b <&>"].map(String::from).to_vec();
        let o = |truth, predicted| Outcome { truth, predicted, language: "en" };
        Metrics::compute(&labels, &[o(0, 0), o(0, 1), o(1, 1), o(2, 2), o(2, 2)], 5)
    }

    #[test]
    fn svg_names_every_label_and_count() {
        let svg = confusion_svg(&metrics(), "test").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for needle in ["diplomacy", "security", "a|b &lt;&amp;&gt;", "\n2\n", "predicted label"] {
            assert!(svg.contains(needle), "{needle}: {svg}");
        }
    }

    #[test]
    fn markdown_has_the_tables_and_escapes_cells() {
        let m = metrics();
        let report = Report {
            title: "t".into(),
            facts: vec![("version".into(), "v1".into())],
            selection: &[],
            kept: None,
            metrics: &m,
            metrics_source: "5 folds.".into(),
            notes: String::new(),
        };
        let md = report.markdown();
        for needle in [
            "| label | precision | recall | F1 | support |",
            "| true \\ predicted | diplomacy | security | a\\|b <&> |",
            "| **diplomacy** | 1 | 1 | 0 |",
            "| en | 5 |",
            "confusion.svg",
        ] {
            assert!(md.contains(needle), "{needle}:\n{md}");
        }
        let dir = tempfile::tempdir().unwrap();
        let written = report.write(&dir.path().join("r")).unwrap();
        assert_eq!(written.len(), 2);
        assert!(written.iter().all(|p| p.exists()));
    }
}
