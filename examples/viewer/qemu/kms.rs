//! `--source qemu --output kms`: one QEMU console on a KMS plane, no compositor.
//!
//! QEMU's dma-bufs (a gl=on `ScanoutDMABUF`: a virtio-gpu blob's udmabuf, the guest's
//! own pages, or a texture QEMU exported) are validated like any guest framebuffer and
//! put on the plane as they are; the presenter copies only where the plane cannot take
//! them (format, bottom-up without REFLECT_Y, the hugetlb vmap quirk). QEMU's update
//! calls are answered after the page flip that shows them, so the guest never runs
//! ahead of the screen. The guest is told the mode's size (`SetUIInfo`).
//!
//! CPU surfaces (pixel data, QEMU's unsealed memfds: `-display dbus,gl=off`, std VGA)
//! have no dma-buf for the plane: they are refused with a line saying so, and their
//! updates answered at once; a sealed memfd surface is exported as a udmabuf and shown.
//! There is no input on this output (no seat); `--send-keys` still types into the guest.
//!
//! `--screenshot` reads the CRTC back through a writeback connector where the card has
//! one (vkms), cropped to the picture's place on it; elsewhere it reads the buffer shown.

use std::path::Path;
use std::time::{Duration, Instant};

use guestfb::export::ExportedFramebuffer;
use guestfb::import::CpuMapping;
use guestfb::present::kms::{
    Card, KmsPresenter, PresentStatus, ScanoutPath, Writeback, WritebackTarget,
};
use guestfb::source::qemu::{FrameToken, QemuAddress, QemuDisplay, QemuEvent, Recv};

use super::imports::{process_cpu_time, FramePath, HeadStats, Imports};
use super::keys::type_keys;
use super::{attach, ui_info, ConsoleChoice, QemuArgs};
use crate::presenter::{
    save_screenshot, stop_on_signals, stop_requested, write_png, Error, GlMode, PresentMode,
};

/// What the plane is asked to show.
struct Picture {
    export: ExportedFramebuffer,
    path: FramePath,
}

