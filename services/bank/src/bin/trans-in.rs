//! Bank B, the RM that credits: `TransInTry`, `TransInConfirm`, `TransInCancel` on port 8082.
//!
//! `trans-in reconcile [--older-than SECONDS] [--dry-run]` instead releases the holds no global
//! transaction will ever settle ([`bank::reconcile`]), and exits.

use bank::{Application, Role, Settings};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    service_kit::logging::init();
    let settings = Settings::from_env(Role::TransIn)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        None => {}
        Some((command, rest)) if command == "reconcile" => {
            std::process::exit(bank::reconcile::command(&settings, rest).await)
        }
        Some(_) => {
            eprintln!("usage: trans-in [reconcile [--older-than SECONDS] [--dry-run]]");
            std::process::exit(2)
        }
    }
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
