//! The Prometheus text exposition format (version 0.0.4), by hand: a
//! family is its `# HELP` and `# TYPE` lines followed by all its samples;
//! a histogram's samples are cumulative `_bucket{le=…}` lines ending with
//! `le="+Inf"`, then `_sum` and `_count`.

use std::fmt::Write;

/// The `Content-Type` of what [`Text`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A histogram as read at one moment: per-bucket counts (not cumulative)
/// for each upper bound, plus the observations above the last bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// One more than `bounds`: the last entry counts what no bound holds.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn empty(bounds: &'static [f64]) -> HistogramSnapshot {
        HistogramSnapshot { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another worker's histogram with the same bounds.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

/// A number as Prometheus reads it: Go's float syntax, `+Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust never writes an exponent here, and writes `1` for `1.0`.
        format!("{value}")
    }
}

fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes families one after the other into a string.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Starts a family; its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    fn labels(&mut self, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        if labels.is_empty() && extra.is_none() {
            return;
        }
        self.out.push('{');
        for (i, (name, value)) in labels.iter().chain(extra.as_ref()).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_label(value, &mut self.out);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample of the current family: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// A counter or gauge family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram series of the current family.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, bound) in histogram.bounds.iter().enumerate() {
            cumulative += histogram.counts.get(i).copied().unwrap_or(0);
            self.out.push_str(&bucket);
            self.labels(labels, Some(("le", &number(*bound))));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let count = histogram.count();
        self.out.push_str(&bucket);
        self.labels(labels, Some(("le", "+Inf")));
        let _ = writeln!(self.out, " {count}");
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_family_has_help_type_and_samples() {
        let mut text = Text::new();
        text.family("vigil_decisions_total", Kind::Counter, "Decisions committed, by decision.");
        text.sample("vigil_decisions_total", &[("decision", "allow")], 12.0);
        text.sample("vigil_decisions_total", &[("decision", "step_up")], 0.0);
        assert_eq!(
            text.finish(),
            "# HELP vigil_decisions_total Decisions committed, by decision.\n\
             # TYPE vigil_decisions_total counter\n\
             vigil_decisions_total{decision=\"allow\"} 12\n\
             vigil_decisions_total{decision=\"step_up\"} 0\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut text = Text::new();
        text.family("x", Kind::Gauge, "a \\ b\nc");
        text.sample("x", &[("rule", "say \"hi\"\\\n")], -1.5);
        assert_eq!(text.finish(), "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{rule=\"say \\\"hi\\\"\\\\\\n\"} -1.5\n");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_sum_and_count() {
        static BOUNDS: [f64; 3] = [0.000001, 0.5, 1.0];
        let snapshot = HistogramSnapshot { bounds: &BOUNDS, counts: vec![2, 0, 3, 1], sum: 4.25 };
        let mut text = Text::new();
        text.family("vigil_rule_eval_seconds", Kind::Histogram, "Rule evaluation time per event.");
        text.histogram("vigil_rule_eval_seconds", &[], &snapshot);
        assert_eq!(
            text.finish(),
            "# HELP vigil_rule_eval_seconds Rule evaluation time per event.\n\
             # TYPE vigil_rule_eval_seconds histogram\n\
             vigil_rule_eval_seconds_bucket{le=\"0.000001\"} 2\n\
             vigil_rule_eval_seconds_bucket{le=\"0.5\"} 2\n\
             vigil_rule_eval_seconds_bucket{le=\"1\"} 5\n\
             vigil_rule_eval_seconds_bucket{le=\"+Inf\"} 6\n\
             vigil_rule_eval_seconds_sum 4.25\n\
             vigil_rule_eval_seconds_count 6\n"
        );
    }

    #[test]
    fn histogram_labels_come_before_le() {
        static BOUNDS: [f64; 1] = [0.25];
        let mut text = Text::new();
        text.histogram("h", &[("worker", "0")], &HistogramSnapshot::empty(&BOUNDS));
        let out = text.finish();
        assert!(out.starts_with("h_bucket{worker=\"0\",le=\"0.25\"} 0\nh_bucket{worker=\"0\",le=\"+Inf\"} 0\n"), "{out}");
        assert!(out.ends_with("h_sum{worker=\"0\"} 0\nh_count{worker=\"0\"} 0\n"), "{out}");
    }

    #[test]
    fn special_numbers_use_prometheus_spelling() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.0025), "0.0025");
        assert_eq!(number(30.0), "30");
    }
}
