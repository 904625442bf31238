//! Wayland presenters (feature `wayland`).
//!
//! [`ShmPresenter`] shows CPU-written frames through `wl_shm`: an xdg-toplevel window whose
//! picture is scaled to fit with black bars, paced by frame callbacks, with per-buffer
//! damage tracking so only changed pixels are written and uploaded.
//!
//! `EglPresenter` (feature `wayland-egl`) imports the export's dma-buf as a GL texture
//! and draws it into an EGL window (gl=on). [`DmaBufPresenter`] hands the dma-buf to the
//! compositor as a `zwp_linux_dmabuf_v1` buffer (passthrough, no GL of ours).

use wayland_client::backend::WaylandError;

use std::path::PathBuf;

use crate::format::PixelFormat;

mod damage;
mod dmabuf;
#[cfg(feature = "wayland-egl")]
mod egl;
mod presenter;
mod shm;
mod window;

pub use damage::{fit_letterbox, Placement};
pub use dmabuf::{compositor_dmabuf_formats, DmaBufPresenter, PassthroughError};
#[cfg(feature = "wayland-egl")]
pub use egl::{EglPresenter, GlPresentError};
pub use presenter::{PresentPath, Presenter, ShowError, Shown};
pub use shm::{ShmFrame, ShmPresenter};

/// How a presenter's window is set up (every presenter takes the same options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenterOptions {
    /// The compositor's socket (e.g. `$XDG_RUNTIME_DIR/wayland-1`); `None`: the one
    /// `WAYLAND_DISPLAY` names.
    pub socket: Option<PathBuf>,
    /// Window title.
    pub title: String,
    /// xdg app id (desktop file name); `guestfb` by default.
    pub app_id: String,
    /// The picture's width in pixels: the window's width where the compositor lets the
    /// client choose, and the wl_shm presenter's frame width.
    pub width: u32,
    /// The picture's height in pixels (as `width`).
    pub height: u32,
    /// The wl_shm presenter's buffer format: `Xrgb8888` and `Argb8888` work everywhere;
    /// other single-plane formats where the compositor's wl_shm offers them. The gl=on
    /// presenters show each export in its own format and ignore this.
    pub format: PixelFormat,
    /// Most wl_shm buffers kept (2 or 3; 3 by default): the compositor may hold one
    /// while the caller writes another; a third absorbs a late release. The gl=on
    /// presenters ignore it.
    pub max_buffers: usize,
}

impl PresenterOptions {
    /// A `width` × `height` window titled `guestfb` (XRGB8888 frames on wl_shm).
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            socket: None,
            title: "guestfb".to_owned(),
            app_id: "guestfb".to_owned(),
            width,
            height,
            format: PixelFormat::Xrgb8888,
            max_buffers: 3,
        }
    }

    /// The same options for the compositor at `socket`.
    pub fn with_socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = Some(socket.into());
        self
    }
}

/// What happened to the window, reported by [`ShmPresenter::dispatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenterEvent {
    /// The window got its first size or a new one (logical pixels), or a new scale.
    Configure {
        /// Window width in logical pixels.
        width: u32,
        /// Window height in logical pixels.
        height: u32,
        /// Integer output scale of the window (device pixels per logical pixel).
        scale: u32,
    },
    /// The user or the compositor asked to close the window.
    Close,
    /// The compositor showed the last presented frame; a new one may be presented.
    FrameDone {
        /// The compositor's timestamp in milliseconds (arbitrary base).
        time_ms: u32,
    },
    /// The compositor let go of a guest buffer it was showing (`wl_buffer.release` of
    /// the passthrough presenter's buffer): the guest may draw into it again. Only
    /// [`DmaBufPresenter`] reports this; see [`DmaBufPresenter::is_released`].
    BufferReleased {
        /// The export's buffer id.
        buffer_id: u64,
        /// The export's generation.
        generation: u64,
    },
    /// A key was pressed or released while the window had keyboard focus
    /// ([`ShmPresenter`] only).
    Key {
        /// The Linux evdev key code (`KEY_ESC` = 1…), as `wl_keyboard.key` carries it.
        code: u32,
        /// Pressed (true) or released.
        pressed: bool,
    },
    /// The pointer moved over the picture ([`ShmPresenter`] only), in frame pixels: the
    /// letterbox placement and scale are undone; motion over the black bars is not
    /// reported.
    PointerMotion {
        /// Column in the frame (0..width).
        x: u32,
        /// Row in the frame (0..height).
        y: u32,
    },
    /// A pointer button was pressed or released ([`ShmPresenter`] only).
    Button {
        /// The Linux evdev button code (`BTN_LEFT` = 0x110…).
        code: u32,
        /// Pressed (true) or released.
        pressed: bool,
    },
    /// The vertical scroll wheel turned ([`ShmPresenter`] only).
    Axis {
        /// Wheel notches; negative scrolls up.
        vertical_steps: i32,
    },
}

/// Errors of the Wayland presenters.
#[derive(Debug, thiserror::Error)]
pub enum PresentError {
    /// No compositor could be reached.
    #[error("cannot connect to the Wayland compositor: {0} (is WAYLAND_DISPLAY set?)")]
    Connect(#[from] wayland_client::ConnectError),
    /// The socket given could not be opened.
    #[error("cannot open Wayland socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The compositor lacks a protocol the presenter needs.
    #[error("the compositor lacks {interface}: {reason}")]
    MissingGlobal {
        /// The protocol interface.
        interface: &'static str,
        /// What the binding reported.
        reason: String,
    },
    /// The connection to the compositor ended (it quit or crashed).
    #[error("lost the connection to the Wayland compositor: {0}")]
    ConnectionLost(std::io::Error),
    /// The compositor ended the connection with a protocol error.
    #[error("Wayland protocol error: {0}")]
    Protocol(String),
    /// The shared-memory pool could not be created or grown.
    #[error("wl_shm pool: {0}")]
    Pool(String),
    /// The frame format cannot be shown through wl_shm by this compositor.
    #[error("format {format} is not offered by the compositor's wl_shm ({reason})")]
    UnsupportedFormat {
        /// The format's DRM name.
        format: &'static str,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A frame size the presenter cannot use.
    #[error("frame size {width}x{height} is invalid (each side 1..=32768, stride fits i32)")]
    BadFrameSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
}

impl From<WaylandError> for PresentError {
    fn from(error: WaylandError) -> Self {
        match error {
            WaylandError::Io(io) => Self::ConnectionLost(io),
            WaylandError::Protocol(protocol) => Self::Protocol(protocol.to_string()),
        }
    }
}

impl From<wayland_client::DispatchError> for PresentError {
    fn from(error: wayland_client::DispatchError) -> Self {
        match error {
            wayland_client::DispatchError::Backend(backend) => backend.into(),
            other => Self::Protocol(other.to_string()),
        }
    }
}
