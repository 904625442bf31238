//! The EGL window presenter (gl=on): the export's dma-buf is imported as a GL texture
//! (cached by buffer id and generation) and drawn scaled to fit, with black bars, into
//! an EGL window surface of an xdg-toplevel. Nothing is copied by the CPU per frame.
//!
//! One surface, no subsurfaces: the bars are drawn by [`GlRenderer`] (it clears to black
//! and letterboxes). The EGL window is `window size × output scale` device pixels.
//! Frames are paced by the surface's frame callbacks; EGL's own wait is switched off
//! (`eglSwapInterval(0)`) so that `eglSwapBuffers` never blocks the caller.
//!
//! Guest memory is read only by our own GL draw: [`EglPresenter::present`] ends with
//! `glFinish` after `eglSwapBuffers`, so when it returns the GPU (or llvmpipe) has
//! finished sampling the export and the guest may write into that buffer again. The
//! compositor only ever reads our EGL window's buffers, never the guest's.

use std::ffi::c_void;

use khronos_egl as egl;
use smithay_client_toolkit::compositor::{CompositorState, FrameCallbackData};
use smithay_client_toolkit::shell::WaylandSurface;
use wayland_client::{Connection, Proxy};
use wayland_egl::WlEglSurface;

use super::presenter::sealed::impl_window;
use super::window::{self, missing, window_handlers, Client, CoreOptions, WindowCore};
use super::{PresentError, PresentPath, Presenter, PresenterOptions, ShowError, Shown};
use crate::export::ExportedFramebuffer;
use crate::import::egl::{EglError, EglImporter, ImportedTexture, TextureImportError};
use crate::present::gl::{DrawParams, Filter, GlRenderer, RenderError};
use crate::rect::Rect;

