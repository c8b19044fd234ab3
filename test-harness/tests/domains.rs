//! The domain scenario in small: members join through their approvers
//! with the real domain and topology engines, a share of them crash, and
//! HyParView's reactive repair reconnects every survivor where the
//! baseline that repairs only at its period has not yet.

use netmachine_harness::sim::domain_runs::{run_matrix, DomainRow};
use netmachine_harness::sim::scenario::Scenario;

fn scenario(nodes: u32, fractions: &str, seeds: &str) -> Scenario {
    let text = format!(
        r#"
name = "domain-failure-small"
nodes = {nodes}
duration_s = 260
sample_ms = 5000
[link]
latency = {{ kind = "log_normal", median_ms = 40.0, sigma = 0.5 }}
jitter_ms = 5.0
[workload]
unicast_per_node_per_s = 0.0
quiet_tail_s = 0.0
[domain]
approvers = 4
join_spread_s = 20.0
shuffle_interval_s = 30.0
fail_at_s = 130.0
fail_fractions = {fractions}
seeds = {seeds}
broadcasts_after_s = [1.0, 60.0]
"#
    );
    Scenario::parse(&text, "inline").expect("a valid scenario")
}

fn rows(nodes: u32, fractions: &str, seeds: &str) -> Vec<DomainRow> {
    run_matrix(&scenario(nodes, fractions, seeds), |row| eprintln!("{row:?}"))
}

#[test]
fn every_member_joins_and_the_survivors_of_a_mass_failure_reconnect() {
    let rows = rows(200, "[0.5, 0.8]", "[3]");
    assert_eq!(rows.len(), 4, "two shares, each with both overlays");
    for row in &rows {
        let r = &row.result;
        assert_eq!(r.joined, 200, "every member holds a certificate and runs the overlay");
        assert!(r.connected_before >= 1.0, "one overlay before the failure: {}", r.connected_before);
        if r.repair == "reactive" {
            assert_eq!(
                row.connected_after_periods(2.0),
                1.0,
                "{:.0}% failed: survivors reconnected",
                r.fail_fraction * 100.0
            );
            assert_eq!(row.reached_at(60.0), 1.0, "a broadcast two periods on reaches every survivor");
        }
    }
}
