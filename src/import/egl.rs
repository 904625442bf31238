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

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_void, CStr};
use std::os::fd::AsRawFd;

use glow::HasContext;
use khronos_egl as egl;

pub use crate::format::fourcc_name;
use crate::format::{Modifier, PixelFormat};
pub use crate::import::dmabuf::{DmaBufImage, DmaBufPlane};

/// The EGL entry points, loaded from `libEGL.so.1` at run time.
pub type Egl = egl::DynamicInstance<egl::EGL1_5>;

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

fn call_err(call: &'static str) -> impl FnOnce(egl::Error) -> EglError {
    move |error| EglError::Call { call, error }
}

/// A modifier as text: `LINEAR`, `INVALID (implicit)` or hex.
pub fn modifier_name(modifier: Modifier) -> String {
    match modifier {
        Modifier::Implicit => "INVALID (implicit)".to_owned(),
        Modifier::Explicit(m) => raw_modifier_name(m.into()),
    }
}

fn raw_modifier_name(raw: u64) -> String {
    match raw {
        0 => "LINEAR".to_owned(),
        0x00ff_ffff_ffff_ffff => "INVALID".to_owned(),
        raw => format!("{raw:#018x}"),
    }
}

fn modifier_list(list: &[u64]) -> String {
    if list.is_empty() {
        return "no explicit modifier".to_owned();
    }
    list.iter()
        .map(|&m| raw_modifier_name(m))
        .collect::<Vec<_>>()
        .join(", ")
}

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

type QueryDmaBufFormats = unsafe extern "system" fn(
    dpy: *mut c_void,
    max_formats: egl::Int,
    formats: *mut egl::Int,
    num_formats: *mut egl::Int,
) -> egl::Boolean;
type QueryDmaBufModifiers = unsafe extern "system" fn(
    dpy: *mut c_void,
    format: egl::Int,
    max_modifiers: egl::Int,
    modifiers: *mut u64,
    external_only: *mut egl::Boolean,
    num_modifiers: *mut egl::Int,
) -> egl::Boolean;
type QueryDevices = unsafe extern "system" fn(
    max_devices: egl::Int,
    devices: *mut *mut c_void,
    num_devices: *mut egl::Int,
) -> egl::Boolean;
type QueryDeviceString =
    unsafe extern "system" fn(device: *mut c_void, name: egl::Int) -> *const c_char;
type ImageTargetTexture2d = unsafe extern "system" fn(target: u32, image: *mut c_void);

/// Looks up an extension function and gives it its real type.
///
/// # Safety
/// `F` must be the `extern "system"` function pointer type matching `name`'s C
/// prototype.
unsafe fn proc_address<F: Copy>(egl: &Egl, name: &'static str) -> Result<F> {
    assert_eq!(
        std::mem::size_of::<F>(),
        std::mem::size_of::<extern "system" fn()>()
    );
    let f = egl
        .get_proc_address(name)
        .ok_or(EglError::MissingFunction { name })?;
    // SAFETY: same size (checked above); the caller vouches that F matches the
    // prototype of `name`.
    Ok(unsafe { std::mem::transmute_copy::<extern "system" fn(), F>(&f) })
}

fn has_ext(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|e| e == name)
}

fn require_ext(list: &str, name: &'static str, needed_for: &'static str) -> Result<()> {
    if has_ext(list, name) {
        Ok(())
    } else {
        Err(EglError::MissingExtension { name, needed_for })
    }
}

/// Opens libEGL.
fn load_egl() -> Result<Egl> {
    // SAFETY: loading the system libEGL; khronos-egl checks that the EGL 1.5 symbols
    // exist and gives them their prototypes.
    unsafe { Egl::load_required() }.map_err(|e| EglError::Load(e.to_string()))
}

/// `eglGetPlatformDisplay` on a platform and native display.
///
/// # Safety
/// `native` must be valid for `platform` (a `wl_display*`, an `EGLDeviceEXT`, or
/// `EGL_DEFAULT_DISPLAY`) for as long as the display is used.
unsafe fn platform_display(egl: &Egl, platform: u32, native: *mut c_void) -> Result<egl::Display> {
    // SAFETY: the caller vouches for `native`.
    unsafe { egl.get_platform_display(platform, native, &[egl::ATTRIB_NONE]) }
        .map_err(call_err("eglGetPlatformDisplay"))
}

