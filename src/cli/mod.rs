//! The commands, one room each: what a command takes on its command line and how it runs, on
//! top of the library's rooms (worker, ledger, task, aws). `main.rs` only parses and dispatches.
//! Nothing below `cli` imports it.

pub mod enqueue;
pub mod ledger;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod worker;

use crate::BoxError;
use crate::settings::Settings;

/// The ledger, or an error naming the setting `command` needs.
async fn ledger_for(settings: &Settings, command: &str) -> Result<crate::ledger::Ledger, BoxError> {
    let table = settings.ledger.table().ok_or_else(|| {
        format!(
            "configuration: ledger.table is required for {command} (env SCANFLEET__LEDGER__TABLE)"
        )
    })?;
    let aws = crate::aws::config().await;
    Ok(crate::ledger::Ledger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        table,
    ))
}

/// Starts logging as `log.*` asks.
fn init_logging(settings: &Settings) {
    crate::telemetry::init_logging(&settings.log.level, settings.log.format);
}
