//! A bound on clients that read their response too slowly (or not at all).
//!
//! actix-web bounds the time to send a request head (`server.client_request_timeout_ms`),
//! but not the time a response takes to leave: a client that stops reading keeps its
//! connection, and the worker's buffers, for as long as it likes. So every accepted
//! connection keeps a second handle to its socket ([`remember`]), and every response starts
//! a watchdog ([`bound`]): if the connection has not moved on to another request (or gone)
//! within `server.client_response_timeout_ms`, the socket is shut down and reset (what the
//! client has not taken, in the kernel's buffers too, is discarded), which ends the
//! connection. A response that left in time leaves a watchdog with nothing to do: the
//! connection has been closed by then (keep-alive ends idle connections sooner) or carries
//! the next request.

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::AppState;

/// A connection's second handle to its socket, and how many responses it has started.
struct Connection {
    socket: socket2::Socket,
    responses: Cell<u64>,
}

/// Keeps a handle to the socket of a newly accepted plain TCP connection (`on_connect`).
pub fn remember(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    match socket2::SockRef::from(tcp).try_clone() {
        Ok(socket) => {
            ext.insert(Rc::new(Connection {
                socket,
                responses: Cell::new(0),
            }));
        }
        Err(e) => tracing::warn!(error = %e, "no response bound for a connection"),
    }
}

/// The middleware: starts the watchdog of each response.
pub async fn bound(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let within = req
        .app_data::<web::Data<AppState>>()
        .map_or(Duration::from_secs(30), |s| {
            s.settings.server.client_response_timeout
        });
    let conn = req.conn_data::<Rc<Connection>>().map(Rc::downgrade);
    let res = next.call(req).await?;
    if let Some(conn) = conn.and_then(|weak| weak.upgrade().map(|c| (c, weak))) {
        let (conn, weak) = conn;
        let started = conn.responses.get().wrapping_add(1);
        conn.responses.set(started);
        drop(conn);
        actix_rt::spawn(async move {
            tokio::time::sleep(within).await;
            // Gone already, or serving a later request: nothing to bound.
            let Some(conn) = weak.upgrade() else { return };
            if conn.responses.get() != started {
                return;
            }
            tracing::warn!(
                timeout_ms = within.as_millis() as u64,
                "response not taken by the client in time; connection closed"
            );
            // Reset, not a graceful close: what the client has not taken is discarded.
            let _ = conn.socket.set_linger(Some(Duration::ZERO));
            let _ = conn.socket.shutdown(Shutdown::Both);
        });
    }
    Ok(res)
}
