//! [`PortReservation`]: a loopback port held until a server takes it.

/// A loopback port held for a server that is not listening on it yet.
///
/// A test that needs a port beyond the server's own (a `--tls-port`, the
/// address of a service under test) should not pick a free one and hope:
/// between the pick and the server's `bind`, a test running in parallel
/// can be handed the same port. A reservation holds the port instead: no
/// other `bind` to port 0 on this machine gets it until the reservation
/// drops. [`RedisServer`](super::RedisServer) holds its own port so while it starts, and
/// between a [`kill`](super::RedisServer::kill) and a
/// [`restart`](super::RedisServer::restart).
///
/// The socket is bound with `SO_REUSEADDR` but never listens, so a client
/// connecting to the port is refused, as at any closed port. On Linux, a
/// server that binds with `SO_REUSEADDR` too (as `redis-server` and tokio's
/// `TcpListener` do) can bind and listen on the port while it is held, so
/// the reservation may drop once the server is up. Elsewhere, drop it just
/// before starting the server.
///
/// ```
/// use jobqueue::testing::PortReservation;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let reserved = PortReservation::new();
/// let port = reserved.port();
/// // ... prepare the server that is to listen on `port`, then:
/// drop(reserved);
/// let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
/// # drop(listener);
/// # }
/// ```
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    _socket: tokio::net::TcpSocket,
}

impl PortReservation {
    /// Holds a free loopback port the kernel picks.
    ///
    /// # Panics
    ///
    /// If no socket can be bound on `127.0.0.1`.
    pub fn new() -> Self {
        match Self::bind(0) {
            Ok(reservation) => reservation,
            Err(e) => panic!("no free loopback port: {e}"),
        }
    }

    /// Holds `port`, or `None` if something else holds it.
    pub(super) fn of(port: u16) -> Option<Self> {
        Self::bind(port).ok()
    }

    fn bind(port: u16) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            port,
            _socket: socket,
        })
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for PortReservation {
    fn default() -> Self {
        Self::new()
    }
}
