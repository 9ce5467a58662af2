//! The request being served: its id and trace context in a task-local scope, which its
//! code, its log lines and its problem bodies read. The request-context layer
//! (`telemetry::context`) opens it around every request.

use std::cell::OnceCell;
use std::rc::Rc;

/// The request whose code is running: every log line written meanwhile carries its id and,
/// when traces are on, its trace and span id.
#[derive(Debug)]
pub struct RequestScope {
    pub id: Box<str>,
    /// Whether the request's spans are recorded and exported.
    pub sampled: bool,
    /// Set once the request's trace context is known (traces on).
    pub trace: OnceCell<TraceIds>,
}

/// A request's trace context in hex: its server span's ids when sampled, its own ids when
/// not.
#[derive(Debug)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

tokio::task_local! {
    /// The [`RequestScope`] of the request whose code is running, set per poll of the
    /// request's future, so it follows the request across awaits whatever span is current.
    pub static REQUEST: Rc<RequestScope>;
}

/// The id of the request being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST.try_with(|scope| scope.id.to_string()).ok()
}
