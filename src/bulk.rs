//! Classifying a JSONL stream of documents: one answer (or one error) written per input
//! line, in input order, without holding more than a bounded chunk of the input in memory.
//! Also the JSON shape of an answer, shared with `topics classify TEXT`.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::classify::{Classification, Options};
use crate::model::{Model, Prediction};

/// Six decimals: f32 carries no more, and the f64 JSON number would print noise digits.
pub fn rounded(score: f32) -> f64 {
    (f64::from(score) * 1e6).round() / 1e6
}

/// The answer for `text` as the command line prints it: label, scores, labels, language,
/// segments, explanation and model version.
pub fn answer_json(model: &Model, text: &str, answer: &Classification) -> Map<String, Value> {
    let labels = model.labels();
    let scores = |p: &Prediction| {
        p.ranked.iter().map(|&(l, score)| json!({"label": labels[l], "score": rounded(score)})).collect::<Vec<_>>()
    };
    let mut object = Map::new();
    object.insert("label".into(), json!(labels[answer.prediction.label()]));
    object.insert("scores".into(), json!(scores(&answer.prediction)));
    object.insert("labels".into(), json!(answer.labels.iter().map(|&l| &labels[l]).collect::<Vec<_>>()));
    object.insert("language".into(), json!(crate::lang::detect(text)));
    let segments = answer.segments.iter().map(|s| {
        json!({"start": s.range.start, "end": s.range.end, "label": labels[s.prediction.label()], "scores": scores(&s.prediction)})
    });
    object.insert("segments".into(), Value::Array(segments.collect()));
    let explanation = answer
        .explanation
        .iter()
        .map(|c| json!({"term": c.term, "label": labels[c.label], "weight": rounded(c.weight)}));
    object.insert("explanation".into(), Value::Array(explanation.collect()));
    object.insert("model_version".into(), json!(model.meta().version));
    object
}

/// How a stream is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSettings {
    pub options: Options,
    /// Longest accepted text, in UTF-8 bytes: the server's limit, so that a file that
    /// passes here also passes through the API.
    pub max_text_bytes: usize,
    /// Threads classifying a chunk at once.
    pub threads: usize,
    /// Lines read, classified and written together. Bounds memory and keeps output in order.
    pub chunk_lines: usize,
}

