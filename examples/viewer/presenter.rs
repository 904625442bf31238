//! The viewer's presenters: gl=off (wl_shm copy), gl=on (EGL import + our GL
//! renderer) and linux-dmabuf passthrough behind one small interface, and how the
//! zero-copy one is chosen. Shared by the demo and the QEMU source.

use std::time::{Duration, Instant};

use clap::ValueEnum;
use guestfb::export::ExportedFramebuffer;
use guestfb::import::convert::{Dest, DestFormat};
use guestfb::import::CpuMapping;
#[cfg(feature = "wayland-egl")]
use guestfb::present::wayland::EglPresenter;
use guestfb::present::wayland::{
    DmaBufPresenter, PresenterEvent, PresenterOptions, ShmPresenter, WindowOptions,
};
use guestfb::rect::Rect;

pub type Error = Box<dyn std::error::Error>;

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM end the run like a closed window: the screenshot is
/// written and the counters are printed (see [`stop_requested`]).
pub fn stop_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGINT or SIGTERM arrived since [`stop_on_signals`].
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which rendering path shows the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GlMode {
    /// CPU copy of the damaged rectangles into wl_shm buffers.
    Off,
    /// Zero-copy EGL import of the dma-buf.
    On,
    /// gl=on where it works, else gl=off.
    Auto,
}

/// Which presenter shows the guest (with `--gl on|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresentMode {
    /// The dma-buf goes to the compositor as a linux-dmabuf buffer (no GL of ours).
    Passthrough,
    /// The dma-buf is imported through EGL and drawn by our GL renderer.
    Gl,
    /// CPU copy into wl_shm (gl=off).
    Shm,
    /// Passthrough where the compositor offers the format, else gl, else shm.
    Auto,
}

/// The presenter showing the guest: one of three paths with one small interface.
pub enum Presenter {
    /// gl=off: damaged rectangles copied into wl_shm buffers.
    Shm(Box<ShmPresenter>),
    /// gl=on: EGL import + our GL renderer into an EGL window.
    #[cfg(feature = "wayland-egl")]
    Gl(Box<EglPresenter>),
    /// gl=on, no GL of ours: the dma-buf handed to the compositor.
    Passthrough(Box<DmaBufPresenter>),
}

/// Why a frame could not be shown.
pub enum ShowError {
    /// The zero-copy path cannot show this export (import refused, format not
    /// offered…): the CPU path can.
    Import(String),
    /// Anything else (connection lost, a bad frame on the CPU path).
    Other(Error),
}

