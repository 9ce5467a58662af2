//! A bound on clients that read their response too slowly (or not at all).
//!
//! actix-web bounds the time to send a request head (`server.client_request_timeout_ms`),
//! but not the time a response takes to leave: a client that stops reading keeps its
//! connection, and the worker's buffers, for as long as it likes. So every accepted
//! connection keeps a second handle to its socket and one watchdog task ([`remember`]),
//! and [`layer`] tells the connection when each response starts. If the connection has not
//! moved on to another request (or gone) within `server.client_response_timeout_ms` of a
//! response's start, the watchdog shuts the socket down and resets it (what the client has
//! not taken, in the kernel's buffers too, is discarded), which ends the connection. A
//! response that left in time leaves the watchdog nothing to do: the connection has been
//! closed by then (keep-alive ends idle connections sooner) or carries the next request.
//!
//! A response costs the layer a clock read and two cell writes; the watchdog sleeps until
//! the deadline of the response being sent and ends when its connection does.

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A connection's second handle to its socket, and the start of the response it is
/// sending (with how many it has started).
struct Connection {
    socket: socket2::Socket,
    response: Cell<(u64, Option<Instant>)>,
    closed: Arc<Notify>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

/// Keeps a handle to the socket of a newly accepted plain TCP connection and starts its
/// watchdog (`on_connect`), which cuts a response not taken `within` its start.
pub fn remember(conn: &dyn Any, ext: &mut Extensions, within: Duration) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    match socket2::SockRef::from(tcp).try_clone() {
        Ok(socket) => {
            let closed = Arc::new(Notify::new());
            let conn = Rc::new(Connection {
                socket,
                response: Cell::new((0, None)),
                closed: closed.clone(),
            });
            actix_rt::spawn(watch(Rc::downgrade(&conn), closed, within));
            ext.insert(conn);
        }
        Err(e) => tracing::warn!(error = %e, "no response bound for a connection"),
    }
}

/// The watchdog of one connection.
async fn watch(conn: Weak<Connection>, closed: Arc<Notify>, within: Duration) {
    loop {
        let Some(c) = conn.upgrade() else { return };
        let (started, at) = c.response.get();
        drop(c);
        let deadline = at.map_or_else(|| Instant::now() + within, |at| at + within);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = closed.notified() => return,
        }
        let Some(c) = conn.upgrade() else { return };
        // Serving a later response (or none yet): watch that one.
        if at.is_none() || c.response.get().0 != started {
            continue;
        }
        tracing::warn!(
            timeout_ms = within.as_millis() as u64,
            "response not taken by the client in time; connection closed"
        );
        // Reset, not a graceful close: what the client has not taken is discarded.
        let _ = c.socket.set_linger(Some(Duration::ZERO));
        let _ = c.socket.shutdown(Shutdown::Both);
        return;
    }
}

/// The layer: tells the connection that a response starts.
pub async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let conn = req.conn_data::<Rc<Connection>>().map(Rc::downgrade);
    let res = next.call(req).await?;
    if let Some(conn) = conn.and_then(|weak| weak.upgrade()) {
        let (started, _) = conn.response.get();
        conn.response
            .set((started.wrapping_add(1), Some(Instant::now())));
    }
    Ok(res)
}
