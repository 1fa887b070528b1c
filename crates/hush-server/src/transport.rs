//! Accepting connections: TCP, then a TLS 1.3 handshake with a deadline, then a
//! [`session`](crate::session) per connection. Graceful shutdown stops accepting, tells
//! every session, and waits (bounded) for them to close.
use std::future::Future;
use std::sync::Arc;

use std::net::SocketAddr;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::{ServerState, session};

/// Binds the listening socket (port 0 picks a free port; see `local_addr`).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves connections on `listener` until `shutdown` completes. Takes a bound listener
/// so callers (and tests) choose the address, including port 0.
/// Ends the open sessions of devices that are no longer valid, however that came about
/// (`hushd user disable|delete` from another process, a revoke on another node, a
/// logout): each connected device is checked against the store every
/// `session_recheck`.
async fn recheck_sessions(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.limits.session_recheck);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        state.reserve.recheck();
        let connected = state.hub.connected_devices();
        if connected.is_empty() {
            continue;
        }
        for chunk in connected.chunks(500) {
            match state.store.live_devices(chunk).await {
                Ok(live) => {
                    for d in chunk.iter().filter(|d| !live.contains(d)) {
                        tracing::info!(device = %d, "ending the sessions of a device no longer valid");
                        state.hub.revoke(*d);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not recheck sessions"),
            }
        }
    }
}

/// Retention (P453), every `prune_interval` from start.
async fn prune_periodically(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.limits.prune_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = prune_once(&state).await {
            tracing::warn!(error = %e, "retention pass failed; trying again next time");
        }
    }
}

/// One retention pass at the clock's current time: expires undelivered messages older
/// than `retention` and idempotency records older than `idempotency_window` (P453).
pub async fn prune_once(state: &ServerState) -> Result<hush_store::Pruned, hush_store::StoreError> {
    let now = state.clock.now_ms();
    let limits = &state.config.limits;
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let pruned = state
        .store
        .prune(
            now.saturating_sub(ms(limits.retention)),
            now.saturating_sub(ms(limits.idempotency_window)),
        )
        .await?;
    let files = crate::files::expire(state).await?;
    if files > 0 {
        tracing::info!(files, "retention pass deleted files");
    }
    if pruned != hush_store::Pruned::default() {
        tracing::info!(
            expired = pruned.expired_entries,
            idempotency = pruned.idempotency_records,
            "retention pass"
        );
    }
    Ok(pruned)
}

/// What a connection holds while it lives: its place under `max_connections`, and
/// among its address's connections (P106).
type Held = (
    tokio::sync::OwnedSemaphorePermit,
    crate::limits::Slot<std::net::IpAddr>,
);

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// One connection, from its TLS handshake to its end. This future is what each open
/// connection's task keeps (its size is checked by a test): the handshake is boxed
/// and gone once done, the TLS stream lives in the halves' shared state.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    acceptor: TlsAcceptor,
    stop: watch::Receiver<bool>,
    held: Held,
) {
    let _held = held;
    let Some((reader, writer)) = Box::pin(handshake(tcp, peer, &state, acceptor)).await else {
        return;
    };
    session::run(reader, writer, peer, state, stop).await;
}

/// The TLS handshake, within its deadline, with ALPN hush/1 (P100).
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    state: &ServerState,
    acceptor: TlsAcceptor,
) -> Option<(ReadHalf<Tls>, WriteHalf<Tls>)> {
    let timeout = state.config.limits.tls_handshake_timeout;
    let mut tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    if tls.get_ref().1.alpn_protocol() != Some(crate::identity::ALPN) {
        tracing::info!(%peer, "closing: the client did not offer ALPN hush/1");
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return None;
    }
    Some(tokio::io::split(tls))
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(state.config.limits.max_connections));
    let mut sessions = JoinSet::new();
    let mut admin_stop = state.stop_requested.subscribe();
    tokio::pin!(shutdown);
    let sweeper = tokio::spawn(recheck_sessions(Arc::clone(&state), stop_rx.clone()));
    let pruner = tokio::spawn(prune_periodically(Arc::clone(&state), stop_rx.clone()));

    'serve: loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            _ = admin_stop.changed() => {
                tracing::info!("shutdown requested by an admin");
                break;
            }
            // A finished session's task is freed at once, not at the next accept.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = loop {
            tokio::select! {
                _ = &mut shutdown => break 'serve,
                _ = admin_stop.changed() => {
                    tracing::info!("shutdown requested by an admin");
                    break 'serve;
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(a) => break a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        };
        // Reap finished sessions so the set stays small.
        while sessions.try_join_next().is_some() {}
        // P106: one address may not take every connection.
        let per_address = state.config.limits.connections_per_address;
        let Some(address_slot) = state.per_address.try_take(peer.ip(), per_address) else {
            tracing::info!(%peer, max = per_address, "refused a connection: too many from this address");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let stop = stop_rx.clone();
        sessions.spawn(connection(
            tcp,
            peer,
            state,
            acceptor,
            stop,
            (permit, address_slot),
        ));
    }

    tracing::info!(
        sessions = sessions.len(),
        "shutting down: no longer accepting"
    );
    drop(listener);
    let _ = stop_tx.send(true);
    sweeper.abort();
    pruner.abort();
    let grace = state.config.limits.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = sessions.len(),
            "sessions did not close in time; aborting them"
        );
        sessions.abort_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Most bytes one open connection's task may keep besides its TLS state: the task
    /// is what every idle session costs (docs/benchmarks.md), so growth here is a
    /// regression even when every other test passes.
    const CONNECTION_FUTURE_MAX: usize = 2_048;

    #[tokio::test]
    async fn an_open_connection_keeps_a_small_task() {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::identity::TlsIdentity::load_or_create(dir.path()).unwrap();
        let acceptor = TlsAcceptor::from(identity.server_config().unwrap());
        let state = Arc::new(
            ServerState::new(
                Arc::new(hush_store::memory::MemoryStore::new()),
                crate::ServerConfig::default(),
                Arc::new(crate::clock::SystemClock),
                Arc::new(crate::OsEntropy),
            )
            .await
            .unwrap(),
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let slot = state.per_address.try_take(peer.ip(), 1).unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let task = connection(
            tcp,
            peer,
            Arc::clone(&state),
            acceptor,
            stop,
            (permit, slot),
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= CONNECTION_FUTURE_MAX,
            "a connection's task is {size} bytes, more than {CONNECTION_FUTURE_MAX}: box what it awaits on rare paths"
        );
        drop((task, client));
    }
}
