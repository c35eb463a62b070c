//! `dray`: the manager (`dray server`) and the operator CLI.

use clap::Parser;
use dray_manager::cli::{Cli, main_with};

fn main() {
    let cli = Cli::parse();
    dray_shared::telemetry::init("info");
    dray_shared::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(main_with(cli));
    std::process::exit(code);
}
