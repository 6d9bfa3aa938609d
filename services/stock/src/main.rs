//! The stock RM: `StockTry`, `StockConfirm`, `StockCancel` on port 8083.
//!
//! `stock reconcile [--older-than SECONDS] [--dry-run]` instead releases the reservations no
//! global transaction will ever settle ([`stock::reconcile`]), and exits.

use stock::{Application, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        None => {}
        Some((command, rest)) if command == "reconcile" => {
            std::process::exit(stock::reconcile::command(&settings, rest).await)
        }
        Some(_) => {
            eprintln!("usage: stock [reconcile [--older-than SECONDS] [--dry-run]]");
            std::process::exit(2)
        }
    }
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
