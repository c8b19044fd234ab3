//! What each subcommand does.

use std::path::{Path, PathBuf};

use netmachine_adapters::control::{encode_body, ControlClient, ControlError, ControlRequest, ControlResponse};
use netmachine_adapters::keyfile::{read_key, read_or_create_key, write_new_key};
use netmachine_adapters::runtime::Node;
use netmachine_adapters::text_forms::node_advert_to_text;
use netmachine_domain::Trust;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, DomainCommand, JoinPolicyArg};
use crate::config::{Config, ConfigError};
use crate::host::{Host, HostError};
use crate::output;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    KeyFile(#[from] netmachine_adapters::keyfile::KeyFileError),
    #[error(transparent)]
    Node(#[from] netmachine_adapters::runtime::NodeError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for stop signals: {0}")]
    Signal(std::io::Error),
    #[error("invalid log filter {filter:?}: {reason}")]
    LogFilter { filter: String, reason: String },
    #[error("cannot encode the advert: {0}")]
    Codec(#[from] netmachine_adapters::codec::CodecError),
    #[error("cannot read the body file {path}: {source}")]
    BodyFile { path: PathBuf, source: std::io::Error },
    #[error("the body file {path} is {len} bytes; a message body is at most {max}")]
    BodyTooLarge { path: PathBuf, len: u64, max: usize },
    #[error("the node answered: {0}")]
    Refused(String),
    #[error("message {id} to {dst} was not delivered: {reason}")]
    NotDelivered { id: u64, dst: String, reason: String },
    #[error(transparent)]
    Devnet(#[from] crate::devnet::DevnetError),
}

pub fn run(cli: Cli) -> Result<(), CommandError> {
    let config_file =
        cli.config.or_else(|| std::env::var_os("NETMACHINE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
    let mut config = match &config_file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = cli.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(control) = cli.control {
        config.control_socket = Some(control);
    }
    let json = cli.json;
    // Commands that talk to a running node find it by $NETMACHINE_CONTROL
    // when neither the flag nor the config names a socket; `run` never
    // reads it, so a variable exported for the commands cannot move the
    // socket a node serves.
    let client = config.clone().with_control_from_env();
    match cli.command {
        Command::Keygen { key, force } => keygen(&config, key.as_deref(), force),
        Command::Advert => advert(&config),
        Command::Run => run_node(&config),
        Command::Devnet { nodes, domains, protocol, duration, dir } => {
            install_logging(&Config {
                log: Some(config.log.clone().unwrap_or_else(|| "warn".into())),
                ..config.clone()
            })?;
            runtime()?.block_on(crate::devnet::run(nodes, domains, protocol, duration, dir, json))?;
            Ok(())
        }
        Command::Peers => one_call(&client, ControlRequest::Peers, json),
        Command::Status => one_call(&client, ControlRequest::Status, json),
        Command::Send { to, body, ttl_ms, sign, no_wait } => {
            let body = encode_body(&read_body(&body)?);
            one_call(&client, ControlRequest::Send { to, body, ttl_ms, sign, wait: !no_wait }, json)
        }
        Command::Publish { topic, body } => {
            let body = encode_body(&read_body(&body)?);
            one_call(&client, ControlRequest::Publish { topic, body }, json)
        }
        Command::CreateTopic { tags } => one_call(&client, ControlRequest::CreateTopic { tags }, json),
        Command::AddPeer { advert } => one_call(&client, ControlRequest::AddPeer { advert }, json),
        Command::RemovePeer { node } => one_call(&client, ControlRequest::RemovePeer { node }, json),
        Command::Trust { node, level } => one_call(&client, ControlRequest::SetTrust { node, trust: level }, json),
        Command::Ban { node } => one_call(&client, ControlRequest::SetTrust { node, trust: Trust::BANNED.0 }, json),
        Command::Unban { node } => one_call(&client, ControlRequest::SetTrust { node, trust: Trust::DEFAULT.0 }, json),
        Command::Unsubscribe { topic } => one_call(&client, ControlRequest::Unsubscribe { topic }, json),
        Command::Subscribe { topic } => stream(&client, ControlRequest::Subscribe { topic }, json),
        Command::Inbox => stream(&client, ControlRequest::Inbox, json),
        Command::Domain(command) => one_call(&client, domain_request(command)?, json),
    }
}

/// Reads a small file whole: a pre-shared key, advert text.
fn read_small(path: &Path) -> Result<Vec<u8>, CommandError> {
    let len =
        std::fs::metadata(path).map_err(|source| CommandError::BodyFile { path: path.to_path_buf(), source })?.len();
    let max = 64 * 1024;
    if len > max as u64 {
        return Err(CommandError::BodyTooLarge { path: path.to_path_buf(), len, max });
    }
    std::fs::read(path).map_err(|source| CommandError::BodyFile { path: path.to_path_buf(), source })
}

/// Text, or the text of the file named after `@`.
fn text_arg(arg: &str) -> Result<String, CommandError> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(String::from_utf8_lossy(&read_small(Path::new(path))?).trim().to_string()),
        None => Ok(arg.to_string()),
    }
}

fn domain_request(command: DomainCommand) -> Result<ControlRequest, CommandError> {
    let psk = |file: Option<PathBuf>| -> Result<Option<String>, CommandError> {
        file.map(|f| read_small(&f).map(|bytes| encode_body(&bytes))).transpose()
    };
    Ok(match command {
        DomainCommand::Create { policy, psk_file, allow, cert_ttl, full_mesh } => {
            let policy = match policy {
                JoinPolicyArg::Open => "open",
                JoinPolicyArg::Psk => "psk",
                JoinPolicyArg::AllowList => "allow-list",
                JoinPolicyArg::Owner => "owner",
            };
            ControlRequest::DomainCreate {
                policy: policy.into(),
                psk: psk(psk_file)?,
                allow,
                cert_ttl_s: cert_ttl,
                full_mesh,
            }
        }
        DomainCommand::Advert { domain } => ControlRequest::DomainAdvert { domain },
        DomainCommand::Join { advert, psk_file, via } => {
            ControlRequest::DomainJoin { advert: text_arg(&advert)?, psk: psk(psk_file)?, via }
        }
        DomainCommand::Leave { domain } => ControlRequest::DomainLeave { domain },
        DomainCommand::Approve { domain, node, deny } => ControlRequest::DomainApprove { domain, node, accept: !deny },
        DomainCommand::Revoke { domain, node } => ControlRequest::DomainRevoke { domain, node },
        DomainCommand::List => ControlRequest::DomainList,
        DomainCommand::View { domain } => ControlRequest::DomainView { domain },
        DomainCommand::Request { domain, protocol, body } => ControlRequest::DomainRequest {
            domain: text_arg(&domain)?,
            protocol,
            body: encode_body(&read_body(&body)?),
        },
    })
}

/// `text`, or the bytes of the file named after `@`.
fn read_body(arg: &str) -> Result<Vec<u8>, CommandError> {
    let Some(path) = arg.strip_prefix('@') else { return Ok(arg.as_bytes().to_vec()) };
    let path = PathBuf::from(path);
    let max = netmachine_domain::limits::MAX_BODY_BYTES;
    let len = std::fs::metadata(&path).map_err(|source| CommandError::BodyFile { path: path.clone(), source })?.len();
    if len > max as u64 {
        return Err(CommandError::BodyTooLarge { path, len, max });
    }
    std::fs::read(&path).map_err(|source| CommandError::BodyFile { path, source })
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

pub fn install_logging(config: &Config) -> Result<(), CommandError> {
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
        let mut stop = crate::signals::StopSignals::listen().map_err(CommandError::Signal)?;
        // A stop asked for while the node starts ends the start.
        let host = tokio::select! {
            host = Host::start(config, keys, Some(data_dir.clone())) => host?,
            stopped = stop.recv() => {
                stopped.map_err(CommandError::Signal)?;
                tracing::info!("stopped while starting");
                return Ok(());
            }
        };
        let node = &host.networked.node;
        tracing::info!(
            node = %node.identity(),
            data_dir = %data_dir.display(),
            control = %host.control_socket.display(),
            "node running; Ctrl-C or SIGTERM stops it"
        );
        if let Some(advert) = node.advert() {
            let addresses: Vec<String> = advert.addrs.iter().map(|a| a.address.to_string()).collect();
            tracing::info!(addresses = %addresses.join(" "), "listening");
            tracing::info!(advert = %node_advert_to_text(&advert)?, "this node's advert");
        }
        stop.recv().await.map_err(CommandError::Signal)?;
        tracing::info!("stopping");
        host.shutdown().await;
        Ok(())
    })
}

fn one_call(config: &Config, request: ControlRequest, json: bool) -> Result<(), CommandError> {
    let socket = config.control_socket();
    runtime()?.block_on(async {
        let response = ControlClient::call(&socket, &request).await?;
        output::print(&response, json);
        match response {
            ControlResponse::Error { message } => Err(CommandError::Refused(message)),
            ControlResponse::Undeliverable { id, dst, reason } => Err(CommandError::NotDelivered { id, dst, reason }),
            ControlResponse::Pending { id, dst, waited_ms } => Err(CommandError::NotDelivered {
                id,
                dst,
                reason: format!("no outcome within {waited_ms} ms; it stays queued"),
            }),
            _ => Ok(()),
        }
    })
}

fn stream(config: &Config, request: ControlRequest, json: bool) -> Result<(), CommandError> {
    let socket = config.control_socket();
    runtime()?.block_on(async {
        let mut stop = crate::signals::StopSignals::listen().map_err(CommandError::Signal)?;
        let mut client = ControlClient::connect(&socket).await?;
        client.send(&request).await?;
        loop {
            let response = tokio::select! {
                response = client.next() => response,
                _ = stop.recv() => return Ok(()),
            };
            let response = match response {
                Ok(response) => response,
                Err(ControlError::Closed) => return Ok(()),
                Err(err) => return Err(err.into()),
            };
            output::print(&response, json);
            if let ControlResponse::Error { message } = response {
                return Err(CommandError::Refused(message));
            }
        }
    })
}
