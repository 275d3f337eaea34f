//! One structured `tracing` line per request: method, path, status, bytes and duration.

use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures_util::future::LocalBoxFuture;

/// Middleware factory for the access log.
pub struct AccessLog;

impl<S, B> Transform<S, ServiceRequest> for AccessLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = AccessLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AccessLogService { service }))
    }
}

pub struct AccessLogService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for AccessLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Filtered out (`log.level` above info for `berth::access`): no line to build, so
        // nothing is copied or timed.
        if !tracing::enabled!(target: "berth::access", tracing::Level::INFO) {
            return Box::pin(self.service.call(req));
        }
        let start = Instant::now();
        let method = req.method().to_string();
        let path = req.path().to_string();
        let peer = crate::client_ip::client_ip(req.request());
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let status = res.status().as_u16();
            let size = match res.response().body().size() {
                actix_web::body::BodySize::Sized(n) => n,
                _ => 0,
            };
            tracing::info!(
                target: "berth::access",
                %method, %path, status, bytes = size, peer = %peer,
                ms = start.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
            Ok(res)
        })
    }
}