/// Picks a headless display: the software EGL device, another device, or surfaceless.
fn headless_display(egl: &Egl, client_ext: &str) -> Result<(egl::Display, Platform)> {
    let mut tried = Vec::new();
    if has_ext(client_ext, "EGL_EXT_platform_device")
        && has_ext(client_ext, "EGL_EXT_device_enumeration")
    {
        match device_display(egl) {
            Ok(found) => return Ok(found),
            Err(e) => tried.push(format!("EGL_EXT_platform_device: {e}")),
        }
    } else {
        tried.push("EGL_EXT_platform_device/EGL_EXT_device_enumeration missing".to_owned());
    }
    if has_ext(client_ext, "EGL_MESA_platform_surfaceless") {
        // SAFETY: the surfaceless platform takes EGL_DEFAULT_DISPLAY.
        match unsafe {
            platform_display(egl, consts::PLATFORM_SURFACELESS_MESA, egl::DEFAULT_DISPLAY)
        } {
            Ok(display) => return Ok((display, Platform::Surfaceless)),
            Err(e) => tried.push(format!("surfaceless: {e}")),
        }
    } else {
        tried.push("EGL_MESA_platform_surfaceless missing".to_owned());
    }
    Err(EglError::NoHeadlessDisplay {
        reason: tried.join("; "),
    })
}

