//! The `squadron` binary: command line, configuration and wiring.

mod admin;
mod bench;
mod cli;
mod queue;
mod serve;
mod work;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match &cli.command {
            Command::Serve(args) => serve::serve(&cli, args).await,
            Command::Worker(args) => work::worker_command(&cli, args).await,
            Command::Scheduler => work::scheduler_command(&cli).await,
            Command::Listener => work::listener_command(&cli).await,
            Command::Queue(command) => queue::run(&cli, command).await,
            Command::Migrate => cli::migrate(&cli).await,
            Command::Admin(command) => admin::run(&cli, command).await,
            Command::Bench(command) => bench::run(command).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squadron: {e:#}");
            ExitCode::FAILURE
        }
    }
}