impl Presenter {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Shm(_) => "gl=off (wl_shm copy)",
            #[cfg(feature = "wayland-egl")]
            Self::Gl(_) => "gl=on (EGL import, GL renderer)",
            Self::Passthrough(_) => "gl=on (linux-dmabuf passthrough)",
        }
    }

    /// The Wayland connection's fd, to poll.
    pub fn connection_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Shm(p) => p.connection_fd(),
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.connection_fd(),
            Self::Passthrough(p) => p.connection_fd(),
        }
    }

    /// Drops a cached import of `buffer_id` (its buffer is gone).
    pub fn forget(&mut self, buffer_id: u64) {
        match self {
            Self::Shm(_) => {}
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => {
                p.forget(buffer_id);
            }
            Self::Passthrough(p) => {
                p.forget(buffer_id);
            }
        }
    }

    pub fn is_zero_copy(&self) -> bool {
        !matches!(self, Self::Shm(_))
    }

    /// Whether the guest may draw into buffer `buffer_id` now: the display no longer
    /// reads it. Shm copies each frame out; the EGL presenter's `present` returns
    /// after its GL draw finished (glFinish); passthrough waits for the compositor's
    /// `wl_buffer.release`.
    pub fn may_draw_into(&self, buffer_id: u64) -> bool {
        match self {
            Self::Passthrough(p) => p.is_released(buffer_id),
            _ => true,
        }
    }

    pub fn open_shm(width: u32, height: u32, title: &str) -> Result<Self, Error> {
        let mut options = PresenterOptions::new(width, height);
        options.title = title.to_owned();
        Ok(Self::Shm(Box::new(ShmPresenter::connect(options)?)))
    }

    pub fn dispatch(&mut self, timeout: Duration) -> Result<Vec<PresenterEvent>, Error> {
        Ok(match self {
            Self::Shm(p) => p.dispatch(Some(timeout))?,
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.dispatch(Some(timeout))?,
            Self::Passthrough(p) => p.dispatch(Some(timeout))?,
        })
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Self::Shm(p) => p.is_closed(),
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.is_closed(),
            Self::Passthrough(p) => p.is_closed(),
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Self::Shm(p) => p.is_ready(),
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.is_ready(),
            Self::Passthrough(p) => p.is_ready(),
        }
    }

    /// Whether the window needs drawing without a new guest frame (a resize).
    pub fn needs_redraw(&self) -> bool {
        match self {
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.needs_redraw(),
            _ => false,
        }
    }

    /// Shows the guest's frame with `damage`. Returns false when nothing could be
    /// presented yet (every shm buffer held).
    pub fn show(
        &mut self,
        export: &ExportedFramebuffer,
        mapping: &CpuMapping,
        damage: &[Rect],
        stats: &mut Stats,
    ) -> Result<bool, ShowError> {
        match self {
            Self::Shm(presenter) => {
                let Some(mut frame) = presenter
                    .next_buffer()
                    .map_err(|e| ShowError::Other(e.into()))?
                else {
                    return Ok(false);
                };
                // A fresh or stale buffer needs more than this frame's damage.
                let repair = frame.repair_rects(damage);
                let stride = frame.stride() as usize;
                let blit_start = Instant::now();
                let blit = mapping
                    .blit(
                        &mut Dest {
                            data: frame.pixels(),
                            stride,
                            format: DestFormat::Xrgb8888,
                        },
                        &repair,
                    )
                    .map_err(|e| ShowError::Other(e.into()))?;
                stats.blit_time += blit_start.elapsed();
                stats.bytes += blit.bytes;
                frame
                    .present(damage)
                    .map_err(|e| ShowError::Other(e.into()))?;
                Ok(true)
            }
            #[cfg(feature = "wayland-egl")]
            Self::Gl(presenter) => match presenter.present(Some(export)) {
                Ok(shown) => Ok(shown),
                Err(e) if e.is_import_error() => Err(ShowError::Import(e.to_string())),
                Err(e) => Err(ShowError::Other(e.into())),
            },
            Self::Passthrough(presenter) => {
                // The guest's damage is in picture coordinates; the wl_buffer's in
                // memory rows (a bottom-up guest is flipped by the buffer transform).
                let layout = export.layout();
                let height = layout.height();
                let rows: Vec<Rect> = damage
                    .iter()
                    .filter_map(|r| r.clip(layout.width(), height))
                    .map(|r| match layout.y0_top() {
                        true => r,
                        false => Rect {
                            y: height - r.y - r.height,
                            ..r
                        },
                    })
                    .collect();
                match presenter.present(export, &rows) {
                    Ok(shown) => Ok(shown),
                    Err(guestfb::present::wayland::PassthroughError::Wayland(e)) => {
                        Err(ShowError::Other(e.into()))
                    }
                    Err(e) => Err(ShowError::Import(e.to_string())),
                }
            }
        }
    }
}

