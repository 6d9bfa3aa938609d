//! `coordinator`: the TM binary. Settings come from the environment (see `Settings::from_env`).

use coordinator::{Application, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env()?;
    let app = Application::build(settings).await?;
    log::info!("coordinator listening on port {}", app.port());
    app.run_until_stopped().await?;
    Ok(())
}
