//! The gRPC service both generated clients run on: a tonic `Channel`, plus a
//! Bearer token on every request when talking to Cloud Bigtable.

use std::sync::Arc;

use tonic::body::Body;
use tonic::codegen::http::{self, header::AUTHORIZATION, HeaderValue};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError};
use tonic::transport::Channel;

pub(crate) const DATA_SCOPES: &[&str] = &["https://www.googleapis.com/auth/bigtable.data"];
pub(crate) const ADMIN_SCOPES: &[&str] = &["https://www.googleapis.com/auth/bigtable.admin"];

#[derive(Clone)]
pub(crate) struct Auth {
    pub(crate) provider: Arc<dyn gcp_auth::TokenProvider>,
    pub(crate) scopes: &'static [&'static str],
}

#[derive(Clone)]
pub(crate) struct Transport {
    channel: Channel,
    auth: Option<Auth>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("authenticated", &self.auth.is_some())
            .finish()
    }
}

impl Transport {
    pub(crate) fn new(channel: Channel, auth: Option<Auth>) -> Self {
        Transport { channel, auth }
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.channel, cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The channel that was polled ready must serve this call; leave a fresh clone behind.
        let clone = self.channel.clone();
        let mut channel = std::mem::replace(&mut self.channel, clone);
        let Some(auth) = self.auth.clone() else {
            return Box::pin(async move { channel.call(req).await.map_err(Into::into) });
        };
        Box::pin(async move {
            // gcp_auth caches the token and refreshes it shortly before expiry.
            let token = auth.provider.token(auth.scopes).await.map_err(|e| {
                Box::new(tonic::Status::unauthenticated(format!(
                    "application-default credentials: {e}"
                ))) as StdError
            })?;
            let mut value =
                HeaderValue::try_from(format!("Bearer {}", token.as_str())).map_err(|_| {
                    Box::new(tonic::Status::unauthenticated(
                        "access token is not a valid header",
                    )) as StdError
                })?;
            value.set_sensitive(true);
            req.headers_mut().insert(AUTHORIZATION, value);
            channel.call(req).await.map_err(Into::into)
        })
    }
}