impl BulkSettings {
    pub fn new(options: Options, max_text_bytes: usize) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { options, max_text_bytes, threads, chunk_lines: 256 }
    }

    /// A text within the limit may still take up to six bytes a byte in JSON (`\u00XX`);
    /// a longer line cannot hold an acceptable text and is not read into memory.
    fn max_line_bytes(&self) -> usize {
        self.max_text_bytes.saturating_mul(6).saturating_add(64 * 1024)
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Input lines read, blank ones included.
    pub lines: u64,
    pub bytes: u64,
    /// Documents classified.
    pub documents: u64,
    /// Rows answered with an error instead.
    pub errors: u64,
    /// Documents per label, in the model's label order.
    pub per_label: Vec<(String, u64)>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn documents_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.documents as f64 / seconds } else { 0.0 }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} documents classified, {} error row(s), {} lines in {:.2} s ({:.0} documents/s)",
            self.documents,
            self.errors,
            self.lines,
            self.elapsed.as_secs_f64(),
            self.documents_per_second()
        )?;
        let counts: Vec<String> = self.per_label.iter().map(|(label, n)| format!("{label} {n}")).collect();
        write!(f, "labels: {}", counts.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("cannot read the input: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
}

/// One input line waiting to be classified: its number and bytes, or why it could not be
/// read whole.
struct Line {
    number: u64,
    content: LineContent,
}

/// A line's bytes, or why they were not kept.
type LineContent = Result<Vec<u8>, String>;

/// One output row, and the label it counts towards (none for an error row).
struct Row {
    json: String,
    label: Option<usize>,
}

/// Reads JSONL rows `{"id": …, "text": …}` (other fields ignored, so a corpus file works)
/// from `input` and writes one JSON line per non-blank input line to `output`: the answer
/// with the row's `id`, or `{"id", "line", "error"}` for a row that cannot be classified.
/// Blank lines are skipped. `progress` hears the lines and bytes read so far after each
/// chunk. Only failing to read or write stops the run.
pub fn classify_stream(
    model: &Model,
    mut input: impl BufRead,
    mut output: impl Write,
    settings: &BulkSettings,
    mut progress: impl FnMut(u64, u64),
) -> Result<Summary, BulkError> {
    let started = Instant::now();
    let mut per_label = vec![0u64; model.labels().len()];
    let (mut lines, mut bytes, mut documents, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut chunk: Vec<Line> = Vec::with_capacity(settings.chunk_lines);
    loop {
        chunk.clear();
        let mut finished = false;
        while chunk.len() < settings.chunk_lines.max(1) {
            let Some((content, read)) = read_line(&mut input, settings.max_line_bytes())? else {
                finished = true;
                break;
            };
            lines += 1;
            bytes += read;
            if let Ok(text) = &content
                && text.iter().all(u8::is_ascii_whitespace)
            {
                continue;
            }
            chunk.push(Line { number: lines, content });
        }
        for row in classify_chunk(model, &chunk, settings) {
            match row.label {
                Some(label) => {
                    documents += 1;
                    per_label[label] += 1;
                }
                None => errors += 1,
            }
            output.write_all(row.json.as_bytes()).map_err(BulkError::Write)?;
            output.write_all(b"\n").map_err(BulkError::Write)?;
        }
        progress(lines, bytes);
        if finished {
            break;
        }
    }
    output.flush().map_err(BulkError::Write)?;
    Ok(Summary {
        lines,
        bytes,
        documents,
        errors,
        per_label: model.labels().iter().cloned().zip(per_label).collect(),
        elapsed: started.elapsed(),
    })
}

/// The next line without its line ending, and the bytes it took; `None` at the end. A
/// line longer than `limit` is skipped to its end and reported instead of being held.
fn read_line(input: &mut impl BufRead, limit: usize) -> Result<Option<(LineContent, u64)>, BulkError> {
    let mut line = Vec::new();
    let read = io::Read::take(&mut *input, limit as u64).read_until(b'\n', &mut line).map_err(BulkError::Read)?;
    if read == 0 {
        return Ok(None);
    }
    let mut consumed = read as u64;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Some((Ok(line), consumed)));
    }
    if read < limit {
        // The last line, without a final newline.
        return Ok(Some((Ok(line), consumed)));
    }
    drop(line);
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let more = io::Read::take(&mut *input, 64 * 1024).read_until(b'\n', &mut rest).map_err(BulkError::Read)?;
        consumed += more as u64;
        if more == 0 || rest.last() == Some(&b'\n') {
            break;
        }
    }
    Ok(Some((Err(format!("line is {consumed} bytes, too long to hold a text of at most {limit} bytes")), consumed)))
}

