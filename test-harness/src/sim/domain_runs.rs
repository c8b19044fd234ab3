//! Runs a domain scenario for every failing share and seed it names, each
//! with HyParView's reactive repair and with the baseline that repairs
//! only at its shuffle period, side by side in one run; and prints what
//! they measured.

use serde::{Deserialize, Serialize};

use super::metrics::DomainResults;
use super::plot::{line_chart, Series};
use super::scenario::{RepairMode, Scenario};
use super::Simulation;

/// One run of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRow {
    pub seed: u64,
    pub wall_s: f64,
    pub shuffle_interval_s: f64,
    pub result: DomainResults,
}

impl DomainRow {
    /// The share connected at the first measure at least `periods` shuffle
    /// periods after the failure.
    pub fn connected_after_periods(&self, periods: f64) -> f64 {
        let at = periods * self.shuffle_interval_s;
        self.result.connected.iter().find(|(t, _)| *t >= at).map_or(0.0, |(_, share)| *share)
    }

    pub fn reached_at(&self, after_s: f64) -> f64 {
        self.result.broadcasts.iter().find(|(t, _)| (*t - after_s).abs() < 1e-9).map_or(0.0, |(_, share)| *share)
    }
}

/// Runs every (share, seed, overlay) of `scenario`; `progress` hears of
/// each run done.
pub fn run_matrix(scenario: &Scenario, mut progress: impl FnMut(&DomainRow)) -> Vec<DomainRow> {
    let Some(spec) = scenario.domain.clone() else { return Vec::new() };
    let mut rows = Vec::new();
    for &fraction in &spec.fail_fractions {
        for &seed in &spec.seeds {
            for repair in [RepairMode::Reactive, RepairMode::Periodic] {
                let mut run = scenario.clone();
                run.seed = seed;
                if let Some(domain) = run.domain.as_mut() {
                    domain.repair = repair;
                    domain.fail_fraction = fraction;
                }
                let results = Simulation::new(run).run(|_| {});
                let row = DomainRow {
                    seed,
                    wall_s: results.wall_s,
                    shuffle_interval_s: spec.shuffle_interval_s,
                    result: results.domain.unwrap_or_default(),
                };
                progress(&row);
                rows.push(row);
            }
        }
    }
    rows
}

/// The table's header, in Markdown.
pub fn table_header(broadcasts: &[f64]) -> String {
    let mut head = String::from(
        "| overlay | members | failed | seed | survivors | connected before | at failure | 1 period | 2 periods | 5 periods | all connected after |",
    );
    let mut rule = String::from("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for b in broadcasts {
        head.push_str(&format!(" reached, sent {b} s after |"));
        rule.push_str("---:|");
    }
    head.push_str(" messages / survivor | neighbour requests / survivor | dials / survivor | wall s |");
    rule.push_str("---:|---:|---:|---:|");
    format!("{head}\n{rule}")
}

fn pct(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

pub fn table_row(row: &DomainRow) -> String {
    let r = &row.result;
    let name = if r.repair == "reactive" { "HyParView" } else { "baseline (periodic only)" };
    let mut line = format!(
        "| {name} | {} | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.members,
        r.fail_fraction * 100.0,
        row.seed,
        r.survivors,
        pct(r.connected_before),
        pct(r.connected.first().map_or(0.0, |(_, s)| *s)),
        pct(row.connected_after_periods(1.0)),
        pct(row.connected_after_periods(2.0)),
        pct(row.connected_after_periods(5.0)),
        r.all_connected_after_s.map_or("never".into(), |s| format!("{s:.0} s")),
    );
    for (_, share) in &r.broadcasts {
        line.push_str(&format!(" {} |", pct(*share)));
    }
    line.push_str(&format!(
        " {:.1} | {:.2} | {:.2} | {:.1} |",
        r.topology_messages_per_survivor, r.neighbor_requests_per_survivor, r.dials_per_survivor, row.wall_s
    ));
    line
}

/// One chart per failing share: the largest component over time, for the
/// first seed, both overlays.
pub fn write_plots(out: &std::path::Path, rows: &[DomainRow]) -> std::io::Result<()> {
    let mut fractions: Vec<f64> = rows.iter().map(|r| r.result.fail_fraction).collect();
    fractions.dedup();
    for fraction in fractions {
        let first_seed = rows.iter().find(|r| r.result.fail_fraction == fraction).map(|r| r.seed);
        let series: Vec<Series<'_>> = rows
            .iter()
            .filter(|r| r.result.fail_fraction == fraction && Some(r.seed) == first_seed)
            .map(|r| Series {
                name: if r.result.repair == "reactive" { "HyParView" } else { "baseline (periodic only)" },
                points: r.result.connected.clone(),
            })
            .collect();
        let title = format!("Survivors in the largest component, {:.0}% failed", fraction * 100.0);
        let chart = line_chart(&title, "seconds after the failure", "share of survivors", &series, false);
        std::fs::write(out.join(format!("connected-{:.0}.svg", fraction * 100.0)), chart)?;
    }
    Ok(())
}