/// Why the EGL presenter could not show a frame.
#[derive(Debug, thiserror::Error)]
pub enum GlPresentError {
    /// The Wayland side failed (connection, protocol, missing global).
    #[error(transparent)]
    Wayland(#[from] PresentError),
    /// EGL could not be set up on the Wayland display, or an EGL call failed.
    #[error(transparent)]
    Egl(#[from] EglError),
    /// The export could not be imported (revoked, scattered without udmabuf, or EGL
    /// refused it): the caller may fall back to the CPU path.
    #[error(transparent)]
    Import(#[from] TextureImportError),
    /// Drawing failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// `wl_egl_window_create` failed.
    #[error("wl_egl_window_create failed: {0}")]
    EglWindow(String),
}

impl GlPresentError {
    /// Whether the error is about this frame (a CPU fallback may show it) rather than
    /// about the window or the connection.
    pub fn is_import_error(&self) -> bool {
        matches!(self, Self::Import(_))
    }
}

/// The Wayland-side state the event queue dispatches into.
#[derive(Debug)]
struct App {
    /// The window (no letterbox: the renderer draws the bars); its `resized` flag says
    /// the window changed size or scale since the last draw.
    core: WindowCore,
}

impl App {
    /// Buffer size of the EGL window in device pixels.
    fn buffer_size(&self) -> Option<(u32, u32)> {
        let (width, height) = self.core.window_size?;
        let scale = self.core.scale;
        Some((
            width.saturating_mul(scale).clamp(1, i32::MAX as u32),
            height.saturating_mul(scale).clamp(1, i32::MAX as u32),
        ))
    }
}

/// The EGL window surface and its `wl_egl_window`, destroyed in that order.
#[derive(Debug)]
struct EglWindow {
    surface: egl::Surface,
    window: WlEglSurface,
    size: (u32, u32),
}

/// Shows exports through EGL in a Wayland window (gl=on).
///
/// Loop: [`dispatch`](Self::dispatch) events; when [`is_ready`](Self::is_ready) and the
/// guest has a new frame, or [`needs_redraw`](Self::needs_redraw) (resize), call
/// [`present`](Self::present). After a revoke, call [`forget`](Self::forget).
#[derive(Debug)]
pub struct EglPresenter {
    // Drop order matters: GL objects, then the EGL surface, the wl_egl_window, the
    // importer (context), the window, and the connection last (see Drop).
    renderer: Option<GlRenderer>,
    egl_window: Option<EglWindow>,
    importer: Option<EglImporter>,
    last: Option<ExportedFramebuffer>,
    filter: Filter,
    client: Client<App>,
}

impl EglPresenter {
    /// Connects to the compositor of [`PresenterOptions::socket`] and opens the window
    /// and an EGL display on it.
    pub fn connect(options: PresenterOptions) -> Result<Self, GlPresentError> {
        let (conn, globals, queue, qh) = window::open::<App>(options.socket.as_deref())?;
        let compositor = CompositorState::bind(&globals, &qh).map_err(missing("wl_compositor"))?;
        let core = WindowCore::new(
            &globals,
            &qh,
            &compositor,
            None,
            CoreOptions {
                title: options.title,
                app_id: options.app_id,
                default_size: (options.width.max(1), options.height.max(1)),
                report_scale: true,
            },
        )?;
        // SAFETY: the display pointer belongs to `conn`, which the presenter keeps and
        // drops after the importer (Drop below).
        let importer = unsafe { EglImporter::from_wayland(display_ptr(&conn)) }?;
        let mut client = Client::new(conn, queue, App { core });
        client.roundtrip()?;
        let renderer = GlRenderer::new(importer.gl())?;
        Ok(Self {
            renderer: Some(renderer),
            egl_window: None,
            importer: Some(importer),
            last: None,
            filter: Filter::Linear,
            client,
        })
    }

    fn importer(&self) -> &EglImporter {
        self.importer.as_ref().expect("importer lives until drop")
    }

    fn importer_mut(&mut self) -> &mut EglImporter {
        self.importer.as_mut().expect("importer lives until drop")
    }

    /// The importer (its formats, cache statistics).
    pub fn egl_importer(&self) -> &EglImporter {
        self.importer()
    }

    /// Sets the texture filter used when the picture is scaled (linear by default).
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    /// Sets the window title.
    pub fn set_title(&self, title: &str) {
        self.client.app.core.window.set_title(title);
    }

    /// Integer output scale of the window.
    pub fn scale(&self) -> u32 {
        self.client.app.core.scale
    }

    /// Creates or resizes the EGL window to the window's buffer size.
    fn ensure_egl_window(&mut self) -> Result<(), GlPresentError> {
        let Some(size) = self.client.app.buffer_size() else {
            return Ok(());
        };
        let surface = self.client.app.core.window.wl_surface().clone();
        if let Some(window) = &mut self.egl_window {
            if window.size != size {
                window.window.resize(size.0 as i32, size.1 as i32, 0, 0);
                window.size = size;
            }
        } else {
            let window = WlEglSurface::new(surface.id(), size.0 as i32, size.1 as i32)
                .map_err(|e| GlPresentError::EglWindow(e.to_string()))?;
            let importer = self.importer.as_ref().expect("importer lives until drop");
            let egl = importer.egl();
            // SAFETY: on the Wayland platform the native window is the
            // `struct wl_egl_window *`, which lives in `window` and outlives the surface
            // (EglWindow's fields are dropped surface first, see Drop).
            let egl_surface = unsafe {
                egl.create_platform_window_surface(
                    importer.display(),
                    importer.config(),
                    window.ptr() as *mut c_void,
                    &[egl::ATTRIB_NONE],
                )
            }
            .map_err(|error| EglError::Call {
                call: "eglCreatePlatformWindowSurface",
                error,
            })?;
            self.egl_window = Some(EglWindow {
                surface: egl_surface,
                window,
                size,
            });
            importer.make_current(Some(egl_surface))?;
            // Our frame callbacks pace; EGL must not wait for its own in SwapBuffers.
            let _ = egl.swap_interval(importer.display(), 0);
        }
        surface.set_buffer_scale(self.client.app.core.scale as i32);
        Ok(())
    }

    /// Draws `export` (or, with `None`, the last export again, e.g. after a resize)
    /// scaled to fit the window and swaps. The import is cached by buffer id and
    /// generation: a frame of an already imported buffer costs one draw call.
    ///
    /// Call only when [`is_ready`](Self::is_ready); otherwise nothing is drawn and
    /// `Ok(false)` is returned. On an import error the window keeps its last frame.
    ///
    /// When this returns `Ok(true)` the export's memory is no longer read (the draw is
    /// followed by `glFinish`): the guest may draw into that buffer right away.
    pub fn present(
        &mut self,
        export: Option<&ExportedFramebuffer>,
    ) -> Result<bool, GlPresentError> {
        if !self.is_ready() {
            return Ok(false);
        }
        self.ensure_egl_window()?;
        let Some(window) = &self.egl_window else {
            return Ok(false);
        };
        let (surface, size) = (window.surface, window.size);
        let export = export.cloned().or_else(|| self.last.clone());
        // Current before the import: with several windows in one thread (one per QEMU
        // head) another presenter's context may be current, and the import's texture
        // calls would go to it (seen: GL_INVALID_VALUE from glEGLImageTargetTexture2DOES
        // on the second head).
        self.importer().make_current(Some(surface))?;
        let texture = match &export {
            Some(export) => Some((self.importer_mut().import_export(export)?, export.clone())),
            None => None,
        };
        let importer = self.importer();
        let gl = importer.gl();
        let renderer = self.renderer.as_ref().expect("renderer lives until drop");
        match &texture {
            Some((texture, export)) => {
                draw_export(renderer, gl, texture, export, size, self.filter)?;
            }
            None => clear_black(gl, size),
        }
        let wl_surface = self.client.app.core.window.wl_surface().clone();
        wl_surface.frame(&self.client.qh, FrameCallbackData(wl_surface.clone()));
        importer
            .egl()
            .swap_buffers(importer.display(), surface)
            .map_err(|error| EglError::Call {
                call: "eglSwapBuffers",
                error,
            })?;
        // Back-pressure: the draw sampled guest memory; wait until it is done so the
        // guest may overwrite the buffer as soon as present() returns. (The swap only
        // flushes; a GPU or llvmpipe may still be reading the dma-buf.)
        // SAFETY: the importer's context is current on this thread (made so above).
        unsafe { glow::HasContext::finish(gl) };
        self.client.app.core.frame_pending = true;
        self.client.app.core.resized = false;
        if let Some((_, export)) = texture {
            self.last = Some(export);
        }
        self.flush()?;
        Ok(true)
    }
}

impl_window!(EglPresenter);

impl Presenter for EglPresenter {
    fn path(&self) -> PresentPath {
        PresentPath::EglImport
    }

    fn needs_redraw(&self) -> bool {
        self.client.app.core.resized
    }

    fn show(&mut self, export: &ExportedFramebuffer, _damage: &[Rect]) -> Result<Shown, ShowError> {
        // The whole window is drawn each time: damage does not narrow a GL draw.
        match self.present(Some(export)) {
            Ok(presented) => Ok(Shown::zero_copy(presented)),
            Err(error) if error.is_import_error() => Err(ShowError::Refused(error.into())),
            Err(error) => Err(ShowError::failed(error)),
        }
    }

    fn forget(&mut self, buffer_id: u64) -> bool {
        if self
            .last
            .as_ref()
            .is_some_and(|e| e.buffer_id() == buffer_id)
        {
            self.last = None;
        }
        // The texture is deleted on this presenter's context (see `present`).
        let surface = self.egl_window.as_ref().map(|w| w.surface);
        if self.importer().make_current(surface).is_err() {
            return false;
        }
        self.importer_mut().forget(buffer_id)
    }
}

/// Draws an export's texture cropped to its visible rect, flipped for y0_top.
fn draw_export(
    renderer: &GlRenderer,
    gl: &glow::Context,
    texture: &ImportedTexture,
    export: &ExportedFramebuffer,
    (width, height): (u32, u32),
    filter: Filter,
) -> Result<(), RenderError> {
    let layout = export.layout();
    // DrawParams::src counts memory rows.
    let visible = layout.visible_in_memory();
    // SAFETY: binding the default framebuffer (the window surface) is always valid.
    unsafe { glow::HasContext::bind_framebuffer(gl, glow::FRAMEBUFFER, None) };
    renderer.draw(
        gl,
        texture,
        &DrawParams {
            src: visible,
            y0_top: layout.y0_top(),
            target_width: width,
            target_height: height,
            filter,
        },
    )?;
    Ok(())
}

fn clear_black(gl: &glow::Context, (width, height): (u32, u32)) {
    use glow::HasContext;
    // SAFETY: plain state and clear calls on the current context.
    unsafe {
        gl.bind_framebuffer(glow::FRAMEBUFFER, None);
        gl.viewport(0, 0, width as i32, height as i32);
        gl.clear_color(0.0, 0.0, 0.0, 1.0);
        gl.clear(glow::COLOR_BUFFER_BIT);
    }
}

/// The `struct wl_display *` of a connection on libwayland's client.
fn display_ptr(conn: &Connection) -> *mut c_void {
    conn.backend().display_ptr().cast()
}

impl Drop for EglPresenter {
    fn drop(&mut self) {
        if let Some(importer) = &self.importer {
            // GL objects are deleted on the importer's context.
            let _ = importer.make_current(self.egl_window.as_ref().map(|w| w.surface));
            if let Some(renderer) = self.renderer.take() {
                renderer.destroy(importer.gl());
            }
            let _ = importer.make_current(None);
            if let Some(window) = self.egl_window.take() {
                let _ = importer
                    .egl()
                    .destroy_surface(importer.display(), window.surface);
                drop(window.window);
            }
        }
        // The importer deletes its textures and images and destroys its context.
        self.importer = None;
    }
}

window_handlers!(App, core);