/// Shows one of QEMU's consoles on `device` (the first card with a connected connector
/// when `None`) until `--frames`, a signal, or QEMU going away (an error).
pub fn run(args: &QemuArgs, device: Option<&Path>) -> Result<(), Error> {
    if args.gl == GlMode::Off {
        return Err(
            "--gl off copies into a Wayland window; --output kms scans QEMU's \
                    dma-bufs out as they are: drop --gl off, or use --output wayland"
                .into(),
        );
    }
    if args.present != PresentMode::Auto {
        return Err(format!(
            "--present {:?} chooses a Wayland presenter; --output kms has one (the plane): \
             drop --present",
            args.present
        )
        .into());
    }
    let display = QemuDisplay::connect(QemuAddress::parse(&args.address))
        .map_err(|e| format!("cannot reach QEMU's D-Bus display: {e}"))?;
    let vm = display.vm_name().unwrap_or_else(|_| "QEMU".to_owned());
    let id = match args.console {
        ConsoleChoice::One(id) => id,
        ConsoleChoice::All => match display.graphic_consoles()?.as_slice() {
            [only] => only.id,
            [] => return Err("QEMU has no graphic console".into()),
            many => {
                return Err(format!(
                    "--output kms shows one console and {vm} has {}: pick one with --console N",
                    many.len()
                )
                .into())
            }
        },
    };
    let mut imports = Imports::new(id, args.ram);
    let card = match device {
        Some(path) => Card::open(path)?,
        None => Card::open_first()?,
    };
    let mut presenter = KmsPresenter::new(card, None, imports.pins())?;
    let mode = presenter.mode_size();
    println!(
        "viewer: KMS {} on {} ({}x{})",
        presenter.connector_name(),
        presenter.card().path().display(),
        mode.0,
        mode.1
    );
    let (console, info, listener) = attach(&display, id, args)?;
    println!(
        "viewer: QEMU console {id} ({}, {}x{}) attached, output kms",
        info.label, info.width, info.height
    );
    // The guest may pick the screen's mode.
    if let Err(error) = console.set_ui_info(ui_info(mode.0, mode.1)) {
        println!("viewer: console {id}: screen size not passed to the guest: {error}");
    }

    let mut shown: Option<Picture> = None;
    let mut dirty = false;
    let mut waiting: Vec<FrameToken> = Vec::new();
    let mut waiting_since: Option<Instant> = None;
    let mut cpu_surface_told = false;
    let mut keys_sent = args.send_keys.is_empty();
    let mut stats = HeadStats::default();
    let started = Instant::now();
    stop_on_signals();
    loop {
        let mut event = match listener.recv_timeout(Duration::from_millis(100)) {
            Recv::Event(event) => Some(event),
            Recv::Timeout => None,
            Recv::Closed => return Err(format!("QEMU's listener for console {id} ended").into()),
        };
        // Every event that is already queued, then one present for all of them.
        while let Some(next) = event.take().or_else(|| listener.try_recv()) {
            match next {
                QemuEvent::ScanoutDmaBuf {
                    image,
                    method,
                    exporter,
                } => {
                    let size = (image.visible.width, image.visible.height);
                    let old_size = shown.as_ref().map(|p| {
                        let visible = p.export.layout().visible();
                        (visible.width, visible.height)
                    });
                    if old_size.is_some_and(|old| old != size) {
                        // A mode change: the old buffers are gone for good. The
                        // presenter keeps what is on the plane until the next flip.
                        imports.clear();
                    }
                    match imports.dmabuf(image, method, &exporter) {
                        Ok((export, _)) => {
                            shown = Some(Picture {
                                export,
                                path: FramePath::DmabufImport,
                            });
                            dirty = true;
                        }
                        Err(error) => {
                            eprintln!(
                                "viewer: console {id}: QEMU's dma-buf scanout refused: {error}"
                            )
                        }
                    }
                }
                QemuEvent::UpdateDmaBuf { ack, .. } => {
                    dirty = true;
                    waiting_since.get_or_insert_with(Instant::now);
                    waiting.push(ack);
                }
                QemuEvent::Scanout { frame } | QemuEvent::ScanoutMap { frame } => {
                    imports.clear();
                    match imports.memfd(&frame) {
                        Ok(export) => {
                            shown = Some(Picture {
                                export,
                                path: FramePath::MemfdExport,
                            });
                            dirty = true;
                        }
                        Err(why) => {
                            shown = None;
                            if !cpu_surface_told {
                                cpu_surface_told = true;
                                println!(
                                    "viewer: console {id}: QEMU's surface is CPU memory ({why}); \
                                     --output kms shows only dma-bufs (QEMU -display dbus,gl=on): \
                                     not shown until QEMU sends one (--output wayland copies it)"
                                );
                            }
                        }
                    }
                }
                QemuEvent::Update { ack, .. } | QemuEvent::UpdateMap { ack, .. } => {
                    if matches!(&shown, Some(p) if p.path == FramePath::MemfdExport) {
                        dirty = true;
                        waiting_since.get_or_insert_with(Instant::now);
                        waiting.push(ack);
                    } else {
                        // Not shown on this output: QEMU must not wait for it.
                        ack.complete();
                    }
                }
                // The plane keeps its last picture: QEMU 10's gl=on console disables
                // between every blob scanout and its update, which shows it again.
                QemuEvent::Disable => {}
                // No cursor plane and no pointer on this output.
                QemuEvent::CursorDefine { .. } | QemuEvent::MouseSet { .. } => {}
                QemuEvent::Rejected { method, error } => {
                    eprintln!("viewer: console {id}: QEMU's {method} refused: {error}")
                }
                QemuEvent::Disconnected { reason } => {
                    return Err(format!("QEMU disconnected (console {id}): {reason}").into())
                }
            }
        }
        if let (true, Some(picture)) = (dirty, &shown) {
            dirty = false;
            match presenter.present(&picture.export) {
                Ok(status) => {
                    if stats.frames.frames == 0 {
                        println!("viewer: console {id}: first frame shown: {status:?}");
                    }
                    let path = match status.path {
                        ScanoutPath::Direct => picture.path,
                        ScanoutPath::Copy(_) => {
                            let visible = picture.export.layout().visible();
                            stats.frames.bytes += u64::from(visible.width * visible.height * 4);
                            FramePath::Copy
                        }
                    };
                    stats.presented(path);
                }
                // A bad frame is logged; the last good picture stays up.
                Err(error) => eprintln!("viewer: console {id}: frame not shown: {error}"),
            }
            // `present` returned after the page flip: the picture is on screen.
            for ack in waiting.drain(..) {
                ack.complete();
            }
            if let Some(since) = waiting_since.take() {
                stats.latencies.push(since.elapsed());
            }
        } else if shown.is_none() {
            // Nothing this output can show: QEMU must not wait for it.
            for ack in waiting.drain(..) {
                ack.complete();
            }
            waiting_since = None;
        }
        if stop_requested() {
            println!("viewer: stopped by a signal");
            break;
        }
        if args.frames != 0 && stats.frames.frames >= args.frames {
            println!("viewer: presented {} frames", args.frames);
            break;
        }
        if !keys_sent && stats.frames.frames > 0 {
            keys_sent = true;
            type_keys(&console, &args.send_keys)?;
        }
    }
    if let Some(path) = &args.screenshot {
        screenshot(&presenter, shown.as_ref(), path)?;
        println!(
            "viewer: console {id}: screenshot written to {}",
            path.display()
        );
    }
    let cpu = process_cpu_time();
    stats.print(id, &imports, "kms", started.elapsed(), cpu);
    drop(listener);
    presenter.shutdown()?;
    Ok(())
}

