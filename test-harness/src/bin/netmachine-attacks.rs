//! Runs the hostile peer's attacks (`netmachine_harness::attacks`) against
//! real `netmachine run` processes and prints what each cost the victim.
//!
//! ```text
//! cargo build -p netmachine-node
//! cargo run -p netmachine-harness --bin netmachine-attacks            # all six
//! NETMACHINE_BIN=/path/to/netmachine cargo run -p netmachine-harness \
//!     --bin netmachine-attacks -- --no-limits frame-lengths           # another binary
//! ```
//!
//! `--no-limits` leaves out the `[limits]` table the tests write (shorter
//! deadlines, a smaller peer table), for a binary that predates it.

use clap::Parser;
use netmachine_harness::attacks::{run, Outcome, ATTACKS};

#[derive(Parser, Debug)]
#[command(about = "Drives each attack of a hostile peer against a real node and prints what it cost")]
struct Args {
    /// Do not write the [limits] table into the victim's configuration.
    #[arg(long)]
    no_limits: bool,
    /// The attacks to run (all when none are named).
    attacks: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let names: Vec<String> =
        if args.attacks.is_empty() { ATTACKS.iter().map(|a| a.to_string()).collect() } else { args.attacks };
    println!("| attack | resource | spent | honest during | honest after | attacker stopped | other figures |");
    println!("|---|---|---|---|---|---|---|");
    for name in names {
        match runtime.block_on(run(&name, !args.no_limits)) {
            Some(outcome) => println!("{}", row(&outcome)),
            None => {
                eprintln!("no attack named {name}; the attacks are {}", ATTACKS.join(", "));
                std::process::exit(2);
            }
        }
    }
}

fn row(o: &Outcome) -> String {
    let verdict = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(e) => format!("no ({e})"),
    };
    let notes: Vec<String> = o.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "| {} | {} | {} {} | {} | {} | {} | {} |",
        o.attack,
        o.resource,
        o.spent,
        o.unit,
        verdict(&o.honest_during),
        verdict(&o.honest_after),
        if o.attacker_stopped { "yes" } else { "no" },
        notes.join(", ")
    )
}
