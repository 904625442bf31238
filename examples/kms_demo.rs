//! Scans out the demo guest on a KMS device for N frames.
//!
//! `cargo run --example kms_demo --no-default-features --features kms -- --card /dev/dri/card1 --frames 60`
//!
//! Needs DRM master (no compositor on that card) and, for zero-copy scanout,
//! `/dev/udmabuf`; without it every frame goes through the copy path.

use std::path::PathBuf;

use clap::Parser;
use guestfb::export::{Exporter, PinManager, PinPolicy, PinPurpose};
use guestfb::format::PixelFormat;
use guestfb::present::kms::{Card, KmsPresenter};
use guestfb::source::demo::{DemoConfig, DemoGuest};

#[derive(Parser, Debug)]
struct Args {
    /// DRM card node; default: the first with a connected connector.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Connector name such as `Virtual-1` or `HDMI-A-1`; default: the first connected.
    #[arg(long)]
    connector: Option<String>,
    /// Frames to show.
    #[arg(long, default_value_t = 60)]
    frames: u64,
    /// Guest pixel format (XRGB8888, BGR888, RGB565, NV12…).
    #[arg(long, default_value = "XRGB8888")]
    format: String,
    /// Guest RAM in 2 MiB hugetlb pages.
    #[arg(long)]
    hugetlb: bool,
    /// Allow direct scanout without a long-term pin (kernels before 6.11).
    #[arg(long)]
    allow_without_longterm: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let format = PixelFormat::from_name(&args.format)
        .ok_or_else(|| format!("unknown pixel format {}", args.format))?;
    let card = match &args.card {
        Some(path) => Card::open(path)?,
        None => Card::open_first()?,
    };
    let pins = PinManager::new(PinPolicy {
        allow_without_longterm: args.allow_without_longterm,
        ..PinPolicy::default()
    });
    let mut presenter = KmsPresenter::new(card, args.connector.as_deref(), &pins)?;
    let (width, height) = presenter.mode_size();
    eprintln!(
        "{} on {}: {width}x{height}",
        presenter.connector_name(),
        presenter.card().path().display()
    );
    let mut guest = DemoGuest::new(DemoConfig {
        width,
        height,
        format,
        hugetlb: args.hugetlb.then_some(2 << 20),
        ..DemoConfig::default()
    })?;
    let exporter = Exporter::new(guest.memory().clone(), pins);
    let started = std::time::Instant::now();
    for frame in 0..args.frames {
        let export = exporter.export(1, &guest.desc(), PinPurpose::Scanout)?;
        let status = presenter.present(&export)?;
        if frame == 0 {
            eprintln!("frame 0: {status:?}");
        }
        guest.step();
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} frames in {seconds:.2} s ({:.1} fps)",
        args.frames,
        args.frames as f64 / seconds.max(1e-9)
    );
    presenter.shutdown()?;
    Ok(())
}
