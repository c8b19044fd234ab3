//! What each subcommand does.

use std::path::Path;

use netmachine_adapters::keyfile::{read_key, read_or_create_key, write_new_key};
use netmachine_adapters::runtime::Node;
use netmachine_adapters::text_forms::node_advert_to_text;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    KeyFile(#[from] netmachine_adapters::keyfile::KeyFileError),
    #[error(transparent)]
    Node(#[from] netmachine_adapters::runtime::NodeError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for stop signals: {0}")]
    Signal(std::io::Error),
    #[error("invalid log filter {filter:?}: {reason}")]
    LogFilter { filter: String, reason: String },
    #[error("cannot encode the advert: {0}")]
    Codec(#[from] netmachine_engines::ports::CodecError),
}

pub fn run(cli: Cli) -> Result<(), CommandError> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = cli.data_dir {
        config.data_dir = Some(dir);
    }
    match cli.command {
        Command::Keygen { key, force } => keygen(&config, key.as_deref(), force),
        Command::Advert => advert(&config),
        Command::Run => run_node(&config),
    }
}

fn keygen(config: &Config, key: Option<&Path>, force: bool) -> Result<(), CommandError> {
    let path = key.map_or_else(|| config.key_file(), Path::to_path_buf);
    let keys = write_new_key(&path, force)?;
    println!("{}", keys.node_identity());
    eprintln!("wrote the node key to {}", path.display());
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(CommandError::Runtime)
}

fn advert(config: &Config) -> Result<(), CommandError> {
    let keys = read_key(&config.key_file())?;
    runtime()?.block_on(async {
        // A node without a data directory of its own is enough to sign;
        // the version is taken from the clock, so it rises on every call.
        let node =
            Node::builder().keys(keys).advertise(config.name.clone(), config.advertised_addresses()).start().await?;
        if let Some(advert) = node.advert() {
            println!("{}", node_advert_to_text(&advert)?);
        }
        node.shutdown().await;
        Ok(())
    })
}

fn install_logging(config: &Config) -> Result<(), CommandError> {
    let filter = match (&config.log, std::env::var("RUST_LOG")) {
        (_, Ok(from_env)) if !from_env.is_empty() => from_env,
        (Some(filter), _) => filter.clone(),
        _ => "info".to_string(),
    };
    let env_filter = EnvFilter::try_new(&filter)
        .map_err(|e| CommandError::LogFilter { filter: filter.clone(), reason: e.to_string() })?;
    // A second install (tests running several nodes) keeps the first one.
    let _ = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).try_init();
    Ok(())
}

fn run_node(config: &Config) -> Result<(), CommandError> {
    install_logging(config)?;
    let data_dir = config.data_dir();
    let (keys, created) = read_or_create_key(&config.key_file())?;
    if created {
        tracing::info!(key = %config.key_file().display(), "made a new node key");
    }
    runtime()?.block_on(async {
        let node = Node::builder()
            .keys(keys)
            .data_dir(&data_dir)
            .mailbox_capacity(config.mailbox_capacity())
            .advertise(config.name.clone(), config.advertised_addresses())
            .start()
            .await?;
        tracing::info!(node = %node.identity(), data_dir = %data_dir.display(), "node running; Ctrl-C or SIGTERM stops it");
        if let Some(advert) = node.advert() {
            tracing::info!(advert = %node_advert_to_text(&advert)?, "this node's advert");
        }
        wait_for_stop_signal().await?;
        tracing::info!("stopping");
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_stop_signal() -> Result<(), CommandError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(CommandError::Signal)?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(CommandError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(CommandError::Signal)
    }
}
