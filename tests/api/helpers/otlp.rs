//! An OTLP/HTTP trace receiver on 127.0.0.1:0: takes `POST /v1/traces` in protobuf, decodes
//! it with the opentelemetry-proto types, and keeps every span with its resource.

use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A span as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A span attribute as text (strings as they are, numbers and booleans printed).
    pub fn attr(&self, key: &str) -> Option<String> {
        value_of(&self.span.attributes, key)
    }

    /// A resource attribute as text.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        value_of(&self.resource, key)
    }

    /// The span's events: name and attributes.
    pub fn events(&self) -> Vec<(String, Vec<KeyValue>)> {
        self.span
            .events
            .iter()
            .map(|e| (e.name.clone(), e.attributes.clone()))
            .collect()
    }

    /// The attribute `key` of the first event named `name`.
    pub fn event_attr(&self, name: &str, key: &str) -> Option<String> {
        self.span
            .events
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| value_of(&e.attributes, key))
    }
}

pub fn value_of(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The running receiver.
pub struct OtlpReceiver {
    /// The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Export requests that could not be decoded.
    undecodable: Arc<Mutex<u32>>,
    handle: ServerHandle,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let undecodable: Arc<Mutex<u32>> = Arc::default();
        let (kept, bad) = (spans.clone(), undecodable.clone());
        let server = HttpServer::new(move || {
            let (kept, bad) = (kept.clone(), bad.clone());
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let (kept, bad) = (kept.clone(), bad.clone());
                    async move {
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(req) => {
                                let mut kept = kept.lock().unwrap();
                                for rs in req.resource_spans {
                                    let resource =
                                        rs.resource.map(|r| r.attributes).unwrap_or_default();
                                    for ss in rs.scope_spans {
                                        for span in ss.spans {
                                            kept.push(Received {
                                                resource: resource.clone(),
                                                span,
                                            });
                                        }
                                    }
                                }
                                HttpResponse::Ok()
                                    .content_type("application/x-protobuf")
                                    .finish()
                            }
                            Err(_) => {
                                *bad.lock().unwrap() += 1;
                                HttpResponse::BadRequest().finish()
                            }
                        }
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("receiver binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            spans,
            undecodable,
            handle,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        assert_eq!(
            *self.undecodable.lock().unwrap(),
            0,
            "an export was not OTLP protobuf"
        );
        self.spans.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}
