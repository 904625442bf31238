//! guestfb's VM viewer: shows a guest framebuffer in a Wayland window.
//!
//! Frames come from the built-in demo guest: memfd-backed guest RAM holding a
//! framebuffer that changes every frame, exported through the pin manager (a udmabuf
//! where `/dev/udmabuf` exists, the memfd itself elsewhere) and shown through the chosen
//! path: gl=off copies the damaged rectangles into wl_shm buffers; `--output kms` puts
//! the guest's pages straight on a KMS plane when there is no compositor.
//!
//! On the zero-copy paths (passthrough, gl=on, KMS) the demo guest double-buffers, the
//! way a virtio-gpu guest flips between two resources: it draws the next frame into the
//! buffer not on display, and only once the display is done with it (the compositor's
//! `wl_buffer.release` for passthrough; the end of our GL draw, which `present` waits
//! for, for gl=on; the page-flip event away from it for KMS). gl=off copies each frame,
//! so one guest buffer drawn in place is enough there.
//!
//! `--source qemu[:ADDRESS]` shows a running QEMU's `-display dbus` console(s) instead
//! (see `qemu.rs`).
//!
//! ```text
//! cargo run --release --example viewer -- --source qemu:unix:path=/tmp/qemu-bus --send-keys esc
//! cargo run --release --example viewer -- --size 1280x720 --frames 300 --screenshot shot.png
//! cargo run --release --example viewer -- --output kms:/dev/dri/card1 --frames 600
//! ```

fn main() {
    if let Err(error) = run() {
        eprintln!("viewer: {error}");
        std::process::exit(1);
    }
}

mod presenter;
#[cfg(feature = "qemu")]
mod qemu;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use guestfb::export::{
    ExportError, ExportedFramebuffer, Exporter, PinManager, PinPolicy, PinPurpose,
};
use guestfb::format::PixelFormat;
use guestfb::import::CpuMapping;
use guestfb::present::wayland::{PresenterEvent, PresenterOptions};
use guestfb::rect::Rect;

use crate::presenter::{
    open_zero_copy, stop_on_signals, stop_requested, GlMode, PresentMode, Presenter, ShowError,
    Stats,
};
use guestfb::source::demo::{Buffering, DemoConfig, DemoGuest, FIRST_BUFFER_ID};

/// Where the picture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// The Wayland compositor of WAYLAND_DISPLAY, else KMS.
    Auto,
    /// A Wayland window.
    Wayland,
    /// Direct scanout on a KMS plane (the first usable card, or this one).
    Kms(Option<PathBuf>),
}

fn parse_output(text: &str) -> Result<Output, String> {
    match text.split_once(':') {
        None if text == "auto" => Ok(Output::Auto),
        None if text == "wayland" => Ok(Output::Wayland),
        None if text == "kms" => Ok(Output::Kms(None)),
        Some(("kms", device)) => Ok(Output::Kms(Some(device.into()))),
        _ => Err(format!("{text:?} is not auto, wayland, kms or kms:DEVICE")),
    }
}

/// Where the guest's frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SourceChoice {
    /// The built-in demo guest.
    Demo,
    /// QEMU's D-Bus display at this bus address (empty: the session bus).
    Qemu(String),
}

fn parse_source(text: &str) -> Result<SourceChoice, String> {
    match text.split_once(':') {
        None if text == "demo" => Ok(SourceChoice::Demo),
        None if text == "qemu" => Ok(SourceChoice::Qemu(String::new())),
        Some(("qemu", address)) => Ok(SourceChoice::Qemu(address.to_owned())),
        _ => Err(format!("{text:?} is not demo, qemu or qemu:ADDRESS")),
    }
}

