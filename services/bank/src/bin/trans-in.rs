//! Bank B, the RM that credits: `TransInTry`, `TransInConfirm`, `TransInCancel` on port 8082.

use bank::{Application, Role, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env(Role::TransIn)?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
