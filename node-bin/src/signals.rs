//! Listening for the signals that stop a node: Ctrl-C, and SIGTERM on Unix.
//!
//! The listeners are installed when [`StopSignals::listen`] returns, not when
//! it is first awaited: a node says it runs only after that, so a SIGTERM sent
//! on reading that line always finds a handler and stops the node cleanly.

/// Installed listeners for Ctrl-C and SIGTERM.
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the listeners now. Must run inside a tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Returns when Ctrl-C or SIGTERM arrives.
    pub async fn recv(&mut self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok(()),
                _ = self.terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    }
}