/// Classifies a chunk on `settings.threads` threads, each taking the next unclaimed line,
/// and returns the rows in input order.
fn classify_chunk(model: &Model, chunk: &[Line], settings: &BulkSettings) -> Vec<Row> {
    let workers = settings.threads.clamp(1, chunk.len().max(1));
    if workers == 1 {
        return chunk.iter().map(|line| row(model, line, settings)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Row)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut rows = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(line) = chunk.get(i) else { return rows };
                        rows.push((i, row(model, line, settings)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(rows) => rows,
                // A panic in classification is a bug, not bad input: pass it on.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, row)| row).collect()
}

fn row(model: &Model, line: &Line, settings: &BulkSettings) -> Row {
    let mut id = Value::Null;
    let answer = line.content.as_deref().map_err(String::clone).and_then(|bytes| {
        let object = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err("not a JSON object".to_string()),
            Err(error) => return Err(format!("not JSON: {error}")),
        };
        id = object.get("id").cloned().unwrap_or(Value::Null);
        let text = match object.get("text") {
            Some(Value::String(text)) => text,
            Some(_) => return Err("\"text\" is not a string".to_string()),
            None => return Err("no \"text\" field".to_string()),
        };
        if text.len() > settings.max_text_bytes {
            return Err(format!("text is {} bytes, over the limit of {} bytes", text.len(), settings.max_text_bytes));
        }
        if crate::text::is_blank(text) {
            return Err("text is empty or only white space".to_string());
        }
        let classification = model.classify(text, settings.options);
        let label = classification.prediction.label();
        let mut answer = answer_json(model, text, &classification);
        // Rows carry only what was asked for: most bulk runs want neither.
        if !settings.options.segments {
            answer.remove("segments");
        }
        if settings.options.explain == 0 {
            answer.remove("explanation");
        }
        Ok((answer, label))
    });
    match answer {
        Ok((answer, label)) => {
            let mut object = Map::with_capacity(answer.len() + 1);
            object.insert("id".into(), id);
            object.extend(answer);
            Row { json: Value::Object(object).to_string(), label: Some(label) }
        }
        Err(error) => Row { json: json!({"id": id, "line": line.number, "error": error}).to_string(), label: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::four_label_model;

    fn run(input: &str, settings: &BulkSettings) -> (Vec<Value>, Summary) {
        let mut output = Vec::new();
        let summary = classify_stream(&four_label_model(), input.as_bytes(), &mut output, settings, |_, _| {}).unwrap();
        let rows = String::from_utf8(output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (rows, summary)
    }

    #[test]
    fn answers_every_line_in_order_and_reports_bad_ones() {
        let input = concat!(
            "{\"id\": \"a\", \"text\": \"troops attacked\", \"lang\": \"en\", \"labels\": [\"security\"]}\n",
            "not json\n",
            "\n",
            "{\"id\": 7, \"text\": \"   \"}\n",
            "{\"id\": \"b\"}\n",
            "[1, 2]\n",
            "{\"id\": \"long\", \"text\": \"camp camp camp camp\"}\n",
            "{\"text\": \"camp\"}",
        );
        for threads in [1, 3] {
            let settings = BulkSettings { threads, chunk_lines: 2, ..BulkSettings::new(Options::default(), 15) };
            let (rows, summary) = run(input, &settings);
            assert_eq!(rows.len(), 7, "{rows:?}");
            assert_eq!(rows[0]["id"], "a");
            assert_eq!(rows[0]["label"], "security");
            assert!(rows[0]["scores"].is_array() && rows[0]["model_version"].is_string());
            assert!(rows[0].get("segments").is_none());
            assert_eq!(rows[1]["line"], 2);
            assert!(rows[1]["error"].as_str().unwrap().starts_with("not JSON"));
            assert_eq!((rows[2]["id"].clone(), rows[2]["line"].clone()), (json!(7), json!(4)));
            assert!(rows[2]["error"].as_str().unwrap().contains("empty"));
            assert!(rows[3]["error"].as_str().unwrap().contains("no \"text\""));
            assert_eq!(rows[4]["error"], "not a JSON object");
            assert!(rows[5]["error"].as_str().unwrap().contains("over the limit"), "{}", rows[5]);
            assert_eq!(rows[6]["label"], "humanitarian");
            assert_eq!(rows[6]["id"], Value::Null);
            assert_eq!((summary.lines, summary.documents, summary.errors), (8, 2, 5));
            let count = |label: &str| summary.per_label.iter().find(|(l, _)| l == label).unwrap().1;
            assert_eq!((count("security"), count("humanitarian")), (1, 1));
            assert_eq!(summary.bytes, input.len() as u64);
            assert!(summary.to_string().contains("2 documents classified, 5 error row(s)"));
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_not_held() {
        let settings = BulkSettings { chunk_lines: 4, ..BulkSettings::new(Options::default(), 1) };
        let long = format!("{{\"text\": \"{}\"}}\n", "x".repeat(200_000));
        let input = format!("{long}{{\"text\": \"t\"}}\n");
        let (rows, summary) = run(&input, &settings);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["line"], 1);
        assert!(rows[0]["error"].as_str().unwrap().contains("too long"), "{}", rows[0]);
        assert!(rows[1]["label"].is_string(), "{}", rows[1]);
        assert_eq!(summary.bytes, input.len() as u64);
    }

    #[test]
    fn invalid_utf8_is_an_error_row() {
        let mut output = Vec::new();
        let input: &[u8] = b"{\"text\": \"\xff\"}\n";
        let settings = BulkSettings::new(Options::default(), 100);
        let summary = classify_stream(&four_label_model(), input, &mut output, &settings, |_, _| {}).unwrap();
        assert_eq!(summary.errors, 1);
        assert!(String::from_utf8(output).unwrap().contains("\"line\":1"));
    }
}
