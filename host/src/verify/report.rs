//! The report of a `verify` run: a row per case, and the table `vapgen verify` prints.

use std::fmt::Write as _;

/// The result of one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The API server answered as the suite expects.
    Pass,
    /// It did not (or the case could not be checked because of an error).
    Fail,
    /// The case cannot run on a real API server (see the reason).
    Skip,
}

impl Verdict {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One row of the report: a case.
#[derive(Clone, Debug)]
pub struct CaseRow {
    /// The suite's `metadata.name` (else its file).
    pub suite: String,
    /// The test's name.
    pub test: String,
    /// The case's name.
    pub case: String,
    /// `deny`, `deny "<message>"` or `admit`.
    pub expected: String,
    /// `denied`, `admitted`, or `-` when the case did not get an answer.
    pub got: String,
    /// Pass, fail or skip.
    pub verdict: Verdict,
    /// Why it failed or was skipped (empty for a pass).
    pub reason: String,
}

/// The result of a `verify` run.
#[derive(Debug, Default)]
pub struct Report {
    /// The run's id: in the renamed kinds, the labels and the namespace `vapgen-verify-<run>`.
    pub run: String,
    /// Suite files read.
    pub suites: usize,
    /// One per case.
    pub rows: Vec<CaseRow>,
    /// Suite files that could not run, and objects that could not be deleted.
    pub errors: Vec<String>,
}

impl Report {
    fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(Verdict::Pass)
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }
    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.count(Verdict::Skip)
    }
    /// At least one case, no failure and no error.
    pub fn success(&self) -> bool {
        self.failed() == 0 && self.errors.is_empty() && !self.rows.is_empty()
    }

    /// The table (`SUITE TEST CASE EXPECTED GOT RESULT REASON`), the errors and a summary
    /// line `N passed, M failed, K skipped`.
    pub fn table(&self) -> String {
        let header = ["SUITE", "TEST", "CASE", "EXPECTED", "GOT", "RESULT"];
        let cells: Vec<[&str; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.suite.as_str(),
                    r.test.as_str(),
                    r.case.as_str(),
                    r.expected.as_str(),
                    r.got.as_str(),
                    r.verdict.as_str(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut s = String::new();
        let line = |s: &mut String, c: &[&str; 6], reason: &str| {
            for (w, cell) in width.iter().zip(c) {
                let _ = write!(s, "{cell:<w$}  ");
            }
            let _ = write!(s, "{reason}");
            let end = s.trim_end().len();
            s.truncate(end);
            s.push('\n');
        };
        line(&mut s, &header, "REASON");
        for (c, r) in cells.iter().zip(&self.rows) {
            line(&mut s, c, &r.reason);
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        let _ = writeln!(
            s,
            "run {}: {} suite(s): {} passed, {} failed, {} skipped",
            self.run,
            self.suites,
            self.passed(),
            self.failed(),
            self.skipped()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_case_and_counts() {
        let row = |case: &str, verdict| CaseRow {
            suite: "s".into(),
            test: "t".into(),
            case: case.into(),
            expected: "deny".into(),
            got: "denied".into(),
            verdict,
            reason: if verdict == Verdict::Fail {
                "why".into()
            } else {
                String::new()
            },
        };
        let r = Report {
            run: "r1".into(),
            suites: 1,
            rows: vec![
                row("a", Verdict::Pass),
                row("b", Verdict::Fail),
                row("c", Verdict::Skip),
            ],
            errors: Vec::new(),
        };
        let t = r.table();
        assert!(t.starts_with("SUITE"), "{t}");
        assert!(
            t.contains("b  ") && t.contains("FAIL") && t.contains("why"),
            "{t}"
        );
        assert!(
            t.ends_with("run r1: 1 suite(s): 1 passed, 1 failed, 1 skipped\n"),
            "{t}"
        );
        assert!(!r.success());
    }
}
