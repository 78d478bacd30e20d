//! Pangolin's embedded S3-compatible endpoint for the embedded default: the S3 protocol
//! (s3s, SigV4 checked against the region's static credentials) over a local directory.
//!
//! Buckets are folders of the root and objects plain files at `<root>/<bucket>/<key>`, key
//! segments being folders, so keys are limited only by S3's 1024 bytes and the filesystem's
//! 255 bytes per segment. Objects are written to a temporary file, fsynced and renamed into
//! place, so a reader never sees a half-written object. See [`store`] for the layout.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod list;
mod s3;
mod store;

/// Binds `listen` and serves the directory `root` until `shutdown` fires.
/// Returns the bound address (useful with port 0) and the serving task.
pub async fn start(
    listen: &str,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let store = {
        let dir = root.to_path_buf();
        tokio::task::spawn_blocking(move || store::Store::open(&dir))
            .await?
            .map_err(|e| anyhow::anyhow!("embedded S3 at {}: {e}", root.display()))?
    };
    let service = {
        let mut b = S3ServiceBuilder::new(s3::Backend::new(store));
        b.set_auth(SimpleAuth::from_single(access_key, secret_key));
        b.build()
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("embedded S3 cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let socket = tokio::select! {
                res = listener.accept() => match res {
                    Ok((socket, _)) => {
                        // Small responses (HEAD, PUT acks) must not wait for Nagle's timer.
                        let _ = socket.set_nodelay(true);
                        socket
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "embedded S3 accept failed");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let conn = http.serve_connection(TokioIo::new(socket), service.clone());
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        tokio::select! {
            () = graceful.shutdown() => {},
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
        }
    });
    tracing::info!(%addr, root = %root.display(), "embedded S3 endpoint listening");
    Ok((addr, task))
}
