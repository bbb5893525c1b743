//! Our durable Bigtable: the Bigtable v2 data API and table-admin subset over gRPC, stored in
//! an embedded LSM engine (fjall) with every write fsynced before it is acknowledged.
//!
//! Run it as a server (`chunkedgraph emulator`) or in-process through [`in_process_channel`],
//! which still speaks real gRPC, so callers cannot tell the difference.

pub mod filter;
pub mod gc;
pub mod row;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Server};

pub use service::{BigtableService, TableAdminService, MAX_MESSAGE_BYTES};
pub use store::{Store, StoreError, StoreOptions};

/// Opens (or creates) the store in `dir`.
pub fn open(dir: &Path, opts: StoreOptions) -> Result<Arc<Store>, StoreError> {
    Ok(Arc::new(Store::open(dir, opts)?))
}

fn router(store: Arc<Store>) -> tonic::transport::server::Router {
    Server::builder()
        .add_service(BigtableService::new(store.clone()))
        .add_service(TableAdminService::new(store))
}

/// Serves the store on `listener` until `shutdown` resolves.
pub async fn serve(
    store: Arc<Store>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // gRPC answers are small frames; Nagle's algorithm would hold them back ~40 ms.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    router(store)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Binds `addr` and serves in a background task; returns the bound address.
pub async fn spawn(store: Arc<Store>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(store, listener, std::future::pending()).await {
            tracing::error!("emulator server stopped: {e}");
        }
    });
    Ok(bound)
}

/// A gRPC channel to the store over in-memory pipes: no socket, same protocol.
pub fn in_process_channel(store: Arc<Store>) -> Channel {
    let connector = tower::service_fn(move |_: http::Uri| {
        let store = store.clone();
        async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            tokio::spawn(async move {
                let incoming = tokio_stream::once(Ok::<_, std::io::Error>(server));
                if let Err(e) = router(store).serve_with_incoming(incoming).await {
                    tracing::warn!("in-process connection ended: {e}");
                }
            });
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
        }
    });
    Endpoint::from_static("http://in-process.chunkedgraph").connect_with_connector_lazy(connector)
}