/// A Wayland viewer for a virtual machine's framebuffer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Frame source: demo (built-in guest), qemu (QEMU `-display dbus` on the
    /// session bus) or qemu:ADDRESS (a D-Bus address such as unix:path=/tmp/bus).
    #[arg(long, default_value = "demo", value_parser = parse_source)]
    source: SourceChoice,
    /// QEMU: the console to show, or `all` (one window per graphic console).
    #[cfg(feature = "qemu")]
    #[arg(long, default_value = "0", value_parser = crate::qemu::parse_console)]
    console: crate::qemu::ConsoleChoice,
    /// QEMU: the pages of the guest's RAM (auto, 4k, hugetlb). With `--output kms`
    /// on Linux 6.11–6.15 QEMU's udmabufs are scanned out directly only when known
    /// to be 4 KiB pages (that kernel's udmabuf vmap reads hugetlb pages wrong).
    #[cfg(feature = "qemu")]
    #[arg(long, value_enum, default_value = "auto")]
    qemu_ram: crate::qemu::QemuRam,
    /// QEMU: do not offer shared memory (Unix.Map); pixels come over the socket.
    #[arg(long)]
    qemu_no_map: bool,
    /// QEMU: keys typed into the guest once the first frame is shown, e.g.
    /// `esc` or `f12,down,enter` (names or evdev codes).
    #[cfg(feature = "qemu")]
    #[arg(long, value_parser = crate::qemu::parse_keys)]
    send_keys: Option<crate::qemu::KeyList>,
    /// Rendering path.
    #[arg(long, value_enum, default_value = "auto")]
    gl: GlMode,
    /// Presenter for gl=on/auto (gl=off always uses shm).
    #[arg(long, value_enum, default_value = "auto")]
    present: PresentMode,
    /// Where to show the guest: auto, wayland, kms or kms:DEVICE.
    #[arg(long, default_value = "auto", value_parser = parse_output)]
    output: Output,
    /// Guest framebuffer size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    size: (u32, u32),
    /// Guest pixel format (XRGB8888, ARGB8888, XBGR8888, ABGR8888, RGB565, BGR888,
    /// RGB888, NV12).
    #[arg(long, default_value = "XRGB8888", value_parser = parse_format)]
    format: PixelFormat,
    /// Back guest RAM with 2 MiB hugetlb pages.
    #[arg(long)]
    hugetlb: bool,
    /// Extra bytes at the end of each guest row.
    #[arg(long, default_value_t = 0)]
    stride_padding: u32,
    /// The guest stores its picture bottom row first (GL style, y0_top = false).
    #[arg(long)]
    y0_bottom: bool,
    /// Describe the framebuffer as a scatter list of two guest ranges.
    #[arg(long)]
    scattered: bool,
    /// One guest framebuffer redrawn in place even where the display reads guest
    /// memory directly (zero copy, KMS): the guest may then overwrite a frame still
    /// being shown (tearing). For comparison; by default those paths double-buffer.
    #[arg(long)]
    single_buffer: bool,
    /// Stop after presenting this many frames (0: run until the window closes).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// Keep the window open after the last frame, until it is closed.
    #[arg(long)]
    hold: bool,
    /// Write the last presented picture to this PNG file.
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (width, height) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let parse = |value: &str| {
        value
            .parse::<u32>()
            .ok()
            .filter(|&value| (1..=16384).contains(&value))
            .ok_or_else(|| format!("{value:?} is not a size between 1 and 16384"))
    };
    Ok((parse(width)?, parse(height)?))
}

fn parse_format(text: &str) -> Result<PixelFormat, String> {
    PixelFormat::from_name(text).ok_or_else(|| format!("unknown format {text:?}"))
}

use crate::presenter::Error;

/// Whether the guest may draw its next frame now. A single buffer is redrawn in
/// place right after the frame callback (no release ever comes for a buffer that
/// stays attached); two wait for the display to let go of the back buffer.
fn may_step(presenter: &Presenter, guest: &DemoGuest) -> bool {
    guest.buffer_count() == 1 || presenter.may_draw_into(guest.back_buffer_id())
}

/// Options that only one frame source reads: given for the other, they are refused,
/// not ignored.
const DEMO_ONLY: [(&str, &str); 8] = [
    ("size", "--size"),
    ("format", "--format"),
    ("hugetlb", "--hugetlb"),
    ("stride_padding", "--stride-padding"),
    ("y0_bottom", "--y0-bottom"),
    ("scattered", "--scattered"),
    ("single_buffer", "--single-buffer"),
    ("hold", "--hold"),
];
const QEMU_ONLY: [(&str, &str); 4] = [
    ("console", "--console"),
    ("qemu_ram", "--qemu-ram"),
    ("qemu_no_map", "--qemu-no-map"),
    ("send_keys", "--send-keys"),
];

