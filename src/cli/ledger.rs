//! `scanfleet ledger create`: the job ledger's table.

use crate::BoxError;
use crate::ledger::Ledger;
use crate::settings::Settings;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create the ledger table named by ledger.table (on-demand billing); idempotent.
    Create,
}

pub async fn run(settings: Settings, command: Command) -> Result<(), BoxError> {
    match command {
        Command::Create => create(settings).await,
    }
}

async fn create(settings: Settings) -> Result<(), BoxError> {
    settings.log.init();
    let ledger = Ledger::for_command(&settings, "ledger create").await?;
    if ledger.create_table().await? {
        println!("created ledger table {} (on-demand billing)", ledger.table);
    } else {
        println!("ledger table {} already exists", ledger.table);
    }
    Ok(())
}
