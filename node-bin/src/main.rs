//! `netmachine`: run a node, make its key, print its advert.

mod cli;
mod commands;
mod config;
mod control_server;
mod devnet;
mod domain_control;
mod host;
mod inbox;
mod output;
mod signals;
mod streams;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netmachine: {err}");
            ExitCode::FAILURE
        }
    }
}
