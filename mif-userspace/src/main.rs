use clap::Parser as _;
use mif::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    if let Err(e) = Cli::parse().execute().await {
        eprintln!("mif: {e:#}");
        std::process::exit(1);
    }
}
