//! The stock RM: `StockTry`, `StockConfirm`, `StockCancel` on port 8083.

use stock::{Application, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