/// Checks what the options say before anything is opened: every option given works on
/// the chosen source, and the screenshot can be written where it is asked for.
fn check_args(args: &Args, matches: &ArgMatches) -> Result<(), Error> {
    let given = |id: &str| {
        matches!(
            matches.try_get_raw(id).map(|_| matches.value_source(id)),
            Ok(Some(ValueSource::CommandLine))
        )
    };
    let (source, others) = match args.source {
        SourceChoice::Demo => ("demo", &QEMU_ONLY[..]),
        SourceChoice::Qemu(_) => ("qemu", &DEMO_ONLY[..]),
    };
    if let Some((_, flag)) = others.iter().find(|(id, _)| given(id)) {
        let why = match args.source {
            SourceChoice::Demo => "it applies to --source qemu",
            SourceChoice::Qemu(_) => {
                "it sets up the built-in demo guest; a QEMU guest chooses its own mode, format \
                 and memory"
            }
        };
        return Err(
            format!("{flag} does not apply to --source {source}: {why}; leave it out").into(),
        );
    }
    if let Some(path) = &args.screenshot {
        check_writable(path)?;
    }
    Ok(())
}

/// Whether a PNG can be written at `path` (missing folders are made when it is).
fn check_writable(path: &std::path::Path) -> Result<(), Error> {
    let shown = path.display();
    if path.is_dir() {
        return Err(format!("--screenshot {shown}: is a directory; name a PNG file in it").into());
    }
    let mut folder = path.parent().unwrap_or(std::path::Path::new(""));
    while !folder.as_os_str().is_empty() && !folder.exists() {
        folder = folder.parent().unwrap_or(std::path::Path::new(""));
    }
    if folder.as_os_str().is_empty() {
        folder = std::path::Path::new(".");
    }
    if !folder.is_dir() {
        return Err(format!(
            "--screenshot {shown}: {} is not a directory; choose a path in a folder",
            folder.display()
        )
        .into());
    }
    rustix::fs::access(folder, rustix::fs::Access::WRITE_OK).map_err(|errno| {
        format!(
            "--screenshot {shown}: cannot write into {}: {errno}; choose a writable folder",
            folder.display()
        )
    })?;
    Ok(())
}

