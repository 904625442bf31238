//! EGL dma-buf import: a framebuffer's dma-buf becomes an `EGLImage` and a GL texture
//! without a copy.
//!
//! [`EglImporter`] owns an EGL display, a GLES 3 context and a cache of imported images
//! keyed by buffer id and generation. It checks every extension it needs up front and
//! names what is missing, and it refuses a framebuffer whose format or modifier the
//! display does not advertise *before* calling `eglCreateImage`, so a bad frame is a
//! typed error rather than a driver crash.
//!
//! The GL context is current on the thread that created the importer; the importer is
//! neither `Send` nor `Sync`.

mod display;
mod error;
mod formats;
mod importer;

pub use error::{EglError, Result, TextureImportError};
pub use formats::modifier_name;

use std::collections::{BTreeMap, HashMap};

use khronos_egl as egl;

use crate::format::PixelFormat;

use display::ImageTargetTexture2d;
use importer::CachedImage;

/// EGL and GL enums that khronos-egl and glow do not name.
mod consts {
    pub const PLATFORM_DEVICE_EXT: u32 = 0x313F;
    pub const PLATFORM_WAYLAND_KHR: u32 = 0x31D8;
    pub const PLATFORM_SURFACELESS_MESA: u32 = 0x31DD;
    pub const LINUX_DMA_BUF_EXT: u32 = 0x3270;
    pub const LINUX_DRM_FOURCC_EXT: usize = 0x3271;
    pub const PLANE_FD: [usize; 4] = [0x3272, 0x3275, 0x3278, 0x3440];
    pub const PLANE_OFFSET: [usize; 4] = [0x3273, 0x3276, 0x3279, 0x3441];
    pub const PLANE_PITCH: [usize; 4] = [0x3274, 0x3277, 0x327A, 0x3442];
    pub const PLANE_MODIFIER_LO: [usize; 4] = [0x3443, 0x3445, 0x3447, 0x3449];
    pub const PLANE_MODIFIER_HI: [usize; 4] = [0x3444, 0x3446, 0x3448, 0x344A];
    pub const YUV_COLOR_SPACE_HINT_EXT: usize = 0x327B;
    pub const SAMPLE_RANGE_HINT_EXT: usize = 0x327C;
    pub const ITU_REC601_EXT: usize = 0x327F;
    pub const YUV_NARROW_RANGE_EXT: usize = 0x3283;
    pub const TEXTURE_EXTERNAL_OES: u32 = 0x8D65;
    /// DRM_FORMAT_R8 ('R8  '): one 8-bit channel.
    pub const DRM_FORMAT_R8: u32 = u32::from_le_bytes(*b"R8  ");
    /// DRM_FORMAT_GR88 ('GR88'): byte 0 is R, byte 1 is G.
    pub const DRM_FORMAT_GR88: u32 = u32::from_le_bytes(*b"GR88");
}

/// The EGL entry points, loaded from `libEGL.so.1` at run time.
pub type Egl = egl::DynamicInstance<egl::EGL1_5>;

/// Cache key of an imported buffer: the buffer's id and the generation of its export.
///
/// A new generation (the buffer was re-exported or revoked) replaces the old image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferKey {
    /// Stable id of the buffer.
    pub buffer_id: u64,
    /// Generation of its export.
    pub generation: u64,
}

/// The GL texture target an import is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextureTarget {
    /// `GL_TEXTURE_2D` (RGB formats the driver samples natively).
    Texture2D,
    /// `GL_TEXTURE_EXTERNAL_OES` (formats the driver marks external-only, e.g. YUV).
    External,
}

impl TextureTarget {
    /// The GL enum.
    pub fn gl_enum(self) -> u32 {
        match self {
            Self::Texture2D => glow::TEXTURE_2D,
            Self::External => consts::TEXTURE_EXTERNAL_OES,
        }
    }
}

