//! The demo's application: a tiny HTTPS server that reads its certificate at
//! start and again on SIGHUP, like nginx, and writes a pid file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

use super::DemoError;

/// Where the demo app reads its files and listens.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Certificate chain PEM.
    pub cert: PathBuf,
    /// Private key PEM.
    pub key: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Pid file to write.
    pub pid_file: PathBuf,
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, DemoError> {
    let bad = |why: String| DemoError::App(why);
    let read = |p: &Path| crate::fs::safefile::read(p).map_err(|e| bad(e.to_string()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| bad(format!("{}: {e}", key.display())))?;
    let cfg = ServerConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// The hidden `rekey demo-app` the tour starts.
pub fn command(opts: AppOptions) -> anyhow::Result<std::process::ExitCode> {
    crate::cli::runtime()?.block_on(run(opts))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Serve until killed.
pub async fn run(opts: AppOptions) -> Result<(), DemoError> {
    let current = Arc::new(RwLock::new(load(&opts.cert, &opts.key)?));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| DemoError::App(format!("cannot listen on {}: {e}", opts.listen)))?;
    std::fs::write(&opts.pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| DemoError::App(format!("cannot write {}: {e}", opts.pid_file.display())))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DemoError::App(e.to_string()))?;
    loop {
        tokio::select! {
            _ = hup.recv() => match load(&opts.cert, &opts.key) {
                // Keep serving the old certificate if the new files are bad.
                Ok(cfg) => {
                    if let Ok(mut c) = current.write() {
                        *c = cfg;
                    }
                }
                Err(e) => eprintln!("demo app: reload failed, keeping the old certificate: {e}"),
            },
            conn = listener.accept() => {
                let Ok((tcp, _)) = conn else { continue };
                let cfg = match current.read() {
                    Ok(c) => c.clone(),
                    Err(_) => continue,
                };
                tokio::spawn(async move {
                    if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                        let body = "hello from the rekey demo app\n";
                        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        let _ = tls.write_all(reply.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        }
    }
}
