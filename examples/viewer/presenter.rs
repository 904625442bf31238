//! The viewer's presenters: gl=off (wl_shm copy), gl=on (EGL import + our GL
//! renderer) and linux-dmabuf passthrough behind one small interface, and how the
//! zero-copy one is chosen. Shared by the demo and the QEMU source.

use std::time::Duration;

use clap::ValueEnum;
use guestfb::export::ExportedFramebuffer;
use guestfb::import::convert::{Dest, DestFormat};
use guestfb::import::CpuMapping;
#[cfg(feature = "wayland-egl")]
use guestfb::present::wayland::EglPresenter;
pub use guestfb::present::wayland::Presenter as WindowPresenter;
use guestfb::present::wayland::{
    DmaBufPresenter, PresenterEvent, PresenterOptions, ShmPresenter, Shown,
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

/// The presenter showing the guest: one of three paths, driven through their one
/// interface ([`WindowPresenter`], by `Deref`); the wl_shm one also shows pixels that are
/// not an export (QEMU's CPU surfaces).
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
    /// The window, whichever path draws it.
    fn window(&self) -> &(dyn WindowPresenter + 'static) {
        match self {
            Self::Shm(p) => p.as_ref(),
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.as_ref(),
            Self::Passthrough(p) => p.as_ref(),
        }
    }

    fn window_mut(&mut self) -> &mut (dyn WindowPresenter + 'static) {
        match self {
            Self::Shm(p) => p.as_mut(),
            #[cfg(feature = "wayland-egl")]
            Self::Gl(p) => p.as_mut(),
            Self::Passthrough(p) => p.as_mut(),
        }
    }

    pub fn open_shm(options: &PresenterOptions) -> Result<Self, Error> {
        Ok(Self::Shm(Box::new(ShmPresenter::connect(options.clone())?)))
    }

    pub fn dispatch(&mut self, timeout: Duration) -> Result<Vec<PresenterEvent>, Error> {
        Ok(self.window_mut().dispatch(Some(timeout))?)
    }

    /// Shows the guest's frame with `damage` (picture coordinates). Returns false when
    /// nothing could be presented yet (every shm buffer held).
    pub fn show(
        &mut self,
        export: &ExportedFramebuffer,
        damage: &[Rect],
        stats: &mut Stats,
    ) -> Result<bool, ShowError> {
        match self.window_mut().show(export, damage) {
            Ok(Shown::NotNow) => Ok(false),
            Ok(Shown::Presented {
                bytes_copied,
                copy_time,
            }) => {
                stats.bytes += bytes_copied;
                stats.blit_time += copy_time;
                Ok(true)
            }
            Err(guestfb::present::wayland::ShowError::Refused(why)) => {
                Err(ShowError::Import(why.to_string()))
            }
            Err(guestfb::present::wayland::ShowError::Failed(error)) => {
                Err(ShowError::Other(error))
            }
        }
    }
}

impl std::ops::Deref for Presenter {
    type Target = dyn WindowPresenter;

    fn deref(&self) -> &Self::Target {
        self.window()
    }
}

impl std::ops::DerefMut for Presenter {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.window_mut()
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
    // Planes the dma-buf interfaces cannot take are refused here, before any window,
    // not by the compositor's protocol error.
    guestfb::import::dmabuf::with_export_image(export, |_, _| ()).map_err(|e| e.to_string())?;
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
    window: &PresenterOptions,
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
