//! The tolerance helper of the accuracy tests (`tests/accuracy.rs`,
//! `tests/backward_accuracy.rs`): every asserted error goes through [`Tally::check`].

use std::cmp::Ordering;

/// Measured errors of one quantity in one scenario, and the worst violation of its tolerance.
pub struct Tally {
    pub label: String,
    /// `"units"` (forward, backward) or `"ulps"` (moments), for messages.
    pub unit: &'static str,
    /// Rows measured, where the caller counts them on the tally (`tests/accuracy.rs`;
    /// `tests/backward_accuracy.rs` counts them per scenario and leaves this 0).
    pub rows: usize,
    pub values: usize,
    pub max: f64,
    pub sum: f64,
    pub failures: usize,
    /// `(units / tol, description with the failing row)`.
    pub worst: Option<(f64, String)>,
}

impl Tally {
    pub fn new(label: impl Into<String>) -> Tally {
        Tally {
            label: label.into(),
            unit: "units",
            rows: 0,
            values: 0,
            max: 0.0,
            sum: 0.0,
            failures: 0,
            worst: None,
        }
    }

    /// A tally of moment errors, in ulps of the exact value.
    pub fn ulps(label: impl Into<String>) -> Tally {
        Tally {
            unit: "ulps",
            ..Tally::new(label)
        }
    }

    /// The one tolerance check of the accuracy tests: the error `units` must be `<= tol` (units
    /// as in the module doc of the test; `tol = f64::INFINITY` only records it). `detail`
    /// describes the value and its row, for the failure message.
    pub fn check(&mut self, units: f64, tol: f64, detail: impl FnOnce() -> String) {
        self.values += 1;
        self.sum += units;
        self.max = self.max.max(units);
        let within = matches!(
            units.partial_cmp(&tol),
            Some(Ordering::Less | Ordering::Equal)
        );
        if !within {
            self.failures += 1;
            let excess = units / tol;
            let worse = match &self.worst {
                Some((w, _)) => excess > *w,
                None => true,
            };
            if worse {
                self.worst = Some((
                    excess,
                    format!(
                        "error {units} {} > tolerance {tol}: {}",
                        self.unit,
                        detail()
                    ),
                ));
            }
        }
    }

    /// `label: N rows, M values, max …, mean …, K over tolerance`, without the rows where they
    /// are not counted on the tally.
    pub fn summary(&self) -> String {
        let rows = if self.rows > 0 {
            format!("{} rows, ", self.rows)
        } else {
            String::new()
        };
        format!(
            "{}: {rows}{} values, max {:.4} {unit}, mean {:.4} {unit}, {} over tolerance",
            self.label,
            self.values,
            self.max,
            self.sum / self.values.max(1) as f64,
            self.failures,
            unit = self.unit,
        )
    }
}

/// Prints the summary of every tally and panics with the worst failing value of each failing
/// one.
pub fn assert_tallies<'a>(tallies: impl IntoIterator<Item = &'a Tally>) {
    assert_tallies_noted(tallies.into_iter().map(|t| (t, String::new())));
}

/// [`assert_tallies`] with a note printed after each summary.
pub fn assert_tallies_noted<'a>(tallies: impl IntoIterator<Item = (&'a Tally, String)>) {
    let mut failed = Vec::new();
    for (t, note) in tallies {
        println!("{}{note}", t.summary());
        if let Some((_, worst)) = &t.worst {
            failed.push(format!("{}\n  worst: {worst}", t.summary()));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}
