//! Attaches to a running QEMU (`-display dbus`), waits for the first picture and writes
//! it to a PNG. CPU frames (pixel data, QEMU's surface memfd) are read as they are; a
//! dma-buf scanout (a virtio-gpu blob's udmabuf, or gl=on) is validated against its
//! size and read through its mmap inside `DMA_BUF_IOCTL_SYNC`.
//!
//! ```text
//! cargo run --example qemu_dump -- --address unix:path=/tmp/bus out.png
//! cargo run --example qemu_dump -- out.png            # session bus
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use guestfb::source::qemu::{ListenerOptions, QemuAddress, QemuDisplay, QemuEvent, Recv};

/// Dump the first frame of a QEMU D-Bus display to a PNG.
#[derive(Parser, Debug)]
struct Args {
    /// D-Bus address of the bus QEMU is on (default: the session bus).
    #[arg(long, default_value = "session")]
    address: String,
    /// Console id (`/org/qemu/Display1/Console_N`).
    #[arg(long, default_value_t = 0)]
    console: u32,
    /// Take the pixels over the socket instead of QEMU's shared memory.
    #[arg(long)]
    no_map: bool,
    /// Seconds to wait for a picture.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Output file.
    output: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let display = QemuDisplay::connect(QemuAddress::parse(&args.address))?;
    for console in display.consoles()? {
        eprintln!(
            "console {}: {} head {} {:?} {}x{} {:?}",
            console.id,
            console.label,
            console.head,
            console.kind,
            console.width,
            console.height,
            console.interfaces
        );
    }
    let options = ListenerOptions {
        map: !args.no_map,
        dmabuf2: false,
    };
    let listener = display.console(args.console)?.attach(options)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let frame = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match listener.recv_timeout(left) {
            Recv::Event(QemuEvent::Scanout { frame } | QemuEvent::ScanoutMap { frame }) => {
                break frame
            }
            Recv::Event(QemuEvent::ScanoutDmaBuf { image, method, .. }) => {
                return dump_dmabuf(image, method, &args.output)
            }
            Recv::Event(QemuEvent::Disconnected { reason }) => {
                return Err(format!("QEMU disconnected: {reason}").into())
            }
            Recv::Event(other) => eprintln!("event: {other:?}"),
            Recv::Timeout | Recv::Closed => return Err("no picture from QEMU in time".into()),
        }
    };
    let frame = frame.lock();
    let file = std::fs::File::create(&args.output)?;
    let mut encoder = png::Encoder::new(file, frame.width(), frame.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&frame.to_rgb())?;
    eprintln!(
        "wrote {} ({}x{} {}, {})",
        args.output.display(),
        frame.width(),
        frame.height(),
        frame.format(),
        if frame.is_shared_memory() {
            "shared memory"
        } else {
            "pixel data"
        }
    );
    Ok(())
}

/// Reads a single-buffer dma-buf scanout through the CPU and writes its visible rect.
fn dump_dmabuf(
    image: guestfb::import::dmabuf::DmaBufImage<std::os::fd::OwnedFd>,
    method: &str,
    output: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use guestfb::export::ExportedFramebuffer;
    use guestfb::import::convert::{Dest, DestFormat};
    use guestfb::import::CpuMapping;
    use guestfb::rect::Rect;

    let desc = image.framebuffer_desc();
    let (format, visible) = (image.format, image.visible);
    let fd = image
        .planes
        .into_iter()
        .next()
        .ok_or("a dma-buf scanout without planes")?
        .fd;
    let dmabuf = guestfb::sys::dmabuf::DmaBuf::from_fd(fd)?;
    let export = ExportedFramebuffer::from_peer_dmabuf(
        0,
        dmabuf,
        &desc,
        guestfb::export::PeerPages {
            longterm: false,
            large_folios: None,
        },
    )?;
    let (width, height) = (visible.width, visible.height);
    let mut pixels = vec![0u8; width as usize * height as usize * 4];
    CpuMapping::new(export).blit(
        &mut Dest {
            data: &mut pixels,
            stride: width as usize * 4,
            format: DestFormat::Xrgb8888,
        },
        &[Rect::full(width, height)],
    )?;
    let rgb: Vec<u8> = pixels
        .chunks_exact(4)
        .flat_map(|bgrx| [bgrx[2], bgrx[1], bgrx[0]])
        .collect();
    let mut encoder = png::Encoder::new(std::fs::File::create(output)?, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    eprintln!(
        "wrote {} ({width}x{height} {format}, dma-buf from {method})",
        output.display(),
    );
    Ok(())
}