fn run() -> Result<(), Error> {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    check_args(&args, &matches)?;
    if let SourceChoice::Qemu(address) = &args.source {
        return run_qemu(&args, address);
    }
    let (width, height) = args.size;
    // Two guest buffers where the display may read guest memory directly (zero
    // copy, KMS); one, drawn in place, where gl=off copies it out anyway.
    let zero_copy_possible = args.gl != GlMode::Off && args.present != PresentMode::Shm;
    let kms = matches!(args.output, Output::Kms(_))
        || (args.output == Output::Auto && std::env::var_os("WAYLAND_DISPLAY").is_none());
    let buffering = if (zero_copy_possible || kms) && !args.single_buffer {
        Buffering::Double
    } else {
        Buffering::Single
    };
    let mut guest = DemoGuest::new(DemoConfig {
        width,
        height,
        format: args.format,
        stride_padding: args.stride_padding,
        y0_top: !args.y0_bottom,
        hugetlb: args.hugetlb.then_some(2 << 20),
        scattered: args.scattered,
        buffering,
    })?;
    let pins = PinManager::new(PinPolicy::default());
    println!(
        "viewer: kernel {}, pin: {:?}",
        pins.semantics().kernel,
        pins.semantics().longterm_pin
    );
    let output = match args.output.clone() {
        Output::Auto if std::env::var_os("WAYLAND_DISPLAY").is_none() => {
            println!("viewer: no WAYLAND_DISPLAY: output kms");
            Output::Kms(None)
        }
        Output::Auto => Output::Wayland,
        other => other,
    };
    if let Output::Kms(device) = output {
        return run_kms(&args, device.as_deref(), guest, pins);
    }
    let exporter = Exporter::new(guest.memory().clone(), pins);
    // Each guest buffer is exported once (buffer ids 1 and 2); presenters cache
    // their import by buffer id, so a flip costs no new import.
    let export_all = |purpose| -> Result<Vec<ExportedFramebuffer>, ExportError> {
        (0..guest.buffer_count() as usize)
            .map(|index| {
                exporter.export(
                    FIRST_BUFFER_ID + index as u64,
                    &guest.buffer_desc(index),
                    purpose,
                )
            })
            .collect()
    };
    let mut gl = args.gl;
    let exports = match gl {
        GlMode::Off => export_all(PinPurpose::CpuRead)?,
        GlMode::On => export_all(PinPurpose::Scanout)?,
        // A frame zero copy cannot take (over udmabuf's size limit, the budget) is
        // still shown by the CPU path, which needs no dma-buf.
        GlMode::Auto => match export_all(PinPurpose::Scanout) {
            Ok(exports) => exports,
            Err(why) => {
                println!("viewer: gl=on not possible ({why}); falling back to gl=off");
                gl = GlMode::Off;
                export_all(PinPurpose::CpuRead)?
            }
        },
    };
    let mappings: Vec<CpuMapping> = exports.iter().cloned().map(CpuMapping::new).collect();
    let export = &exports[0];
    println!(
        "viewer: {}x{} {} guest, {} buffer(s), CPU read path {:?}",
        width,
        height,
        args.format,
        guest.buffer_count(),
        mappings[0].path()?
    );

    let title = format!("guestfb demo guest {width}x{height} {}", args.format);
    let mut window = PresenterOptions::new(width, height);
    window.title = title;
    let mut presenter = match (gl, args.present) {
        (GlMode::Off, _) | (_, PresentMode::Shm) => Presenter::open_shm(&window)?,
        (GlMode::On, mode) => open_zero_copy(mode, export, &window)?,
        (GlMode::Auto, mode) => match open_zero_copy(mode, export, &window) {
            Ok(presenter) => presenter,
            Err(why) => {
                println!("viewer: gl=on not possible ({why}); falling back to gl=off");
                Presenter::open_shm(&window)?
            }
        },
    };
    println!("viewer: presenting with {}", presenter.name());

    let mut pending = vec![Rect::full(width, height)];
    // The guest is to draw its next frame as soon as the display lets go of the
    // buffer it draws into.
    let mut step_wanted = false;
    let mut stats = Stats::default();
    let started = Instant::now();
    stop_on_signals();
    loop {
        if stop_requested() {
            println!("viewer: stopped by a signal after {} frames", stats.frames);
            break;
        }
        let events = presenter.dispatch(Duration::from_millis(100))?;
        if events.contains(&PresenterEvent::Close) || presenter.is_closed() {
            println!("viewer: window closed");
            break;
        }
        if step_wanted && may_step(&presenter, &guest) {
            pending = guest.step();
            step_wanted = false;
        }
        let front = guest.front_index();
        let (export, mapping) = (&exports[front], &mappings[front]);
        let done = args.frames != 0 && stats.frames >= args.frames;
        let redraw = presenter.needs_redraw() && presenter.is_ready();
        if !redraw && (done || pending.is_empty() || !presenter.is_ready()) {
            if done && !args.hold {
                break;
            }
            continue;
        }
        if redraw && (done || pending.is_empty()) {
            // A resize: draw the current picture again; no new guest frame.
            if let Err(ShowError::Other(e)) = presenter.show(export, &[], &mut stats) {
                return Err(e);
            }
            continue;
        }
        match presenter.show(export, &pending, &mut stats) {
            Ok(false) => continue,
            Ok(true) => {
                stats.frames += 1;
                if args.frames != 0 && stats.frames == args.frames {
                    println!("viewer: presented {} frames", stats.frames);
                    if let Some(path) = &args.screenshot {
                        crate::presenter::save_screenshot(mapping, width, height, path)?;
                        println!("viewer: screenshot written to {}", path.display());
                    }
                }
                pending.clear();
                // The guest draws its next frame only once this one is shown and
                // the buffer it draws into is free (the back-pressure QEMU's
                // gl_block gives a real guest): now if the display allows, else
                // when a release arrives. After the last frame it stops: with one
                // buffer a zero-copy display shows guest memory live, so a further
                // step would appear on the next repaint.
                if args.frames == 0 || stats.frames < args.frames {
                    step_wanted = true;
                    if may_step(&presenter, &guest) {
                        pending = guest.step();
                        step_wanted = false;
                    }
                }
            }
            Err(ShowError::Import(why)) if args.gl == GlMode::Auto => {
                // gl=auto keeps running on the CPU path; the whole frame is new there.
                println!(
                    "viewer: {} failed ({why}); falling back to gl=off",
                    presenter.name()
                );
                presenter = Presenter::open_shm(&window)?;
                println!("viewer: presenting with {}", presenter.name());
                pending = vec![Rect::full(width, height)];
                step_wanted = false;
            }
            Err(ShowError::Import(why)) => {
                return Err(format!("{}: {why}", presenter.name()).into())
            }
            // A bad frame is logged; the last good picture stays up.
            Err(ShowError::Other(error)) if !presenter.is_zero_copy() => {
                eprintln!("viewer: frame {} not shown: {error}", guest.frame());
                pending = guest.step();
            }
            Err(ShowError::Other(error)) => return Err(error),
        }
    }
    if let (0, Some(path)) = (args.frames, &args.screenshot) {
        crate::presenter::save_screenshot(&mappings[guest.front_index()], width, height, path)?;
        println!("viewer: screenshot written to {}", path.display());
    }
    stats.print(started.elapsed());
    Ok(())
}

