//! `bench`: thin clap front end over the samplerbench library.
use clap::{Parser, Subcommand};
use samplerbench::BenchError;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bench", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BENCH_GIT_COMMIT"), ")"),
          about = "Measure diffusion samplers' speed against their sample quality")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the build, libtorch, CUDA and BLAS setup and which data files are present.
    Doctor,
    /// Write report.md, report.html and plots/ from OUTPUT_DIR/results.parquet.
    Report {
        /// Output folder of `bench run` (holds results.parquet).
        output_dir: std::path::PathBuf,
        /// Quality number in tables and plots: fid, fd_pixel or fd_exact
        /// [default: fid if the results have it, else fd_exact, else fd_pixel].
        #[arg(long)]
        metric: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's usage errors are user errors: exit 2 (help/version exit 0).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<BenchError>().map_or(1, BenchError::exit_code);
            eprintln!("error: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor => {
            print!("{}", samplerbench::doctor::report(&samplerbench::registry::data_dir()));
        }
        Command::Report { output_dir, metric } => {
            use samplerbench::report::Metric;
            let metric = match metric {
                Some(m) => m.parse::<Metric>()?,
                None => Metric::preferred(&samplerbench::results::read_results(&output_dir)?),
            };
            let summary = samplerbench::report::write_report(&output_dir, metric)?;
            println!("{}", summary.markdown.display());
            println!("{}", summary.html.display());
            for m in &summary.missing {
                eprintln!("missing: {m}");
            }
        }
    }
    Ok(())
}
