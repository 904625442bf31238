//! The GL fill of the copy path (features `kms` + `egl`): the guest's export and the
//! scanout buffer are both imported as EGLImages (headless EGL device, llvmpipe where
//! there is no GPU); the export's texture is drawn into an FBO on the scanout buffer's
//! texture with [`GlRenderer`], then `glFinish`. No pixel passes through the CPU in this
//! crate: format conversion and the y flip happen in the draw.
//!
//! Formats EGL cannot import (e.g. BGR888/RGB888 on llvmpipe, NV12 where neither
//! one image nor R8 + GR88 planes import) go through [`CpuFill`], with the reason in
//! the presenter's log once; the format is not tried with EGL again. Other failures
//! (a revoked export, a draw error) fall back for that frame only. If the scanout buffer itself cannot be imported or
//! rendered to, the fill stays on the CPU from then on.
//!
//! The EGL context is current only inside [`GlFill`]'s own calls: whatever context the
//! thread had before is made current again before they return, so the fill can move
//! between threads with the presenter.

use std::collections::HashMap;
use std::os::fd::AsFd;

use glow::HasContext;
use khronos_egl as egl;

use super::copy::{CpuFill, FillTarget, FrameFill};
use super::error::KmsError;
use crate::export::{BufferId, ExportedFramebuffer};
use crate::format::{Modifier, PixelFormat};
use crate::import::dmabuf::{DmaBufImage, DmaBufPlane};
use crate::import::egl::{
    BufferKey, EglError, EglImporter, ImportedTexture, Platform, TextureImportError, TextureTarget,
};
use crate::present::gl::{DrawParams, Filter, GlRenderer, RenderError};
use crate::rect::Rect;

/// The importer cache slot of the scanout buffer being drawn into (guest buffer ids
/// are small; an export with this id goes through the CPU fill).
const TARGET_SLOT: u64 = u64::MAX;

