//! Errors of EGL import, each naming the call, the extension or the value.

use khronos_egl as egl;

use crate::format::{Modifier, PixelFormat};

use super::formats::{modifier_list, modifier_name};

/// Why the importer could not be built or a framebuffer could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum EglError {
    /// `libEGL.so.1` could not be loaded or lacks EGL 1.5.
    #[error("cannot load libEGL.so.1 with EGL 1.5: {0}")]
    Load(String),
    /// An EGL call failed.
    #[error("{call} failed: {error}")]
    Call {
        /// The EGL function.
        call: &'static str,
        /// What EGL reported.
        error: egl::Error,
    },
    /// An EGL client or display extension is missing.
    #[error("EGL extension {name} is missing (needed for {needed_for})")]
    MissingExtension {
        /// The extension name.
        name: &'static str,
        /// What guestfb needs it for.
        needed_for: &'static str,
    },
    /// A GL extension is missing on the context.
    #[error("GL extension {name} is missing (needed for {needed_for})")]
    MissingGlExtension {
        /// The extension name.
        name: &'static str,
        /// What guestfb needs it for.
        needed_for: &'static str,
    },
    /// An extension is advertised but its function is not exported.
    #[error("EGL/GL function {name} is advertised but eglGetProcAddress does not find it")]
    MissingFunction {
        /// The function name.
        name: &'static str,
    },
    /// No headless display could be opened.
    #[error("no headless EGL display: {reason}")]
    NoHeadlessDisplay {
        /// What was tried and why it failed.
        reason: String,
    },
    /// `eglChooseConfig` found nothing suitable.
    #[error("no EGL config with {what}")]
    NoConfig {
        /// The attributes asked for.
        what: &'static str,
    },
    /// The display does not import this format at all.
    #[error("{format} ({fourcc}) is not importable on this EGL display; it imports {supported}")]
    UnsupportedFormat {
        /// The format asked for.
        format: PixelFormat,
        /// Its fourcc as text.
        fourcc: String,
        /// The fourccs the display does import, as text.
        supported: String,
    },
    /// The display imports the format but not with this modifier.
    #[error(
        "{format} with modifier {} is not importable on this EGL display; \
         it imports {format} with {}",
        modifier_name(*modifier),
        modifier_list(supported)
    )]
    UnsupportedModifier {
        /// The format asked for.
        format: PixelFormat,
        /// The modifier asked for.
        modifier: Modifier,
        /// The raw modifiers the display imports for this format.
        supported: Vec<u64>,
    },
    /// The framebuffer has the wrong number of planes for its format.
    #[error("{format} has {expected} plane(s), the framebuffer gives {got}")]
    PlaneCount {
        /// The format.
        format: PixelFormat,
        /// Planes the format has.
        expected: usize,
        /// Planes given.
        got: usize,
    },
    /// `eglCreateImage` refused a framebuffer that passed the up-front checks.
    #[error(
        "eglCreateImage(EGL_LINUX_DMA_BUF_EXT) refused {format} {width}x{height} \
         modifier {} with {planes} plane(s): {error}",
        modifier_name(*modifier)
    )]
    CreateImage {
        /// Format.
        format: PixelFormat,
        /// Modifier.
        modifier: Modifier,
        /// Backing width.
        width: u32,
        /// Backing height.
        height: u32,
        /// Number of planes.
        planes: usize,
        /// What EGL reported.
        error: egl::Error,
    },
    /// Width or height is zero or does not fit an `EGLint`.
    #[error("backing size {width}x{height} is not importable (zero or above i32::MAX)")]
    BadSize {
        /// Backing width.
        width: u32,
        /// Backing height.
        height: u32,
    },
    /// A GL call failed.
    #[error("GL {call} failed: {message}")]
    Gl {
        /// The GL function (or step).
        call: &'static str,
        /// The GL error or driver message.
        message: String,
    },
}

/// Result of EGL import operations.
pub type Result<T, E = EglError> = std::result::Result<T, E>;

pub(super) fn call_err(call: &'static str) -> impl FnOnce(egl::Error) -> EglError {
    move |error| EglError::Call { call, error }
}

/// Why an export could not be imported as a texture.
#[derive(Debug, thiserror::Error)]
pub enum TextureImportError {
    /// The export could not be lent as dma-buf planes (revoked, or scattered without
    /// udmabuf).
    #[error(transparent)]
    Source(#[from] crate::import::dmabuf::DmaBufImageError),
    /// EGL refused it.
    #[error(transparent)]
    Egl(#[from] EglError),
}
