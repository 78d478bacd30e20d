//! Pangolin's embedded S3-compatible endpoint for the embedded default: the S3 protocol
//! (s3s, SigV4 checked against the region's static credentials) over a local directory.
//!
//! Buckets are folders of the root and objects plain files at `<root>/<bucket>/<key>`, key
//! segments being folders, so keys are limited only by S3's 1024 bytes and the filesystem's
//! 255 bytes per segment. Objects are written to a temporary file, fsynced and renamed into
//! place, so a reader never sees a half-written object. See [`store`] for the layout.

use std::net::SocketAddr;
use std::path::Path;

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod list;
mod s3;
mod store;

/// Binds `listen` and serves the directory `root` until `shutdown` fires, with the default
/// connection limits ([`crate::http_server::HttpLimits::default`], for uploads).
/// Returns the bound address (useful with port 0) and the serving task.
pub async fn start(
    listen: &str,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let limits = crate::http_server::HttpLimits::default().for_uploads();
    start_with_limits(listen, root, access_key, secret_key, limits, shutdown).await
}

/// [`start`] with `limits` ([`crate::http_server`]; the body timeout should be
/// [`crate::http_server::BodyTimeout::BetweenReads`] for uploads of any size).
pub async fn start_with_limits(
    listen: &str,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    limits: crate::http_server::HttpLimits,
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
    let limits = crate::http_server::HttpLimits {
        // As before: in-flight uploads get a few seconds to finish at shutdown.
        shutdown_grace: std::time::Duration::from_secs(5),
        ..limits
    };
    let task = tokio::spawn(crate::http_server::serve(
        "embedded S3",
        listener,
        service,
        limits,
        crate::http_server::s3_timeout_answer,
        shutdown,
    ));
    tracing::info!(%addr, root = %root.display(), "embedded S3 endpoint listening");
    Ok((addr, task))
}