/// Why the GL fill could not draw a frame (the frame then goes through the CPU fill).
#[derive(Debug, thiserror::Error)]
pub enum GlFillError {
    /// Setting up EGL, or importing the scanout buffer, failed.
    #[error("EGL: {0}")]
    Egl(#[from] EglError),
    /// The guest's export could not be imported.
    #[error("importing the guest buffer: {0}")]
    Import(#[from] TextureImportError),
    /// Compiling the shaders or drawing failed.
    #[error("GL: {0}")]
    Render(#[from] RenderError),
    /// The scanout buffer could not be exported as a dma-buf.
    #[error("scanout buffer: {0}")]
    Target(#[from] KmsError),
    /// The display does not import XRGB8888, the scanout buffers' format.
    #[error("the EGL display does not import XRGB8888 (the scanout buffer's format)")]
    NoXrgbImport,
    /// The scanout buffer's texture is not a complete colour attachment.
    #[error("the scanout buffer as FBO colour attachment: {0}")]
    Incomplete(String),
    /// The buffer id is the fill's own cache slot.
    #[error("buffer id {0} is reserved by the GL fill")]
    ReservedId(BufferId),
}

/// The thread's EGL binding before a [`GlFill`] call.
type Binding = Option<(
    egl::Display,
    egl::Context,
    Option<egl::Surface>,
    Option<egl::Surface>,
)>;

/// Makes `importer`'s context current; returns what was current before.
fn enter(importer: &EglImporter) -> Result<Binding, EglError> {
    let egl = importer.egl();
    let previous = egl.get_current_context().and_then(|context| {
        let display = egl.get_current_display()?;
        Some((
            display,
            context,
            egl.get_current_surface(egl::DRAW),
            egl.get_current_surface(egl::READ),
        ))
    });
    if previous.map(|p| p.1) != Some(importer.context()) {
        importer.make_current(None)?;
    }
    Ok(previous)
}

/// Makes `previous` current again (or nothing, if nothing was).
fn leave(importer: &EglImporter, previous: Binding) {
    let egl = importer.egl();
    let _ = match previous {
        Some((display, context, draw, read)) => {
            egl.make_current(display, draw, read, Some(context))
        }
        None => egl.make_current(importer.display(), None, None, None),
    };
}

/// Draws exports into scanout buffers with GL: the copy path of
/// [`KmsPresenter`](super::KmsPresenter) without CPU copies (see the [`kms` module
/// docs](crate::present::kms)).
pub struct GlFill {
    renderer: Option<GlRenderer>,
    fbo: Option<glow::Framebuffer>,
    importer: EglImporter,
    cpu: CpuFill,
    serial: u64,
    last: &'static str,
    target_broken: Option<String>,
    /// Formats EGL refused to import, with the reason: they go to the CPU fill
    /// without another try (and without another log line).
    cpu_formats: HashMap<PixelFormat, String>,
    notes: Vec<String>,
}

// SAFETY: the EGL context is current on a thread only for the duration of a `&mut self`
// call (`leave` restores the thread's previous binding before returning), so moving
// the fill to another thread moves a context that no thread has current, which EGL
// allows (a context may be made current on any thread that does not hold it elsewhere).
// The glow context is a table of function pointers resolved for that context. Drop makes
// the context current on the dropping thread itself.
unsafe impl Send for GlFill {}

impl std::fmt::Debug for GlFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlFill")
            .field("platform", self.importer.platform())
            .field("last", &self.last)
            .field("target_broken", &self.target_broken)
            .finish_non_exhaustive()
    }
}

impl GlFill {
    /// A GL fill on a headless EGL display ([`EglImporter::headless`]: the software
    /// device where there is one). Fails if EGL, the shaders, or XRGB8888 import are
    /// missing.
    pub fn new() -> Result<Self, GlFillError> {
        Self::with_importer(EglImporter::headless()?)
    }

    /// A GL fill on `importer`'s context.
    pub fn with_importer(importer: EglImporter) -> Result<Self, GlFillError> {
        if !importer
            .formats()
            .contains_key(&(PixelFormat::Xrgb8888.fourcc() as u32))
        {
            return Err(GlFillError::NoXrgbImport);
        }
        let previous = enter(&importer)?;
        let made = {
            let gl = importer.gl();
            let renderer = GlRenderer::new(gl);
            let renderer = match renderer {
                Ok(renderer) => renderer,
                Err(error) => {
                    leave(&importer, previous);
                    return Err(error.into());
                }
            };
            // SAFETY: object creation on the current context.
            match unsafe { gl.create_framebuffer() } {
                Ok(fbo) => Ok((renderer, fbo)),
                Err(message) => {
                    renderer.destroy(gl);
                    Err(RenderError::Gl {
                        call: "glGenFramebuffers",
                        message,
                    })
                }
            }
        };
        leave(&importer, previous);
        let (renderer, fbo) = made?;
        Ok(Self {
            renderer: Some(renderer),
            fbo: Some(fbo),
            importer,
            cpu: CpuFill,
            serial: 0,
            last: "gl",
            target_broken: None,
            cpu_formats: HashMap::new(),
            notes: Vec::new(),
        })
    }

    /// The EGL platform drawn on (e.g. the software device).
    pub fn platform(&self) -> &Platform {
        self.importer.platform()
    }

    /// Why the scanout buffers cannot be drawn with GL, if that was found: every frame
    /// then goes through the CPU fill.
    pub fn target_broken(&self) -> Option<&str> {
        self.target_broken.as_deref()
    }

    /// Formats EGL refused to import, with the reason; they are drawn by the CPU fill.
    pub fn cpu_formats(&self) -> &HashMap<PixelFormat, String> {
        &self.cpu_formats
    }

    /// Imports cached for guest buffers (tests and diagnostics).
    pub fn cached_imports(&self) -> usize {
        self.importer.cached_count()
    }

    fn draw(
        &mut self,
        export: &ExportedFramebuffer,
        target: &FillTarget<'_>,
    ) -> Result<(), GlFillError> {
        if export.buffer_id() == TARGET_SLOT {
            return Err(GlFillError::ReservedId(TARGET_SLOT));
        }
        let previous = enter(&self.importer)?;
        let drawn = self.draw_current(export, target);
        leave(&self.importer, previous);
        drawn
    }

    fn draw_current(
        &mut self,
        export: &ExportedFramebuffer,
        target: &FillTarget<'_>,
    ) -> Result<(), GlFillError> {
        let source = self.importer.import_export(export)?;
        let dmabuf = target.dmabuf()?;
        let (width, height) = target.size();
        let planes = vec![DmaBufPlane {
            fd: dmabuf.as_fd(),
            offset: 0,
            stride: target.stride(),
        }];
        self.serial += 1;
        let key = BufferKey {
            buffer_id: TARGET_SLOT,
            generation: self.serial,
        };
        let image = DmaBufImage {
            planes,
            format: PixelFormat::Xrgb8888,
            modifier: Modifier::Implicit,
            width,
            height,
            visible: Rect::full(width, height),
            y0_top: true,
        };
        let drawn = match self.importer.import(key, &image) {
            Ok(dest) => self.draw_into(export, &source, &dest, (width, height)),
            Err(error) => Err(self.broken(GlFillError::Egl(error))),
        };
        // The scanout buffer is new every frame: its image goes with the frame.
        self.importer.forget(TARGET_SLOT);
        drawn
    }

    /// Records that the scanout buffers cannot be drawn into; returns `error`.
    fn broken(&mut self, error: GlFillError) -> GlFillError {
        let line = format!("GL fill: scanout buffer unusable ({error}); CPU fill from now on");
        self.target_broken = Some(error.to_string());
        self.notes.push(line);
        error
    }

    fn draw_into(
        &mut self,
        export: &ExportedFramebuffer,
        source: &ImportedTexture,
        dest: &ImportedTexture,
        (width, height): (u32, u32),
    ) -> Result<(), GlFillError> {
        if dest.target != TextureTarget::Texture2D {
            return Err(self.broken(GlFillError::Incomplete(
                "imported as an external-only texture".into(),
            )));
        }
        if dest.chroma.is_some() {
            return Err(self.broken(GlFillError::Incomplete(
                "imported as two YUV planes, not renderable as RGB".into(),
            )));
        }
        let gl = self.importer.gl();
        let fbo = self.fbo.expect("present until drop");
        let renderer = self.renderer.as_ref().expect("present until drop");
        // SAFETY: binding this fill's FBO and attaching a texture the importer created on
        // the current context; both outlive the calls.
        let status = unsafe {
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(fbo));
            gl.framebuffer_texture_2d(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::TEXTURE_2D,
                Some(dest.texture),
                0,
            );
            gl.check_framebuffer_status(glow::FRAMEBUFFER)
        };
        let layout = export.layout();
        // DrawParams::src counts memory rows.
        let visible = layout.visible_in_memory();
        let result = if status != glow::FRAMEBUFFER_COMPLETE {
            Err(GlFillError::Incomplete(format!(
                "status {status:#06x} for {width}x{height} XRGB8888"
            )))
        } else {
            // GL's row 0 is the bottom and the scanout buffer's row 0 (lowest address)
            // is the top: draw the picture upside down in GL terms.
            renderer
                .draw(
                    gl,
                    source,
                    &DrawParams {
                        src: visible,
                        y0_top: !layout.y0_top(),
                        target_width: width,
                        target_height: height,
                        filter: if (visible.width, visible.height) == (width, height) {
                            Filter::Nearest
                        } else {
                            Filter::Linear
                        },
                    },
                )
                .map(|_| ())
                .map_err(GlFillError::from)
        };
        // SAFETY: detaching and unbinding on the current context; glFinish waits until
        // the scanout buffer holds the frame before the caller adds it to the plane.
        unsafe {
            if result.is_ok() {
                gl.finish();
            }
            gl.framebuffer_texture_2d(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::TEXTURE_2D,
                None,
                0,
            );
            gl.bind_framebuffer(glow::FRAMEBUFFER, None);
        }
        match result {
            Err(error @ GlFillError::Incomplete(_)) => Err(self.broken(error)),
            other => other,
        }
    }
}

impl FrameFill for GlFill {
    fn name(&self) -> &'static str {
        "gl"
    }

