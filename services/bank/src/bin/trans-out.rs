//! Bank A, the RM that debits: `TransOutTry`, `TransOutConfirm`, `TransOutCancel` on port 8081.

use bank::{Application, Role, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env(Role::TransOut)?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
