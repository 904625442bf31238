//! Loading libEGL, choosing a display (headless: surfaceless Mesa or an EGL device;
//! Wayland) and a config, and the extension entry points looked up by name.

use std::ffi::{c_char, c_void, CStr};

use khronos_egl as egl;

use super::consts;
use super::error::{call_err, EglError, Result};
use super::{has_ext, Egl, Platform};

pub(super) type QueryDmaBufFormats = unsafe extern "system" fn(
    dpy: *mut c_void,
    max_formats: egl::Int,
    formats: *mut egl::Int,
    num_formats: *mut egl::Int,
) -> egl::Boolean;
pub(super) type QueryDmaBufModifiers = unsafe extern "system" fn(
    dpy: *mut c_void,
    format: egl::Int,
    max_modifiers: egl::Int,
    modifiers: *mut u64,
    external_only: *mut egl::Boolean,
    num_modifiers: *mut egl::Int,
) -> egl::Boolean;
pub(super) type QueryDevices = unsafe extern "system" fn(
    max_devices: egl::Int,
    devices: *mut *mut c_void,
    num_devices: *mut egl::Int,
) -> egl::Boolean;
pub(super) type QueryDeviceString =
    unsafe extern "system" fn(device: *mut c_void, name: egl::Int) -> *const c_char;
pub(super) type ImageTargetTexture2d = unsafe extern "system" fn(target: u32, image: *mut c_void);

/// Looks up an extension function and gives it its real type.
///
/// # Safety
/// `F` must be the `extern "system"` function pointer type matching `name`'s C
/// prototype.
pub(super) unsafe fn proc_address<F: Copy>(egl: &Egl, name: &'static str) -> Result<F> {
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

pub(super) fn require_ext(list: &str, name: &'static str, needed_for: &'static str) -> Result<()> {
    if has_ext(list, name) {
        Ok(())
    } else {
        Err(EglError::MissingExtension { name, needed_for })
    }
}

/// Opens libEGL.
pub(super) fn load_egl() -> Result<Egl> {
    // SAFETY: loading the system libEGL; khronos-egl checks that the EGL 1.5 symbols
    // exist and gives them their prototypes.
    unsafe { Egl::load_required() }.map_err(|e| EglError::Load(e.to_string()))
}

/// `eglGetPlatformDisplay` on a platform and native display.
///
/// # Safety
/// `native` must be valid for `platform` (a `wl_display*`, an `EGLDeviceEXT`, or
/// `EGL_DEFAULT_DISPLAY`) for as long as the display is used.
pub(super) unsafe fn platform_display(
    egl: &Egl,
    platform: u32,
    native: *mut c_void,
) -> Result<egl::Display> {
    // SAFETY: the caller vouches for `native`.
    unsafe { egl.get_platform_display(platform, native, &[egl::ATTRIB_NONE]) }
        .map_err(call_err("eglGetPlatformDisplay"))
}

/// Picks a headless display: the software EGL device, another device, or surfaceless.
pub(super) fn headless_display(egl: &Egl, client_ext: &str) -> Result<(egl::Display, Platform)> {
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
pub(super) fn device_display(egl: &Egl) -> Result<(egl::Display, Platform)> {
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

pub(super) fn client_extensions(egl: &Egl) -> Result<String> {
    egl.query_string(None, egl::EXTENSIONS)
        .map(|s| s.to_string_lossy().into_owned())
        .map_err(|_| EglError::MissingExtension {
            name: "EGL_EXT_client_extensions",
            needed_for: "choosing an EGL platform",
        })
}

pub(super) fn choose_config(
    egl: &Egl,
    display: egl::Display,
    surface_type: egl::Int,
) -> Result<egl::Config> {
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
