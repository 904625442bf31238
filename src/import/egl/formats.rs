//! The dma-buf formats and modifiers a display imports (`EGL_EXT_image_dma_buf_import_modifiers`),
//! and how modifiers are named in messages.

use std::collections::BTreeMap;

use khronos_egl as egl;

use crate::format::Modifier;

use super::display::{proc_address, QueryDmaBufFormats, QueryDmaBufModifiers};
use super::error::{EglError, Result};
use super::{Egl, ModifierInfo};

/// A modifier as text: `LINEAR`, `INVALID (implicit)` or hex.
pub fn modifier_name(modifier: Modifier) -> String {
    match modifier {
        Modifier::Implicit => "INVALID (implicit)".to_owned(),
        Modifier::Explicit(m) => raw_modifier_name(m.into()),
    }
}

pub(super) fn raw_modifier_name(raw: u64) -> String {
    match raw {
        0 => "LINEAR".to_owned(),
        0x00ff_ffff_ffff_ffff => "INVALID".to_owned(),
        raw => format!("{raw:#018x}"),
    }
}

pub(super) fn modifier_list(list: &[u64]) -> String {
    if list.is_empty() {
        return "no explicit modifier".to_owned();
    }
    list.iter()
        .map(|&m| raw_modifier_name(m))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn query_formats(
    egl: &Egl,
    display: egl::Display,
) -> Result<BTreeMap<u32, Vec<ModifierInfo>>> {
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
