//! The AP binary: settings from the environment, then serve until stopped.

use std::process::ExitCode;

use app::configuration::Settings;
use app::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
    service_kit::logging::init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: the message names the variable or address at fault.
            log::error!("app stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_env()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