/// Writes what the plane shows to `path`: the CRTC read back by writeback and cropped
/// to the picture's rectangle, or (no writeback connector) the buffer shown.
fn screenshot(presenter: &KmsPresenter, shown: Option<&Picture>, path: &Path) -> Result<(), Error> {
    let Some(status) = presenter.status() else {
        return Err("--screenshot: nothing was shown on the plane".into());
    };
    match Writeback::find(presenter.card()) {
        Ok(writeback) => {
            let rgb = read_back(presenter, &writeback, status)?;
            let dst = status.placement.dst;
            write_png(path, dst.width, dst.height, &rgb)
        }
        Err(why) => {
            let picture = shown.ok_or("--screenshot: the display is off")?;
            println!(
                "viewer: no writeback connector on {} ({why}): screenshot of the buffer shown",
                presenter.card().path().display()
            );
            let visible = picture.export.layout().visible();
            let mapping = CpuMapping::new(picture.export.clone());
            save_screenshot(&mapping, visible.width, visible.height, path)
        }
    }
}

/// The picture's rectangle on the CRTC as RGB, through one writeback job.
fn read_back(
    presenter: &KmsPresenter,
    writeback: &Writeback,
    status: &PresentStatus,
) -> Result<Vec<u8>, Error> {
    let (width, height) = presenter.mode_size();
    let target = WritebackTarget::dumb(presenter.card(), width, height)?;
    writeback.capture(
        presenter.card(),
        presenter.crtc(),
        &target,
        Duration::from_secs(20),
    )?;
    let stride = target.stride() as usize;
    let bytes = target
        .read_dumb()?
        .ok_or("a dumb writeback target has bytes")?;
    let dst = status.placement.dst;
    let mut rgb = Vec::with_capacity(dst.width as usize * dst.height as usize * 3);
    for y in dst.y..dst.y + dst.height {
        let row = &bytes[y as usize * stride..];
        for x in dst.x..dst.x + dst.width {
            // XRGB8888, little endian: B, G, R, X.
            let pixel = &row[x as usize * 4..x as usize * 4 + 4];
            rgb.extend_from_slice(&[pixel[2], pixel[1], pixel[0]]);
        }
    }
    Ok(rgb)
}