/// Which zero-copy presenter `mode` can use for `export`, decided before any window
/// opens (trial windows flicker, and closing them crashed weston 14's kiosk shell):
/// passthrough if the compositor lists the format and modifier for linux-dmabuf, gl
/// if EGL can import it. `Err` says why neither.
pub fn choose_zero_copy(
    mode: PresentMode,
    export: &ExportedFramebuffer,
) -> Result<PresentMode, String> {
    let layout = export.layout();
    let passthrough = || -> Result<PresentMode, String> {
        let conn = wayland_client::Connection::connect_to_env()
            .map_err(|e| format!("passthrough: {e}"))?;
        let offered = guestfb::present::wayland::compositor_dmabuf_formats(&conn)
            .map_err(|e| format!("passthrough: {e}"))?;
        let fourcc = layout.format().fourcc() as u32;
        let modifier = layout.modifier().raw();
        if offered.iter().any(|&(f, m)| f == fourcc && m == modifier) {
            Ok(PresentMode::Passthrough)
        } else {
            Err(format!(
                "passthrough: the compositor does not offer {} as a dma-buf",
                layout.format()
            ))
        }
    };
    #[cfg(feature = "wayland-egl")]
    let gl = || -> Result<PresentMode, String> {
        // Mesa decides importability the same way for the headless display and the
        // window's: ask the headless one, before there is a window.
        let importer =
            guestfb::import::egl::EglImporter::headless().map_err(|e| format!("gl: {e}"))?;
        guestfb::import::dmabuf::with_export_image(export, |image, _| importer.check(image))
            .map_err(|e| format!("gl: {e}"))?
            .map_err(|e| format!("gl: {e}"))?;
        Ok(PresentMode::Gl)
    };
    #[cfg(not(feature = "wayland-egl"))]
    let gl = || -> Result<PresentMode, String> {
        Err("gl: built without the wayland-egl feature".to_owned())
    };
    match mode {
        PresentMode::Passthrough => passthrough(),
        PresentMode::Gl => gl(),
        PresentMode::Shm => Err("shm asked for".to_owned()),
        PresentMode::Auto => passthrough().or_else(|why_not| {
            println!("viewer: {why_not}; trying gl");
            gl()
        }),
    }
}

/// Opens the zero-copy presenter chosen by [`choose_zero_copy`].
pub fn open_zero_copy(
    mode: PresentMode,
    export: &ExportedFramebuffer,
    window: &WindowOptions,
) -> Result<Presenter, String> {
    match choose_zero_copy(mode, export)? {
        PresentMode::Passthrough => DmaBufPresenter::connect(window.clone())
            .map(|presenter| Presenter::Passthrough(Box::new(presenter)))
            .map_err(|e| format!("passthrough: {e}")),
        #[cfg(feature = "wayland-egl")]
        PresentMode::Gl => EglPresenter::connect(window.clone())
            .map(|presenter| Presenter::Gl(Box::new(presenter)))
            .map_err(|e| format!("gl: {e}")),
        other => Err(format!("{other:?} is not a zero-copy presenter")),
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Frames presented.
    pub frames: u64,
    /// Bytes the CPU copied to show them.
    pub bytes: u64,
    /// Time spent copying.
    pub blit_time: Duration,
}

impl Stats {
    pub fn print(&self, wall: Duration) {
        if self.frames == 0 {
            return;
        }
        println!(
            "viewer: {} frames in {:.2} s ({:.1} fps), {:.0} bytes copied per frame, \
             {:.3} ms blit per frame",
            self.frames,
            wall.as_secs_f64(),
            self.frames as f64 / wall.as_secs_f64(),
            self.bytes as f64 / self.frames as f64,
            self.blit_time.as_secs_f64() * 1e3 / self.frames as f64,
        );
    }
}

/// Writes an export's visible picture, as the viewer shows it, to a PNG file.
pub fn save_screenshot(
    mapping: &CpuMapping,
    width: u32,
    height: u32,
    path: &std::path::Path,
) -> Result<(), Error> {
    let stride = width as usize * 4;
    let mut pixels = vec![0u8; stride * height as usize];
    mapping.blit(
        &mut Dest {
            data: &mut pixels,
            stride,
            format: DestFormat::Xrgb8888,
        },
        &[Rect::full(width, height)],
    )?;
    let rgb: Vec<u8> = pixels
        .chunks_exact(4)
        .flat_map(|bgrx| [bgrx[2], bgrx[1], bgrx[0]])
        .collect();
    write_png(path, width, height, &rgb)
}

/// Writes tightly packed 8-bit RGB triples to a PNG file, making its folder.
pub fn write_png(path: &std::path::Path, width: u32, height: u32, rgb: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let file =
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(rgb)?;
    Ok(())
}
