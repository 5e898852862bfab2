//! The open connections of one port: admission at `--max-connections`, each connection's
//! [`Phase`] (what its deadlines and eviction go by), and the signals that close connections
//! from outside their tasks.
//!
//! At the limit, a new connection is admitted by closing an unfinished or idle one: unfinished
//! before idle (a connection that has completed a request has shown it is a client; one that has
//! not may be a flood socket), the oldest first within each (by when its phase began). So a flood
//! of silent sockets cannot lock out the kubelet's probe or KEDA, nor push out their idle
//! keep-alive connections; busy connections are never evicted. When every connection is busy,
//! admission waits for one to end or become idle. Shutdown closes what is left past its deadline
//! through [`ConnectionRegistry::close_all`].
//!
//! Thread-safe: the io_uring workers (one runtime each) share their port's registry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a connection is doing, for its deadlines and for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No complete request yet: TLS handshake, HTTP/2 preface, a request head (or, on HTTP/1.1,
    /// its body) arriving.
    Unfinished,
    /// Nothing in flight: between HTTP/1.1 requests, an HTTP/2 connection with no open stream.
    Idle,
    /// Requests or streams in flight (an open StreamIsActive stream included), or an answer
    /// being written.
    Busy,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Unfinished => "unfinished",
            Phase::Idle => "idle",
            Phase::Busy => "busy",
        }
    }
}

#[derive(Debug)]
struct PhaseState {
    phase: Phase,
    since: Instant,
    /// Requests (HTTP/2 streams) whose response has not ended, counted by the service wrapper.
    in_flight: usize,
}

/// One open connection, shared by its task, its service wrapper and the registry.
#[derive(Debug)]
pub(crate) struct TrackedConnection {
    id: u64,
    peer: SocketAddr,
    state: Mutex<PhaseState>,
    /// Woken on every phase change: the watchdog of a hyper connection re-reads its deadline.
    changed: Notify,
    /// Cancelled when the connection must close now (evicted, or past the shutdown deadline).
    close: CancellationToken,
    /// The registry's: signalled when this connection becomes evictable.
    room: Arc<RoomSignal>,
}

impl TrackedConnection {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current phase and when it began.
    pub(crate) fn phase(&self) -> (Phase, Instant) {
        let state = self.state.lock();
        (state.phase, state.since)
    }

    /// Sets the phase (a driver that knows it, as the HTTP/1.1 OTLP driver does).
    pub(crate) fn set_phase(&self, phase: Phase, since: Instant) {
        let mut state = self.state.lock();
        if (state.phase, state.since) != (phase, since) {
            let was_busy = state.phase == Phase::Busy;
            state.phase = phase;
            state.since = since;
            drop(state);
            self.changed.notify_one();
            if was_busy && phase != Phase::Busy {
                self.room.changed();
            }
        }
    }

    /// A request (an HTTP/2 stream) started: the connection is busy until every started
    /// request's [`InFlight`] is dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock();
        state.in_flight += 1;
        if state.phase != Phase::Busy {
            state.phase = Phase::Busy;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
        InFlight { connection: Some(Arc::clone(self)) }
    }

    fn request_ended(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.phase = Phase::Idle;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
            self.room.changed();
        }
    }

    /// Bytes arrived on an HTTP/1.1 connection: if it was idle, a request head has begun and the
    /// header deadline runs from now.
    pub(crate) fn input_arrived(&self, now: Instant) {
        let mut state = self.state.lock();
        if state.phase == Phase::Idle {
            state.phase = Phase::Unfinished;
            state.since = now;
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Resolves after a phase change since the last call (or at once if one is pending).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Resolves when the connection must close now.
    pub(crate) async fn closed(&self) {
        self.close.cancelled().await;
    }

    /// The token that [`TrackedConnection::closed`] waits on, for code that selects on it.
    pub(crate) fn close_token(&self) -> &CancellationToken {
        &self.close
    }

    /// Where the connection stands in line for eviction (lowest first); `None` when it is busy
    /// or already closing.
    fn eviction_rank(&self) -> Option<(bool, Instant, u64)> {
        if self.close.is_cancelled() {
            return None;
        }
        let state = self.state.lock();
        match state.phase {
            Phase::Unfinished => Some((false, state.since, self.id)),
            Phase::Idle => Some((true, state.since, self.id)),
            Phase::Busy => None,
        }
    }
}

/// A request in flight on a [`TrackedConnection`]; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight {
    connection: Option<Arc<TrackedConnection>>,
}

impl InFlight {
    /// Ends the request now (the response body finished) instead of when dropped.
    pub(crate) fn end(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.request_ended();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end();
    }
}