    fn last_used(&self) -> &'static str {
        self.last
    }

    fn fill(
        &mut self,
        export: &ExportedFramebuffer,
        target: &mut FillTarget<'_>,
    ) -> Result<(), KmsError> {
        let format = export.layout().format();
        if self.target_broken.is_none() && !self.cpu_formats.contains_key(&format) {
            match self.draw(export, target) {
                Ok(()) => {
                    self.last = "gl";
                    return Ok(());
                }
                Err(error) => {
                    let per_format =
                        matches!(error, GlFillError::Import(TextureImportError::Egl(_)));
                    self.notes.push(format!(
                        "buffer {} ({format} {}x{}): GL fill failed ({error}); CPU fill for {}",
                        export.buffer_id(),
                        export.layout().width(),
                        export.layout().height(),
                        if per_format {
                            "this format from now on"
                        } else {
                            "this frame"
                        }
                    ));
                    if per_format {
                        self.cpu_formats.insert(format, error.to_string());
                    }
                }
            }
        }
        self.last = "cpu";
        self.cpu.fill(export, target)
    }

    fn forget(&mut self, buffer_id: BufferId, generation: u64) {
        if self
            .importer
            .cached(buffer_id)
            .is_some_and(|(cached, _)| cached <= generation)
        {
            if let Ok(previous) = enter(&self.importer) {
                self.importer.forget(buffer_id);
                leave(&self.importer, previous);
            }
        }
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

impl Drop for GlFill {
    fn drop(&mut self) {
        let Ok(previous) = enter(&self.importer) else {
            return;
        };
        let gl = self.importer.gl();
        if let Some(fbo) = self.fbo.take() {
            // SAFETY: deleting this fill's FBO on its current context.
            unsafe { gl.delete_framebuffer(fbo) };
        }
        if let Some(renderer) = self.renderer.take() {
            renderer.destroy(gl);
        }
        leave(&self.importer, previous);
        // The importer (dropped next) deletes its cached images on its own context.
    }
}