/// Enumerates EGL devices and opens the software one (or the first that initialises).
fn device_display(egl: &Egl) -> Result<(egl::Display, Platform)> {
    // SAFETY: the types match the EGL_EXT_device_enumeration / _query prototypes.
    let query_devices: QueryDevices = unsafe { proc_address(egl, "eglQueryDevicesEXT")? };
    // SAFETY: as above.
    let query_string: QueryDeviceString = unsafe { proc_address(egl, "eglQueryDeviceStringEXT")? };
    let mut devices = [std::ptr::null_mut::<c_void>(); 16];
    let mut count: egl::Int = 0;
    // SAFETY: the array holds 16 entries and EGL writes at most `max_devices`.
    let ok = unsafe { query_devices(devices.len() as egl::Int, devices.as_mut_ptr(), &mut count) };
    if ok != egl::TRUE {
        return Err(EglError::Call {
            call: "eglQueryDevicesEXT",
            error: egl.get_error().unwrap_or(egl::Error::BadAccess),
        });
    }
    let count = (count.max(0) as usize).min(devices.len());
    let mut candidates: Vec<(bool, String, *mut c_void)> = devices[..count]
        .iter()
        .map(|&device| {
            // SAFETY: `device` came from eglQueryDevicesEXT; the string is owned by EGL
            // and copied at once.
            let ext = unsafe {
                let ptr = query_string(device, egl::EXTENSIONS);
                if ptr.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(ptr).to_string_lossy().into_owned()
                }
            };
            (has_ext(&ext, "EGL_MESA_device_software"), ext, device)
        })
        .collect();
    // Software device first: a DRM device such as vgem makes import break.
    candidates.sort_by_key(|(software, _, _)| !software);
    let mut errors = Vec::new();
    for (software, extensions, device) in candidates {
        // SAFETY: `device` is an EGLDeviceEXT from eglQueryDevicesEXT, valid for the
        // life of the process.
        match unsafe { platform_display(egl, consts::PLATFORM_DEVICE_EXT, device) } {
            Ok(display) => {
                return Ok((
                    display,
                    Platform::Device {
                        software,
                        extensions,
                    },
                ))
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(EglError::NoHeadlessDisplay {
        reason: format!("{count} EGL device(s), none opened: {}", errors.join("; ")),
    })
}

struct CachedImage {
    generation: u64,
    image: egl::Image,
    /// The CbCr plane's image of a two-plane NV12 import.
    chroma_image: Option<egl::Image>,
    texture: ImportedTexture,
}

/// One plane handed to `eglCreateImage`.
struct RawPlane {
    fd: i32,
    offset: u32,
    stride: u32,
}

/// Imports dma-buf framebuffers as GL textures through EGL, with a cache.
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

impl EglImporter {
    /// Opens a headless importer: the EGL device with `EGL_MESA_device_software`
    /// (llvmpipe) if there is one, else another EGL device, else Mesa's surfaceless
    /// platform. The GLES 3 context is made current on this thread.
    pub fn headless() -> Result<Self> {
        let egl = load_egl()?;
        let client_ext = client_extensions(&egl)?;
        let (display, platform) = headless_display(&egl, &client_ext)?;
        Self::init(egl, display, platform, egl::PBUFFER_BIT)
    }

    /// Opens an importer on a Wayland display (`EGL_PLATFORM_WAYLAND_KHR`), for a
    /// viewer that draws into an EGL window surface of its own. The context is made
    /// current without a surface (`EGL_KHR_surfaceless_context`); the viewer makes it
    /// current with its window surface ([`EglImporter::make_current`]).
    ///
    /// # Safety
    /// `wl_display` must be a valid `struct wl_display *` that outlives the importer.
    pub unsafe fn from_wayland(wl_display: *mut c_void) -> Result<Self> {
        let egl = load_egl()?;
        let client_ext = client_extensions(&egl)?;
        if !has_ext(&client_ext, "EGL_KHR_platform_wayland")
            && !has_ext(&client_ext, "EGL_EXT_platform_wayland")
        {
            return Err(EglError::MissingExtension {
                name: "EGL_KHR_platform_wayland",
                needed_for: "an EGL display on a Wayland connection",
            });
        }
        // SAFETY: the caller vouches for `wl_display`.
        let display = unsafe { platform_display(&egl, consts::PLATFORM_WAYLAND_KHR, wl_display)? };
        Self::init(egl, display, Platform::Wayland, egl::WINDOW_BIT)
    }

    fn init(
        egl: Egl,
        display: egl::Display,
        platform: Platform,
        surface_type: egl::Int,
    ) -> Result<Self> {
        egl.initialize(display).map_err(call_err("eglInitialize"))?;
        let ext = egl
            .query_string(Some(display), egl::EXTENSIONS)
            .map_err(call_err("eglQueryString(EGL_EXTENSIONS)"))?
            .to_string_lossy()
            .into_owned();
        require_ext(&ext, "EGL_EXT_image_dma_buf_import", "importing dma-bufs")?;
        require_ext(
            &ext,
            "EGL_EXT_image_dma_buf_import_modifiers",
            "querying importable formats and modifiers",
        )?;
        let surfaceless = has_ext(&ext, "EGL_KHR_surfaceless_context");
        if platform == Platform::Wayland && !surfaceless {
            return Err(EglError::MissingExtension {
                name: "EGL_KHR_surfaceless_context",
                needed_for: "a current context before the window surface exists",
            });
        }
        egl.bind_api(egl::OPENGL_ES_API)
            .map_err(call_err("eglBindAPI(EGL_OPENGL_ES_API)"))?;
        let config = choose_config(&egl, display, surface_type)?;
        let context = egl
            .create_context(
                display,
                config,
                None,
                &[
                    egl::CONTEXT_MAJOR_VERSION,
                    3,
                    egl::CONTEXT_MINOR_VERSION,
                    0,
                    egl::NONE,
                ],
            )
            .map_err(call_err("eglCreateContext(GLES 3.0)"))?;
        let pbuffer = if surfaceless {
            None
        } else {
            match egl.create_pbuffer_surface(
                display,
                config,
                &[egl::WIDTH, 1, egl::HEIGHT, 1, egl::NONE],
            ) {
                Ok(surface) => Some(surface),
                Err(error) => {
                    let _ = egl.destroy_context(display, context);
                    return Err(EglError::Call {
                        call: "eglCreatePbufferSurface (no EGL_KHR_surfaceless_context)",
                        error,
                    });
                }
            }
        };
        if let Err(error) = egl.make_current(display, pbuffer, pbuffer, Some(context)) {
            if let Some(surface) = pbuffer {
                let _ = egl.destroy_surface(display, surface);
            }
            let _ = egl.destroy_context(display, context);
            return Err(EglError::Call {
                call: "eglMakeCurrent",
                error,
            });
        }
        // From here on Drop cleans up.
        // SAFETY: the context is current; eglGetProcAddress returns GL entry points of
        // the current client API (EGL 1.5 includes core functions).
        let gl = unsafe {
            glow::Context::from_loader_function(|name| {
                egl.get_proc_address(name)
                    .map_or(std::ptr::null(), |f| f as *const c_void)
            })
        };
        let mut importer = Self {
            image_target_texture: noop_image_target,
            egl,
            display,
            config,
            context,
            pbuffer,
            platform,
            gl,
            formats: BTreeMap::new(),
            external_textures: false,
            cache: HashMap::new(),
            stats: ImportStats::default(),
        };
        importer.finish_init()?;
        Ok(importer)
    }

    fn finish_init(&mut self) -> Result<()> {
        let gl_ext = self.gl.supported_extensions();
        if !gl_ext.contains("GL_OES_EGL_image") {
            return Err(EglError::MissingGlExtension {
                name: "GL_OES_EGL_image",
                needed_for: "binding an EGLImage to a texture",
            });
        }
        self.external_textures = gl_ext.contains("GL_OES_EGL_image_external");
        // SAFETY: the prototype of glEGLImageTargetTexture2DOES (GL_OES_EGL_image).
        self.image_target_texture =
            unsafe { proc_address(&self.egl, "glEGLImageTargetTexture2DOES")? };
        self.formats = query_formats(&self.egl, self.display)?;
        Ok(())
    }

    /// The loaded EGL entry points.
    pub fn egl(&self) -> &Egl {
        &self.egl
    }

    /// The EGL display.
    pub fn display(&self) -> egl::Display {
        self.display
    }

    /// The EGL config of the context (create window surfaces with it).
    pub fn config(&self) -> egl::Config {
        self.config
    }

    /// The GLES 3 context.
    pub fn context(&self) -> egl::Context {
        self.context
    }

    /// The GL functions of the context.
    pub fn gl(&self) -> &glow::Context {
        &self.gl
    }

    /// Which platform the display is on.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Makes the context current on this thread with `surface` for drawing and reading,
    /// or with no surface / the importer's own pbuffer when `surface` is `None`.
    pub fn make_current(&self, surface: Option<egl::Surface>) -> Result<()> {
        let surface = surface.or(self.pbuffer);
        self.egl
            .make_current(self.display, surface, surface, Some(self.context))
            .map_err(call_err("eglMakeCurrent"))
    }

    /// Every format the display imports, by raw fourcc, with its modifiers.
    pub fn formats(&self) -> &BTreeMap<u32, Vec<ModifierInfo>> {
        &self.formats
    }

    /// Whether `GL_OES_EGL_image_external` is there (external-only formats need it).
    pub fn has_external_textures(&self) -> bool {
        self.external_textures
    }

    /// Checks that `image` can be imported, without importing it: plane count, size,
    /// format and modifier against what the display advertises. Returns the texture
    /// target it would be bound to.
    pub fn check(&self, image: &DmaBufImage<'_>) -> Result<TextureTarget> {
        let format = image.format;
        let expected = format.planes().len();
        if image.planes.len() != expected {
            return Err(EglError::PlaneCount {
                format,
                expected,
                got: image.planes.len(),
            });
        }
        if image.width == 0
            || image.height == 0
            || image.width > i32::MAX as u32
            || image.height > i32::MAX as u32
        {
            return Err(EglError::BadSize {
                width: image.width,
                height: image.height,
            });
        }
        let code = format.fourcc() as u32;
        let Some(modifiers) = self.formats.get(&code) else {
            return Err(EglError::UnsupportedFormat {
                format,
                fourcc: fourcc_name(code),
                supported: self
                    .formats
                    .keys()
                    .map(|&c| fourcc_name(c))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        };
        let yuv = format == PixelFormat::Nv12;
        let external_only = match image.modifier {
            Modifier::Explicit(m) => {
                let raw: u64 = m.into();
                match modifiers.iter().find(|info| info.modifier == raw) {
                    Some(info) => info.external_only,
                    None => {
                        return Err(EglError::UnsupportedModifier {
                            format,
                            modifier: image.modifier,
                            supported: modifiers.iter().map(|info| info.modifier).collect(),
                        })
                    }
                }
            }
            // Implicit: the driver picks the layout; judge by LINEAR, else by any entry.
            Modifier::Implicit => modifiers
                .iter()
                .find(|info| info.modifier == 0)
                .or(modifiers.first())
                .map_or(yuv, |info| info.external_only),
        };
        // NV12 as R8 + GR88 images: two GL_TEXTURE_2D, converted by guestfb's shader.
        if self.nv12_as_planes(image) {
            return Ok(TextureTarget::Texture2D);
        }
        // YUV goes to an external texture where there is one: that is the target on
        // which drivers convert to RGB. Otherwise follow the driver's external_only.
        if external_only || (yuv && self.external_textures) {
            if !self.external_textures {
                return Err(EglError::MissingGlExtension {
                    name: "GL_OES_EGL_image_external",
                    needed_for: "sampling an external-only import",
                });
            }
            Ok(TextureTarget::External)
        } else {
            Ok(TextureTarget::Texture2D)
        }
    }

    /// Imports `image` as a texture, or returns the cached texture for `key`.
    ///
    /// A cached entry for the same buffer id with another generation is dropped first
    /// (its texture and EGLImage are destroyed). The image is checked with
    /// [`EglImporter::check`] before `eglCreateImage` is called.
    pub fn import(&mut self, key: BufferKey, image: &DmaBufImage<'_>) -> Result<ImportedTexture> {
        if let Some(cached) = self.cache.get(&key.buffer_id) {
            if cached.generation == key.generation {
                self.stats.cache_hits += 1;
                return Ok(cached.texture);
            }
            self.forget(key.buffer_id);
        }
        let target = self.check(image)?;
        if self.nv12_as_planes(image) {
            return self.import_nv12_planes(key, image);
        }
        let egl_image = self.create_image(image)?;
        let texture = match self.bind_texture(egl_image, target) {
            Ok(texture) => texture,
            Err(e) => {
                let _ = self.egl.destroy_image(self.display, egl_image);
                self.stats.images_destroyed += 1;
                return Err(e);
            }
        };
        let texture = ImportedTexture {
            texture,
            chroma: None,
            target,
            format: image.format,
            width: image.width,
            height: image.height,
        };
        self.cache.insert(
            key.buffer_id,
            CachedImage {
                generation: key.generation,
                image: egl_image,
                chroma_image: None,
                texture,
            },
        );
        Ok(texture)
    }

    /// Whether `image` (already checked) is NV12 that this display imports as an `R8`
    /// luma image and a `GR88` chroma image with the same modifier. Mesa's llvmpipe
    /// advertises NV12 but refuses it as one image (EGL_BAD_ALLOC); its single-plane
    /// formats import, and the shader conversion is bit-exact with the CPU path.
    fn nv12_as_planes(&self, image: &DmaBufImage<'_>) -> bool {
        if image.format != PixelFormat::Nv12 {
            return false;
        }
        let imports = |code: u32| {
            self.formats
                .get(&code)
                .is_some_and(|modifiers| match image.modifier {
                    Modifier::Explicit(m) => {
                        let raw: u64 = m.into();
                        modifiers
                            .iter()
                            .any(|info| info.modifier == raw && !info.external_only)
                    }
                    Modifier::Implicit => {
                        modifiers.is_empty() || modifiers.iter().any(|info| !info.external_only)
                    }
                })
        };
        imports(consts::DRM_FORMAT_R8) && imports(consts::DRM_FORMAT_GR88)
    }

    /// NV12 as two `GL_TEXTURE_2D` images: plane 0 as `R8` (width×height), plane 1 as
    /// `GR88` (ceil(w/2)×ceil(h/2)).
    fn import_nv12_planes(
        &mut self,
        key: BufferKey,
        image: &DmaBufImage<'_>,
    ) -> Result<ImportedTexture> {
        let raw = |i: usize| {
            let plane = &image.planes[i];
            RawPlane {
                fd: plane.fd.as_raw_fd(),
                offset: plane.offset,
                stride: plane.stride,
            }
        };
        let (cw, ch) = (image.width.div_ceil(2), image.height.div_ceil(2));
        let luma_image = self.create_image_raw(
            image,
            consts::DRM_FORMAT_R8,
            (image.width, image.height),
            &[raw(0)],
        )?;
        let chroma_image =
            match self.create_image_raw(image, consts::DRM_FORMAT_GR88, (cw, ch), &[raw(1)]) {
                Ok(chroma) => chroma,
                Err(e) => {
                    self.destroy_images(&[luma_image]);
                    return Err(e);
                }
            };
        let luma = match self.bind_texture(luma_image, TextureTarget::Texture2D) {
            Ok(texture) => texture,
            Err(e) => {
                self.destroy_images(&[luma_image, chroma_image]);
                return Err(e);
            }
        };
        let chroma = match self.bind_texture(chroma_image, TextureTarget::Texture2D) {
            Ok(texture) => texture,
            Err(e) => {
                // SAFETY: deleting a texture this importer created on its context.
                unsafe { self.gl.delete_texture(luma) };
                self.destroy_images(&[luma_image, chroma_image]);
                return Err(e);
            }
        };
        let texture = ImportedTexture {
            texture: luma,
            chroma: Some(chroma),
            target: TextureTarget::Texture2D,
            format: image.format,
            width: image.width,
            height: image.height,
        };
        self.cache.insert(
            key.buffer_id,
            CachedImage {
                generation: key.generation,
                image: luma_image,
                chroma_image: Some(chroma_image),
                texture,
            },
        );
        Ok(texture)
    }

    fn destroy_images(&mut self, images: &[egl::Image]) {
        for &image in images {
            let _ = self.egl.destroy_image(self.display, image);
            self.stats.images_destroyed += 1;
        }
    }

    /// The cached texture of a buffer id, whatever its generation.
    pub fn cached(&self, buffer_id: u64) -> Option<(u64, ImportedTexture)> {
        self.cache
            .get(&buffer_id)
            .map(|cached| (cached.generation, cached.texture))
    }

    /// Drops the cached image and texture of a buffer (its export was revoked).
    /// Returns whether there was one.
    pub fn forget(&mut self, buffer_id: u64) -> bool {
        match self.cache.remove(&buffer_id) {
            Some(cached) => {
                self.destroy_cached(cached);
                true
            }
            None => false,
        }
    }

    /// Drops every cached image.
    pub fn clear(&mut self) {
        for (_, cached) in std::mem::take(&mut self.cache) {
            self.destroy_cached(cached);
        }
    }

    /// Number of cached images.
    pub fn cached_count(&self) -> usize {
        self.cache.len()
    }

    /// Counters of created and destroyed images.
    pub fn stats(&self) -> ImportStats {
        self.stats
    }

    fn destroy_cached(&mut self, cached: CachedImage) {
        // SAFETY: the texture was created on this importer's context; deleting a
        // texture name is always valid GL.
        unsafe {
            self.gl.delete_texture(cached.texture.texture);
            if let Some(chroma) = cached.texture.chroma {
                self.gl.delete_texture(chroma);
            }
        }
        let _ = self.egl.destroy_image(self.display, cached.image);
        self.stats.images_destroyed += 1;
        if let Some(chroma) = cached.chroma_image {
            let _ = self.egl.destroy_image(self.display, chroma);
            self.stats.images_destroyed += 1;
        }
    }

    fn create_image(&mut self, image: &DmaBufImage<'_>) -> Result<egl::Image> {
        let planes: Vec<RawPlane> = image
            .planes
            .iter()
            .map(|plane| RawPlane {
                fd: plane.fd.as_raw_fd(),
                offset: plane.offset,
                stride: plane.stride,
            })
            .collect();
        self.create_image_raw(
            image,
            image.format.fourcc() as u32,
            (image.width, image.height),
            &planes,
        )
    }

    /// `eglCreateImage(EGL_LINUX_DMA_BUF_EXT)` of `planes` as `fourcc` at `width`×
    /// `height`, with `image`'s modifier; errors name `image`.
    fn create_image_raw(
        &mut self,
        image: &DmaBufImage<'_>,
        fourcc: u32,
        (width, height): (u32, u32),
        planes: &[RawPlane],
    ) -> Result<egl::Image> {
        let mut attribs: Vec<egl::Attrib> = vec![
            egl::WIDTH as usize,
            width as usize,
            egl::HEIGHT as usize,
            height as usize,
            consts::LINUX_DRM_FOURCC_EXT,
            fourcc as usize,
        ];
        for (i, plane) in planes.iter().enumerate() {
            attribs.extend([
                consts::PLANE_FD[i],
                plane.fd as usize,
                consts::PLANE_OFFSET[i],
                plane.offset as usize,
                consts::PLANE_PITCH[i],
                plane.stride as usize,
            ]);
            // Only an explicit modifier (LINEAR included) is passed; INVALID means
            // "implicit" and is expressed by leaving the attributes out.
            if let Modifier::Explicit(m) = image.modifier {
                let raw: u64 = m.into();
                attribs.extend([
                    consts::PLANE_MODIFIER_LO[i],
                    (raw & 0xffff_ffff) as usize,
                    consts::PLANE_MODIFIER_HI[i],
                    (raw >> 32) as usize,
                ]);
            }
        }
        if fourcc == PixelFormat::Nv12.fourcc() as u32 {
            attribs.extend([
                consts::YUV_COLOR_SPACE_HINT_EXT,
                consts::ITU_REC601_EXT,
                consts::SAMPLE_RANGE_HINT_EXT,
                consts::YUV_NARROW_RANGE_EXT,
            ]);
        }
        attribs.push(egl::ATTRIB_NONE);
        // SAFETY: EGL_LINUX_DMA_BUF_EXT requires EGL_NO_CONTEXT and a NULL client
        // buffer; the fds are borrowed for this call only (EGL dups what it keeps).
        let (no_context, no_buffer) = unsafe {
            (
                egl::Context::from_ptr(egl::NO_CONTEXT),
                egl::ClientBuffer::from_ptr(std::ptr::null_mut()),
            )
        };
        let created = self
            .egl
            .create_image(
                self.display,
                no_context,
                consts::LINUX_DMA_BUF_EXT,
                no_buffer,
                &attribs,
            )
            .map_err(|error| EglError::CreateImage {
                format: image.format,
                modifier: image.modifier,
                width: image.width,
                height: image.height,
                planes: image.planes.len(),
                error,
            })?;
        self.stats.images_created += 1;
        Ok(created)
    }

    fn bind_texture(&self, image: egl::Image, target: TextureTarget) -> Result<glow::Texture> {
        let gl = &self.gl;
        let target = target.gl_enum();
        // SAFETY: plain GL calls on the current context; `image` is a live EGLImage of
        // this display and the function pointer has the GL_OES_EGL_image prototype.
        unsafe {
            while gl.get_error() != glow::NO_ERROR {}
            let texture = gl.create_texture().map_err(|message| EglError::Gl {
                call: "glGenTextures",
                message,
            })?;
            gl.bind_texture(target, Some(texture));
            for (name, value) in [
                (glow::TEXTURE_MIN_FILTER, glow::LINEAR),
                (glow::TEXTURE_MAG_FILTER, glow::LINEAR),
                (glow::TEXTURE_WRAP_S, glow::CLAMP_TO_EDGE),
                (glow::TEXTURE_WRAP_T, glow::CLAMP_TO_EDGE),
            ] {
                gl.tex_parameter_i32(target, name, value as i32);
            }
            (self.image_target_texture)(target, image.as_ptr());
            let error = gl.get_error();
            gl.bind_texture(target, None);
            if error != glow::NO_ERROR {
                gl.delete_texture(texture);
                return Err(EglError::Gl {
                    call: "glEGLImageTargetTexture2DOES",
                    message: format!("GL error {error:#06x}"),
                });
            }
            Ok(texture)
        }
    }
}

/// Placeholder until `finish_init` loads glEGLImageTargetTexture2DOES (never called).
unsafe extern "system" fn noop_image_target(_target: u32, _image: *mut c_void) {}

impl Drop for EglImporter {
    fn drop(&mut self) {
        // Textures must be deleted on our context: make it current if it is not.
        if self.egl.get_current_context() != Some(self.context) {
            let _ = self.make_current(None);
        }
        self.clear();
        let _ = self.egl.make_current(self.display, None, None, None);
        if let Some(surface) = self.pbuffer.take() {
            let _ = self.egl.destroy_surface(self.display, surface);
        }
        let _ = self.egl.destroy_context(self.display, self.context);
        // A headless display is not terminated: EGL hands out one EGLDisplay per native
        // display and process, and other importers (other threads) may be using it.
        // A Wayland display is this importer's own, and must be: its wl_display goes
        // away with the window, and a later connection at the same address would
        // otherwise get the old EGLDisplay with Mesa's state for the dead connection.
        if matches!(self.platform, Platform::Wayland) {
            let _ = self.egl.terminate(self.display);
        }
    }
}

fn client_extensions(egl: &Egl) -> Result<String> {
    egl.query_string(None, egl::EXTENSIONS)
        .map(|s| s.to_string_lossy().into_owned())
        .map_err(|_| EglError::MissingExtension {
            name: "EGL_EXT_client_extensions",
            needed_for: "choosing an EGL platform",
        })
}

fn choose_config(egl: &Egl, display: egl::Display, surface_type: egl::Int) -> Result<egl::Config> {
    let attribs = [
        egl::SURFACE_TYPE,
        surface_type,
        egl::RENDERABLE_TYPE,
        egl::OPENGL_ES3_BIT,
        egl::RED_SIZE,
        8,
        egl::GREEN_SIZE,
        8,
        egl::BLUE_SIZE,
        8,
        egl::NONE,
    ];
    let mut configs = Vec::with_capacity(64);
    egl.choose_config(display, &attribs, &mut configs)
        .map_err(call_err("eglChooseConfig"))?;
    // eglChooseConfig sorts deeper colour first (10-bit before 8-bit): prefer exactly
    // 8 bits per channel, the format windows and readback expect.
    let size = |config, attrib| egl.get_config_attrib(display, config, attrib).unwrap_or(0);
    configs
        .iter()
        .copied()
        .find(|&c| {
            size(c, egl::RED_SIZE) == 8
                && size(c, egl::GREEN_SIZE) == 8
                && size(c, egl::BLUE_SIZE) == 8
        })
        .or(configs.first().copied())
        .ok_or(EglError::NoConfig {
            what: if surface_type == egl::WINDOW_BIT {
                "EGL_WINDOW_BIT, GLES 3, RGB 8-8-8"
            } else {
                "EGL_PBUFFER_BIT, GLES 3, RGB 8-8-8"
            },
        })
}

fn query_formats(egl: &Egl, display: egl::Display) -> Result<BTreeMap<u32, Vec<ModifierInfo>>> {
    // SAFETY: the prototypes of EGL_EXT_image_dma_buf_import_modifiers, whose presence
    // init checked.
    let (query_formats, query_modifiers): (QueryDmaBufFormats, QueryDmaBufModifiers) = unsafe {
        (
            proc_address(egl, "eglQueryDmaBufFormatsEXT")?,
            proc_address(egl, "eglQueryDmaBufModifiersEXT")?,
        )
    };
    let fail = |call| EglError::Call {
        call,
        error: egl.get_error().unwrap_or(egl::Error::BadParameter),
    };
    let dpy = display.as_ptr();
    let mut count: egl::Int = 0;
    // SAFETY: a size query (max 0, NULL array) as the extension allows.
    if unsafe { query_formats(dpy, 0, std::ptr::null_mut(), &mut count) } != egl::TRUE {
        return Err(fail("eglQueryDmaBufFormatsEXT"));
    }
    let mut codes = vec![0 as egl::Int; count.max(0) as usize];
    // SAFETY: `codes` holds `count` entries; EGL writes at most that many.
    if unsafe { query_formats(dpy, count, codes.as_mut_ptr(), &mut count) } != egl::TRUE {
        return Err(fail("eglQueryDmaBufFormatsEXT"));
    }
    codes.truncate(count.max(0) as usize);
    let mut formats = BTreeMap::new();
    for code in codes {
        let mut n: egl::Int = 0;
        // SAFETY: a size query, as above.
        let ok = unsafe {
            query_modifiers(
                dpy,
                code,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut n,
            )
        };
        if ok != egl::TRUE {
            return Err(fail("eglQueryDmaBufModifiersEXT"));
        }
        let mut modifiers = vec![0u64; n.max(0) as usize];
        let mut external = vec![0 as egl::Boolean; n.max(0) as usize];
        // SAFETY: both arrays hold `n` entries; EGL writes at most that many.
        let ok = unsafe {
            query_modifiers(
                dpy,
                code,
                n,
                modifiers.as_mut_ptr(),
                external.as_mut_ptr(),
                &mut n,
            )
        };
        if ok != egl::TRUE {
            return Err(fail("eglQueryDmaBufModifiersEXT"));
        }
        let n = (n.max(0) as usize).min(modifiers.len());
        let infos = modifiers[..n]
            .iter()
            .zip(&external[..n])
            .map(|(&modifier, &ext)| ModifierInfo {
                modifier,
                external_only: ext == egl::TRUE,
            })
            .collect();
        formats.insert(code as u32, infos);
    }
    Ok(formats)
}

/// Why an export could not be imported as a texture.
#[derive(Debug, thiserror::Error)]
pub enum ImportExportError {
    /// The export could not be lent as dma-buf planes (revoked, or scattered without
    /// udmabuf).
    #[error(transparent)]
    Source(#[from] crate::import::dmabuf::ExportImageError),
    /// EGL refused it.
    #[error(transparent)]
    Egl(#[from] EglError),
}

impl EglImporter {
    /// Imports an export (its udmabuf, or on a host without udmabuf its single memfd
    /// piece, see [`crate::import::dmabuf`]), cached by buffer id and generation. A
    /// cache hit costs a lock and a map lookup; nothing is copied.
    pub fn import_export(
        &mut self,
        export: &crate::export::ExportedFramebuffer,
    ) -> Result<ImportedTexture, ImportExportError> {
        let key = BufferKey {
            buffer_id: export.buffer_id(),
            generation: export.generation(),
        };
        if let Some((generation, texture)) = self.cached(key.buffer_id) {
            if generation == key.generation && !export.is_revoked() {
                self.stats.cache_hits += 1;
                return Ok(texture);
            }
        }
        Ok(crate::import::dmabuf::with_export_image(
            export,
            |image, _| self.import(key, image),
        )??)
    }
}