/// Wakes admissions waiting for room: a connection left or became evictable. Only waiting
/// admissions are woken, so a request ending costs an atomic load when the port is not full.
#[derive(Debug, Default)]
struct RoomSignal {
    waiting: AtomicUsize,
    notify: Notify,
}

impl RoomSignal {
    fn changed(&self) {
        // SeqCst pairs with the admission's increment: either it sees this change when it looks,
        // or this sees it waiting.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

/// Counts an admission as waiting while it lives.
struct Waiting<'a>(&'a RoomSignal);

impl<'a> Waiting<'a> {
    fn new(room: &'a RoomSignal) -> Self {
        room.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(room)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Arc<TrackedConnection>>,
}

/// The open connections of one port.
#[derive(Debug)]
pub(crate) struct ConnectionRegistry {
    port: &'static str,
    connections_max: usize,
    open: Mutex<Open>,
    /// Signalled when a connection leaves or becomes evictable.
    room: Arc<RoomSignal>,
    /// The parent of every connection's close token.
    close_all: CancellationToken,
}

/// A connection's place in its port's registry; dropping it (when the connection's task ends)
/// frees the place.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<ConnectionRegistry>,
    connection: Arc<TrackedConnection>,
}

impl Registration {
    pub(crate) fn connection(&self) -> &Arc<TrackedConnection> {
        &self.connection
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.open.lock().by_id.remove(&self.connection.id);
        self.registry.room.changed();
    }
}

impl ConnectionRegistry {
    pub(crate) fn new(port: &'static str, connections_max: usize) -> Arc<ConnectionRegistry> {
        assert!(connections_max > 0, "a port admits at least one connection");
        Arc::new(ConnectionRegistry {
            port,
            connections_max,
            open: Mutex::new(Open::default()),
            room: Arc::new(RoomSignal::default()),
            close_all: CancellationToken::new(),
        })
    }

    pub(crate) fn port(&self) -> &'static str {
        self.port
    }

    pub(crate) fn connections_max(&self) -> usize {
        self.connections_max
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open.lock().by_id.len()
    }

    /// Admits the connection from `peer` (accepted just now; it starts unfinished). At the limit,
    /// evicts an unfinished or idle connection (see the module doc) and waits for it to leave;
    /// when every connection is busy, waits until one can be evicted or leaves.
    pub(crate) async fn admit(self: &Arc<Self>, peer: SocketAddr) -> Registration {
        let mut victim: Option<Arc<TrackedConnection>> = None;
        let _waiting = Waiting::new(&self.room);
        loop {
            let room_changed = self.room.notify.notified();
            tokio::pin!(room_changed);
            // Registered before the check, so a change in between wakes this wait.
            room_changed.as_mut().enable();
            {
                let mut open = self.open.lock();
                if open.by_id.len() < self.connections_max {
                    return self.insert(&mut open, peer);
                }
                let victim_pending = victim.as_ref().is_some_and(|victim| open.by_id.contains_key(&victim.id));
                if !victim_pending {
                    victim = Self::eviction_candidate(&open);
                    if let Some(victim) = &victim {
                        let (phase, since) = victim.phase();
                        tracing::debug!(
                            port = self.port,
                            connections_max = self.connections_max,
                            evicted_peer = %victim.peer,
                            phase = phase.as_str(),
                            phase_age_ms = since.elapsed().as_millis() as u64,
                            "at the connection limit: closing an unfinished or idle connection to admit a new one"
                        );
                        victim.close.cancel();
                    }
                }
            }
            room_changed.await;
        }
    }

    fn insert(self: &Arc<Self>, open: &mut Open, peer: SocketAddr) -> Registration {
        let id = open.next_id;
        open.next_id += 1;
        let connection = Arc::new(TrackedConnection {
            id,
            peer,
            state: Mutex::new(PhaseState { phase: Phase::Unfinished, since: Instant::now(), in_flight: 0 }),
            changed: Notify::new(),
            close: self.close_all.child_token(),
            room: Arc::clone(&self.room),
        });
        open.by_id.insert(id, Arc::clone(&connection));
        Registration { registry: Arc::clone(self), connection }
    }

    /// The unfinished connection whose phase began first, else the idle one.
    fn eviction_candidate(open: &Open) -> Option<Arc<TrackedConnection>> {
        open.by_id
            .values()
            .filter_map(|connection| connection.eviction_rank().map(|rank| (rank, connection)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, connection)| Arc::clone(connection))
    }

    /// Closes every connection now, and every one admitted from now on (the shutdown deadline).
    pub(crate) fn close_all(&self) {
        self.close_all.cancel();
    }

