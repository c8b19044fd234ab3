//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// netmachine: a node of the Anoma Networking Machine.
#[derive(Debug, Parser)]
#[command(name = "netmachine", version)]
pub struct Cli {
    /// The node's TOML configuration; without it, built-in defaults apply.
    #[arg(long, short, global = true, env = "NETMACHINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the key and the identity records live (overrides the config).
    #[arg(long, global = true, env = "NETMACHINE_HOME")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Makes the node key (mode 0600) in the data directory.
    Keygen {
        /// Write the key here instead of <data-dir>/node.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Replace an existing key. The node's old identity is lost.
        #[arg(long)]
        force: bool,
    },
    /// Prints this node's signed advert, the text another node's config
    /// takes to know this one.
    Advert,
    /// Runs the node until Ctrl-C or SIGTERM. On first start it makes a key.
    Run,
}
