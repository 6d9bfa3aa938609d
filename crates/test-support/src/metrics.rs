//! Reading a binary's `GET /api/metrics` in tests: [`scrape`] fetches it, [`Exposition`] parses
//! the Prometheus text exposition format (version 0.0.4) into samples that tests look up by
//! metric name and **exact** label set, so a test asserting
//! `tcc_rm_branch_requests_total{op="try",outcome="applied"}` can never match a line of another
//! op or outcome, or a line that merely contains the same words.
//!
//! Only what the format needs for our assertions is parsed: `# HELP` / `# TYPE` comments and
//! blank lines are skipped; each other line is `name{label="value",...} value [timestamp]`, with
//! the label-value escapes `\\`, `\"` and `\n`, and values `NaN`, `+Inf`, `-Inf` or a float.
//! Histograms appear as their `_bucket{le=...}`, `_sum` and `_count` series, like any sample.
//!
//! ```
//! use test_support::metrics::Exposition;
//!
//! let text = "# TYPE x_total counter\nx_total{op=\"try\",outcome=\"applied\"} 2\n";
//! let metrics = Exposition::parse(text).unwrap();
//! assert_eq!(metrics.value("x_total", &[("op", "try"), ("outcome", "applied")]), 2.0);
//! assert_eq!(metrics.get("x_total", &[("op", "try")]), None); // the label set must be exact
//! ```

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' name as written (`tcc_ap_fire_duration_seconds_count`).
    pub name: String,
    /// Label names and (unescaped) values.
    pub labels: BTreeMap<String, String>,
    /// The value; `NaN` and infinities included.
    pub value: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{}{{{}}} {}", self.name, labels.join(","), self.value)
    }
}

/// A line the parser could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed scrape: every sample, in the order of the text.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample line.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses a whole exposition. Errors name the first line that is not a comment, blank, or a
    /// well-formed sample.
    pub fn parse(text: &str) -> Result<Exposition, ParseError> {
        let mut samples = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|message| ParseError {
                line: index + 1,
                message: format!("{message} in {line:?}"),
            })?;
            samples.push(sample);
        }
        Ok(Exposition { samples })
    }

    /// The value of the sample named `name` whose labels are exactly `labels` (in any order),
    /// `None` if there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`], but panics, listing the samples of that name, when there is no
    /// such sample: a missing series is a failed test, not a zero.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let same_name: Vec<String> = self
                .samples
                .iter()
                .filter(|s| s.name == name)
                .map(Sample::to_string)
                .collect();
            panic!("no sample {name} with labels {labels:?}; samples of that name: {same_name:#?}")
        })
    }

    /// Every sample named `name`, whatever its labels.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// `GET {base_url}/api/metrics`: asserts a 200 in the text format (`text/plain`) and parses it;
/// panics, with the text, if it does not parse.
pub async fn scrape(http: &reqwest::Client, base_url: &str) -> Exposition {
    let url = format!("{base_url}/api/metrics");
    let response = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: no answer: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "GET {url}: {text}");
    assert!(
        content_type.starts_with("text/plain"),
        "GET {url}: Content-Type {content_type:?}"
    );
    Exposition::parse(&text).unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"))
}

/// One sample line, already trimmed.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value)?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The labels after `{`, up to and including `}`; returns what follows the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest.find('=').ok_or("a label without `=`")?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without `\"`")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} given twice"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by `,`".into());
        }
    }
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tcc_rm_branch_requests_total Branch requests.
# TYPE tcc_rm_branch_requests_total counter
tcc_rm_branch_requests_total{op="try",outcome="applied"} 3
tcc_rm_branch_requests_total{op="try",outcome="applied_twice"} 7
tcc_rm_branch_requests_total{outcome="duplicate",op="confirm",} 1

tcc_rm_tentative_reservations 2
tcc_rm_tentative_oldest_age_seconds NaN
tcc_ap_fire_duration_seconds_bucket{scenario="fireTcc",le="+Inf"} 4
weird{v="a \"quoted\\ \n value, with {braces}"} -1.5e-3 1700000000000
"#;

    #[test]
    fn samples_are_found_by_name_and_exact_labels_only() {
        let m = Exposition::parse(TEXT).unwrap();
        let requests = "tcc_rm_branch_requests_total";
        assert_eq!(
            m.get(requests, &[("op", "try"), ("outcome", "applied")]),
            Some(3.0)
        );
        assert_eq!(
            m.get(requests, &[("outcome", "duplicate"), ("op", "confirm")]),
            Some(1.0)
        );
        assert_eq!(m.get(requests, &[("op", "try")]), None);
        assert_eq!(m.get(requests, &[]), None);
        assert_eq!(m.get("tcc_rm_branch_requests", &[]), None);
        assert_eq!(m.value("tcc_rm_tentative_reservations", &[]), 2.0);
        assert!(m.value("tcc_rm_tentative_oldest_age_seconds", &[]).is_nan());
        assert_eq!(
            m.value(
                "tcc_ap_fire_duration_seconds_bucket",
                &[("scenario", "fireTcc"), ("le", "+Inf")]
            ),
            4.0
        );
        assert_eq!(
            m.value("weird", &[("v", "a \"quoted\\ \n value, with {braces}")]),
            -0.0015
        );
        assert_eq!(m.series(requests).count(), 3);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, line) in [
            ("ok 1\nno_value{a=\"b\"}\n", 2),
            ("x{a=b} 1", 1),
            ("x{a=\"b\" c=\"d\"} 1", 1),
            ("x{a=\"b} 1", 1),
            ("x 1 2 3", 1),
            ("x one", 1),
            ("{a=\"b\"} 1", 1),
            ("x{a=\"1\",a=\"2\"} 1", 1),
        ] {
            let err = Exposition::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }

    #[test]
    #[should_panic(expected = "no sample x with labels")]
    fn a_missing_series_is_a_panic_not_a_zero() {
        Exposition::parse("x{a=\"b\"} 0").unwrap().value("x", &[]);
    }
}
