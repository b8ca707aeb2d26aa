//! A TCP relay in front of PostgreSQL that tests can take down and bring back, so a worker or
//! the proxy sees what a database server restart looks like from the client side: open
//! connections are cut and new ones are refused (connection refused, not an SQL error) until
//! the relay is up again on the same port. The shared test server itself is never restarted.
//!
//! It is also the failover tests' fault proxy: existing connections can be frozen silently
//! while new ones hang ([`Relay::freeze`]) and then go to the server again
//! ([`Relay::thaw_new`]) while the frozen ones stay open and silent, as when a primary dies
//! without a reset and a standby takes its address. The address can be moved to another
//! server ([`Relay::point`]) with the open connections left where they are, or cut
//! ([`Relay::cut`]), as a virtual IP or a Kubernetes Service moving does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A relay from a local port to `target`.
pub struct Relay {
    pub addr: SocketAddr,
    /// Where new connections go.
    target: Arc<Mutex<SocketAddr>>,
    /// Cancelled to end the connections open now (the relay stays up); replaced by it.
    open: Arc<Mutex<CancellationToken>>,
    /// Cancelled to take the relay down; replaced when it comes back up.
    up: Mutex<Option<CancellationToken>>,
    /// Cancelled to stop forwarding without closing anything (a network partition); replaced
    /// by [`Relay::thaw_new`] so that connections made after it forward again.
    frozen: Arc<Mutex<CancellationToken>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    /// Starts a relay to `target` (for example `127.0.0.1:5432`) on a free local port.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Relay {
            addr: listener.local_addr()?,
            target: Arc::new(Mutex::new(target)),
            open: Default::default(),
            up: Mutex::new(None),
            frozen: Default::default(),
            connections: Default::default(),
        };
        relay.serve(listener);
        Ok(relay)
    }

    /// A relay in front of the test PostgreSQL server, and `url` rewritten to go through it.
    pub async fn for_postgres(url: &str) -> anyhow::Result<(Relay, String)> {
        let parsed = reqwest::Url::parse(url)?;
        let host = parsed.host_str().unwrap_or("127.0.0.1");
        let port = parsed.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        let relay = Relay::start(target).await?;
        let mut through = parsed.clone();
        through
            .set_host(Some("127.0.0.1"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        through
            .set_port(Some(relay.addr.port()))
            .map_err(|()| anyhow::anyhow!("cannot set the port of {url}"))?;
        Ok((relay, through.to_string()))
    }

    /// How many connections the relay has accepted so far.
    pub fn accepted(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// New connections go to `target` from now on; open ones stay where they are.
    pub fn point(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Where new connections go.
    pub fn target(&self) -> SocketAddr {
        *self.target.lock().unwrap()
    }

    /// Ends every open connection (both sides see it closed); new ones are accepted.
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        open.cancel();
        *open = CancellationToken::new();
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        if let Some(up) = self.up.lock().unwrap().take() {
            up.cancel();
        }
    }

    /// Stops forwarding bytes either way while every connection stays open, as when the
    /// network between the two sides fails silently: nothing is refused or reset, nothing
    /// arrives. Until [`Relay::down`].
    pub fn freeze(&self) {
        self.frozen.lock().unwrap().cancel();
    }

    /// After [`Relay::freeze`]: connections made from now on forward again, while the frozen
    /// ones stay open and silent until [`Relay::down`].
    pub fn thaw_new(&self) {
        *self.frozen.lock().unwrap() = CancellationToken::new();
    }

    /// Accepts connections again on the same port.
    pub async fn up(&self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.up.lock().unwrap() = Some(token.clone());
        let (target, connections) = (self.target.clone(), self.connections.clone());
        let (frozen, open) = (self.frozen.clone(), self.open.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return, // drops the listener: refused from now on
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let frozen = frozen.lock().unwrap().clone();
                let to = *target.lock().unwrap();
                let cut = open.lock().unwrap().clone();
                tokio::spawn(pipe(client, to, token.clone(), frozen, cut));
            }
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

/// Copies bytes both ways until either side closes or the relay goes down; when frozen, holds
/// both sockets open without copying until the relay goes down.
async fn pipe(
    mut client: TcpStream,
    target: SocketAddr,
    down: CancellationToken,
    frozen: CancellationToken,
    cut: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = down.cancelled() => {}
        _ = cut.cancelled() => {}
        _ = frozen.cancelled() => tokio::select! {
            _ = down.cancelled() => {}
            _ = cut.cancelled() => {}
        },
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
    drop((client, server));
}