/// `--source qemu`: QEMU's console(s) in Wayland windows, or one on a KMS plane.
#[cfg(feature = "qemu")]
fn run_qemu(args: &Args, address: &str) -> Result<(), Error> {
    let output = match &args.output {
        Output::Auto if std::env::var_os("WAYLAND_DISPLAY").is_none() => {
            println!("viewer: no WAYLAND_DISPLAY: output kms");
            crate::qemu::QemuOutput::Kms(None)
        }
        Output::Auto | Output::Wayland => crate::qemu::QemuOutput::Wayland,
        Output::Kms(device) => crate::qemu::QemuOutput::Kms(device.clone()),
    };
    crate::qemu::run(crate::qemu::QemuArgs {
        output,
        ram: args.qemu_ram,
        gl: args.gl,
        present: args.present,
        frames: args.frames,
        screenshot: args.screenshot.clone(),
        address: address.to_owned(),
        console: args.console,
        map: !args.qemu_no_map,
        send_keys: args
            .send_keys
            .clone()
            .map(|keys| keys.0)
            .unwrap_or_default(),
    })
}

#[cfg(not(feature = "qemu"))]
fn run_qemu(_: &Args, _: &str) -> Result<(), Error> {
    Err("this viewer was built without the `qemu` feature".into())
}

/// Shows the guest on a KMS plane: each guest buffer is exported for scanout
/// (long-term pinned) and the plane flips between the two; the presenter copies only
/// when the plane cannot take the guest's format or a kernel quirk requires it.
///
/// `present` returns after the page-flip event, when the plane no longer scans out
/// the other buffer: the guest then draws the next frame into that one.
#[cfg(feature = "kms")]
fn run_kms(
    args: &Args,
    device: Option<&std::path::Path>,
    mut guest: DemoGuest,
    pins: PinManager,
) -> Result<(), Error> {
    use guestfb::present::kms::{Card, KmsPresenter};

    let card = match device {
        Some(path) => Card::open(path)?,
        None => Card::open_first()?,
    };
    let mut presenter = KmsPresenter::new(card, None, &pins)?;
    let (mode_width, mode_height) = presenter.mode_size();
    println!(
        "viewer: KMS {} on {} ({mode_width}x{mode_height})",
        presenter.connector_name(),
        presenter.card().path().display()
    );
    let exporter = Exporter::new(guest.memory().clone(), pins);
    let mut exports = Vec::new();
    for index in 0..guest.buffer_count() as usize {
        exports.push(exporter.export(
            FIRST_BUFFER_ID + index as u64,
            &guest.buffer_desc(index),
            PinPurpose::Scanout,
        )?);
    }
    let started = Instant::now();
    let mut frames = 0;
    stop_on_signals();
    while (args.frames == 0 || frames < args.frames) && !stop_requested() {
        let export = &exports[guest.front_index()];
        match presenter.present(export) {
            Ok(status) if frames == 0 => println!("viewer: first frame: {status:?}"),
            Ok(_) => {}
            // A bad frame is logged; the last good picture stays up.
            Err(error) => eprintln!("viewer: frame {} not shown: {error}", guest.frame()),
        }
        frames += 1;
        // The flip to `export` completed: the other buffer is off the plane and the
        // guest may draw into it. (With one buffer this redraws the one on screen.)
        if args.frames == 0 || frames < args.frames {
            guest.step();
        }
    }
    println!("viewer: presented {frames} frames");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "viewer: {frames} frames in {seconds:.2} s ({:.1} fps)",
        frames as f64 / seconds.max(1e-9)
    );
    presenter.shutdown()?;
    Ok(())
}

#[cfg(not(feature = "kms"))]
fn run_kms(
    _: &Args,
    _: Option<&std::path::Path>,
    _: DemoGuest,
    _: PinManager,
) -> Result<(), Error> {
    Err("this viewer was built without the `kms` feature".into())
}
