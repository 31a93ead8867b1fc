//! The `patron` binary: command-line entry point and runtime wiring.

// The allocator (mimalloc) and its settings live in `patron-alloc`.
use patron_alloc as _;

mod backtest;
mod campaign_cli;
mod cli;
mod cluster;
mod config;
mod demo;
mod eval_recs;
mod http;
mod http_listen;
mod loadgen;
mod metrics;
mod output;
mod provenance;
mod query;
mod rejected;
mod replay;
mod runtime;
mod score;
mod status_page;
mod tls;
mod units;

use clap::Parser;

fn main() -> std::process::ExitCode {
    patron_alloc::configure();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Score(args) => score::run(&args),
        cli::Command::Backtest(args) => backtest::run(&args),
        cli::Command::Serve(args) => match args.fleet.nats.clone() {
            Some(nats) => cluster::run(&args, &nats),
            None => runtime::run(&args),
        },
        cli::Command::Demo(args) => demo::run(&args),
        cli::Command::Replay(args) => replay::run(&args),
        cli::Command::Query(args) => query::run(&args),
        cli::Command::EvalRecs(args) => eval_recs::run(&args),
        cli::Command::Loadgen(args) => loadgen::run(&args),
        cli::Command::Campaign(args) => campaign_cli::run(&args),
        cli::Command::Cluster(args) => match args.action {
            cli::ClusterAction::Status { nats, json } => cluster::status::run(&nats, json),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