    /// Resolves once no connection is open.
    pub(crate) async fn all_closed(&self) {
        let _waiting = Waiting::new(&self.room);
        loop {
            let room_changed = self.room.notify.notified();
            tokio::pin!(room_changed);
            room_changed.as_mut().enable();
            if self.open.lock().by_id.is_empty() {
                return;
            }
            room_changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Waits (bounded) for `future`; a hang is a test failure, not a timing assertion.
    async fn bounded<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(30), future).await.expect("did not complete")
    }

    #[tokio::test]
    async fn at_the_limit_unfinished_connections_are_evicted_oldest_first_then_idle_ones() {
        let registry = ConnectionRegistry::new("test", 4);
        let busy = bounded(registry.admit(peer(1))).await;
        let _in_flight = busy.connection().request_started();
        let idle = bounded(registry.admit(peer(2))).await;
        let older_unfinished = bounded(registry.admit(peer(3))).await;
        let newer_unfinished = bounded(registry.admit(peer(4))).await;
        let base = Instant::now();
        // The idle one has been idle longer than either unfinished one has been unfinished.
        idle.connection().set_phase(Phase::Idle, base);
        older_unfinished.connection().set_phase(Phase::Unfinished, base + Duration::from_secs(1));
        newer_unfinished.connection().set_phase(Phase::Unfinished, base + Duration::from_secs(2));

        let admit = |port| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move { registry.admit(peer(port)).await })
        };
        let fifth = admit(5);
        bounded(older_unfinished.connection().closed()).await;
        for untouched in [&idle, &newer_unfinished, &busy] {
            assert!(!untouched.connection().close_token().is_cancelled());
        }
        // The evicted connection's task ends; the new one takes its place.
        drop(older_unfinished);
        let fifth = bounded(fifth).await.unwrap();
        assert_eq!((registry.open_count(), fifth.connection().phase().0), (4, Phase::Unfinished));
        // Then the remaining unfinished ones (the newest included), before the idle one.
        fifth.connection().set_phase(Phase::Unfinished, base + Duration::from_secs(3));
        let sixth = admit(6);
        bounded(newer_unfinished.connection().closed()).await;
        drop(newer_unfinished);
        let sixth = bounded(sixth).await.unwrap();
        sixth.connection().set_phase(Phase::Busy, base);
        fifth.connection().set_phase(Phase::Busy, base);
        let seventh = admit(7);
        bounded(idle.connection().closed()).await;
        assert!(!busy.connection().close_token().is_cancelled(), "a busy connection is never evicted");
        drop(idle);
        assert_eq!(bounded(seventh).await.unwrap().connection().peer(), peer(7));
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_admission_waits_for_one_to_end() {
        let registry = ConnectionRegistry::new("test", 1);
        let busy = bounded(registry.admit(peer(1))).await;
        let mut in_flight = busy.connection().request_started();
        let admitting = tokio::spawn({
            let registry = Arc::clone(&registry);
            async move { registry.admit(peer(2)).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!busy.connection().close_token().is_cancelled(), "a busy connection is never evicted");
        assert!(!admitting.is_finished());
        // The request ends: the connection is idle, and the waiting admission evicts it.
        in_flight.end();
        assert_eq!(busy.connection().phase().0, Phase::Idle);
        bounded(busy.connection().closed()).await;
        drop(busy);
        assert_eq!(bounded(admitting).await.unwrap().connection().peer(), peer(2));
    }

    #[tokio::test]
    async fn phases_follow_requests_and_input_and_close_all_reaches_everyone() {
        let registry = ConnectionRegistry::new("test", 4);
        let registration = bounded(registry.admit(peer(1))).await;
        let connection = Arc::clone(registration.connection());
        assert_eq!(connection.phase().0, Phase::Unfinished);
        let first = connection.request_started();
        let second = connection.request_started();
        assert_eq!(connection.phase().0, Phase::Busy);
        drop(first);
        assert_eq!(connection.phase().0, Phase::Busy, "a stream is still open");
        drop(second);
        assert_eq!(connection.phase().0, Phase::Idle);
        bounded(connection.changed()).await;
        let now = Instant::now();
        connection.input_arrived(now);
        assert_eq!(connection.phase(), (Phase::Unfinished, now));

        registry.close_all();
        bounded(connection.closed()).await;
        let late = bounded(registry.admit(peer(2))).await;
        assert!(late.connection().close_token().is_cancelled(), "admitted after close_all: closed at once");
        drop((registration, late));
        bounded(registry.all_closed()).await;
    }
}
