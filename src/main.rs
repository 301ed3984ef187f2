//! `bench`: thin clap front end over the samplerbench library.
use clap::{Args, Parser, Subcommand};
use samplerbench::metrics::fid_cli::{self, FidOptions};
use samplerbench::metrics::ResizeMode;
use samplerbench::BenchError;
use std::path::PathBuf;
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
    /// Fréchet Inception Distance between two image sets or statistics files (like `python -m pytorch_fid`).
    Fid {
        /// Image folder, images .npz (arr_0), statistics .npz, cifar10:train:DIR, cifar10:test:DIR or celeba:DIR.
        path1: String,
        /// Same kinds as PATH1 (usually the reference set).
        path2: String,
        #[command(flatten)]
        feat: FeatureArgs,
        /// Also write PATH1's statistics (mu, sigma and mergeable sums) to this .npz.
        #[arg(long, value_name = "OUT.npz")]
        save_stats: Option<PathBuf>,
        /// Also write PATH2's statistics to this .npz.
        #[arg(long, value_name = "OUT.npz")]
        save_ref_stats: Option<PathBuf>,
    },
    /// Precompute FID reference statistics (mu, sigma, mergeable sums) of one source.
    Stats {
        /// Image folder, images .npz, cifar10:train:DIR, cifar10:test:DIR or celeba:DIR.
        source: String,
        #[arg(long, value_name = "FILE.npz")]
        out: PathBuf,
        #[command(flatten)]
        feat: FeatureArgs,
    },
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

#[derive(Args)]
struct FeatureArgs {
    /// Preprocessing pipeline: pytorch-fid, tf (TTUR/torch-fidelity/EDM) or clean (clean-fid).
    #[arg(long, default_value = "pytorch-fid", value_parser = |s: &str| s.parse::<ResizeMode>().map_err(|e| e.to_string()))]
    mode: ResizeMode,
    /// Feature dimensions (Inception block): 64, 192, 768 or 2048.
    #[arg(long, default_value_t = 2048)]
    dims: usize,
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Inception weights (.pth or .safetensors); default data/models/pt_inception-2015-12-05-6726825d.pth.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Accept weights whose SHA-256 differs from pytorch-fid's published file.
    #[arg(long)]
    allow_custom_weights: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl FeatureArgs {
    fn options(&self) -> samplerbench::Result<FidOptions> {
        Ok(FidOptions {
            mode: self.mode,
            dims: fid_cli::check_dims(self.dims)?,
            batch_size: self.batch_size.max(1),
            device: fid_cli::parse_device(&self.device)?,
            weights: self.weights.clone(),
            allow_custom_weights: self.allow_custom_weights,
            quiet: self.quiet,
        })
    }
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
        Command::Fid { path1, path2, feat, save_stats, save_ref_stats } => {
            let opts = feat.options()?;
            let fid = fid_cli::run_fid(
                &path1,
                &path2,
                &opts,
                save_stats.as_deref(),
                save_ref_stats.as_deref(),
                &mut || fid_cli::load_inception(&opts),
            )?;
            println!("{}", fid_cli::format_fid(fid));
        }
        Command::Stats { source, out, feat } => {
            let opts = feat.options()?;
            let m = fid_cli::run_stats(&source, &out, &opts, &mut || fid_cli::load_inception(&opts))?;
            eprintln!("wrote {} ({}-d mu, sigma)", out.display(), m.dims());
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