/// An imported framebuffer as a GL texture; valid until its cache entry is dropped.
///
/// NV12 on a display that imports `R8` and `GR88` is imported as two single-plane
/// images: `texture` holds the luma plane (`R8`, width×height) and `chroma` the CbCr
/// plane (`GR88`, ceil(w/2)×ceil(h/2), Cb in R, Cr in G), both `GL_TEXTURE_2D`; the
/// renderer converts to RGB in its shader, exactly as the CPU path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedTexture {
    /// The GL texture name (the luma plane for a two-plane NV12 import).
    pub texture: glow::Texture,
    /// The CbCr plane of a two-plane NV12 import (`GL_TEXTURE_2D`); `None` otherwise.
    pub chroma: Option<glow::Texture>,
    /// Where it is bound.
    pub target: TextureTarget,
    /// Pixel format of the framebuffer.
    pub format: PixelFormat,
    /// Backing width.
    pub width: u32,
    /// Backing height.
    pub height: u32,
}

/// One modifier the display imports for a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifierInfo {
    /// Raw modifier.
    pub modifier: u64,
    /// Whether the import can only be sampled as `GL_TEXTURE_EXTERNAL_OES`.
    pub external_only: bool,
}

/// Which EGL platform the importer's display is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// A Wayland display (`EGL_PLATFORM_WAYLAND_KHR`).
    Wayland,
    /// An `EGL_EXT_platform_device` device; `software` if it has
    /// `EGL_MESA_device_software`. `extensions` is its device extension string.
    Device {
        /// True for Mesa's software (llvmpipe) device.
        software: bool,
        /// The device's extension string.
        extensions: String,
    },
    /// Mesa's surfaceless platform (`EGL_MESA_platform_surfaceless`).
    Surfaceless,
}

/// Counters for images created and destroyed (tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// `eglCreateImage` calls that succeeded.
    pub images_created: u64,
    /// Images destroyed (replaced, forgotten, or dropped with the importer).
    pub images_destroyed: u64,
    /// Imports answered from the cache.
    pub cache_hits: u64,
}

fn has_ext(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|e| e == name)
}

/// Imports dma-buf framebuffers as GL textures through EGL, with a cache.
///
/// ```
/// use std::os::fd::AsFd;
/// use guestfb::format::{Modifier, PixelFormat};
/// use guestfb::import::dmabuf::{DmaBufImage, DmaBufPlane};
/// use guestfb::import::egl::{BufferKey, EglImporter};
/// use guestfb::rect::Rect;
/// use guestfb::sys::memfd::Memfd;
///
/// let mut importer = EglImporter::headless()?;
/// // A 16×16 XRGB8888 buffer. A real caller has a udmabuf from an export
/// // (`import_export`); Mesa also takes a memfd as a linear buffer, as here.
/// let buffer = Memfd::create("frame")?;
/// buffer.set_size(16 * 16 * 4)?;
/// let image = DmaBufImage {
///     planes: vec![DmaBufPlane { fd: buffer.as_fd(), offset: 0, stride: 64 }],
///     format: PixelFormat::Xrgb8888,
///     modifier: Modifier::LINEAR,
///     width: 16,
///     height: 16,
///     visible: Rect::full(16, 16),
///     y0_top: true,
/// };
/// let key = BufferKey { buffer_id: 1, generation: 0 };
/// let texture = importer.import(key, &image)?;
/// assert_eq!((texture.width, texture.height), (16, 16));
/// // The same buffer and generation again: a cache hit, no new EGLImage.
/// importer.import(key, &image)?;
/// assert_eq!(importer.cached_count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EglImporter {
    egl: Egl,
    display: egl::Display,
    config: egl::Config,
    context: egl::Context,
    pbuffer: Option<egl::Surface>,
    platform: Platform,
    gl: glow::Context,
    image_target_texture: ImageTargetTexture2d,
    formats: BTreeMap<u32, Vec<ModifierInfo>>,
    external_textures: bool,
    cache: HashMap<u64, CachedImage>,
    stats: ImportStats,
}

impl std::fmt::Debug for EglImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EglImporter")
            .field("platform", &self.platform)
            .field("display", &self.display)
            .field("formats", &self.formats.len())
            .field("external_textures", &self.external_textures)
            .field("cached", &self.cache.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
