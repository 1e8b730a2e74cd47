//! `scanfleet worker`: the daemon. Binds the metrics endpoint, builds the worker from the
//! settings and runs it until the shutdown signal; the loop itself is `crate::worker`.

use std::sync::Arc;

use tracing::info;

use crate::BoxError;
use crate::http::{self, Health};
use crate::settings::Settings;
use crate::telemetry;
use crate::worker::{Shutdown, Worker};

pub async fn run(settings: Settings) -> Result<(), BoxError> {
    settings.validate_for_worker()?;
    settings.log.init();
    let listener = tokio::net::TcpListener::bind(settings.metrics.listen)
        .await
        .map_err(|e| {
            format!(
                "configuration: metrics.listen {} cannot be bound: {e}",
                settings.metrics.listen
            )
        })?;
    let scan = &settings.scan;
    let tables = std::iter::once(&scan.default_table).chain(&scan.allowed_tables);
    let metrics = telemetry::install_metrics(
        tables.map(String::as_str),
        &crate::task::RejectReason::labels(),
    );
    let worker = Worker::from_settings(&settings).await?;

    let shutdown = Shutdown::default();
    let health = Arc::new(Health::default());
    let server_stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        metrics,
        health.clone(),
        server_stop.clone(),
    ));
    shutdown.on_signals();
    info!(
        control = %settings.control.queue_url,
        output = %settings.output.queue_url,
        concurrency = settings.worker.concurrency,
        metrics = %settings.metrics.listen,
        "worker started"
    );
    worker.run(health, shutdown).await;
    // The metrics endpoint stays up through the drain, so the last figures can be scraped.
    server_stop.cancel();
    let _ = server.await;
    info!("worker stopped");
    Ok(())
}
