//! Drawing an imported framebuffer with GLES 3 (glow): crop to the visible rectangle,
//! flip for `y0_top`, scale to fit with black bars, force alpha for formats without one.
//!
//! [`GlRenderer::draw`] draws whenever it is called; the caller decides when there is a
//! new frame (a damage event, a new generation) and calls it only then.
//! [`OffscreenTarget`] and [`read_rgba`] read pixels back for tests.

use glow::HasContext;

use crate::import::egl::{ImportedTexture, TextureTarget};
use crate::rect::Rect;

const BLIT_VERT: &str = include_str!("../../shaders/blit.vert");
const BLIT_FRAG: &str = include_str!("../../shaders/blit.frag");
const BLIT_EXTERNAL_FRAG: &str = include_str!("../../shaders/blit_external.frag");
const BLIT_NV12_FRAG: &str = include_str!("../../shaders/blit_nv12.frag");

/// Why drawing failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A shader did not compile.
    #[error("shader {shader} does not compile: {log}")]
    Compile {
        /// The shader file.
        shader: &'static str,
        /// The compiler's log.
        log: String,
    },
    /// A program did not link.
    #[error("program {program} does not link: {log}")]
    Link {
        /// Which program.
        program: &'static str,
        /// The linker's log.
        log: String,
    },
    /// A GL call failed.
    #[error("GL {call} failed: {message}")]
    Gl {
        /// The call or step.
        call: &'static str,
        /// The error.
        message: String,
    },
    /// The visible rectangle does not lie inside the backing.
    #[error(
        "visible rect {}x{}+{}+{} does not fit the {width}x{height} backing",
        rect.width, rect.height, rect.x, rect.y
    )]
    BadSourceRect {
        /// The visible rectangle.
        rect: Rect,
        /// Backing width.
        width: u32,
        /// Backing height.
        height: u32,
    },
    /// The texture is external but the external program is unavailable.
    #[error("cannot draw an external (YUV) texture: {reason}")]
    ExternalUnsupported {
        /// Why the external program is missing.
        reason: String,
    },
}

/// Texture filtering when scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Nearest texel (exact at 1:1, blocky when scaled).
    Nearest,
    /// Bilinear.
    #[default]
    Linear,
}

/// What to draw and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawParams {
    /// The visible rectangle inside the backing, in memory rows: `y` counts from the
    /// row at the lowest address, whatever the orientation.
    pub src: Rect,
    /// True: memory row 0 is the top of the picture. False: it is the bottom (GL's
    /// convention).
    pub y0_top: bool,
    /// Size of the framebuffer drawn into (the window or FBO).
    pub target_width: u32,
    /// Height of the framebuffer drawn into.
    pub target_height: u32,
    /// Filtering.
    pub filter: Filter,
}

/// Where a `src_width`×`src_height` picture lands inside a `dst_width`×`dst_height`
/// target when scaled to fit keeping its aspect ratio, centred (the rest are bars).
///
/// The result is in GL viewport coordinates (origin at the bottom left; with centring
/// the bars are equal up to one pixel, the extra pixel going to the top/right).
pub fn letterbox(src_width: u32, src_height: u32, dst_width: u32, dst_height: u32) -> Rect {
    if src_width == 0 || src_height == 0 || dst_width == 0 || dst_height == 0 {
        return Rect::full(0, 0);
    }
    let (sw, sh, dw, dh) = (
        u64::from(src_width),
        u64::from(src_height),
        u64::from(dst_width),
        u64::from(dst_height),
    );
    // Rounded to the nearest pixel, at least one.
    if dw * sh <= dh * sw {
        let h = ((dw * sh * 2 + sw) / (sw * 2)).clamp(1, dh) as u32;
        Rect {
            x: 0,
            y: (dst_height - h) / 2,
            width: dst_width,
            height: h,
        }
    } else {
        let w = ((dh * sw * 2 + sh) / (sh * 2)).clamp(1, dw) as u32;
        Rect {
            x: (dst_width - w) / 2,
            y: 0,
            width: w,
            height: dst_height,
        }
    }
}

#[derive(Debug)]
struct Program {
    program: glow::Program,
    u_src: Option<glow::UniformLocation>,
    u_opaque: Option<glow::UniformLocation>,
    u_tex: Option<glow::UniformLocation>,
    u_chroma: Option<glow::UniformLocation>,
}

/// Draws imported textures into the current framebuffer.
#[derive(Debug)]
pub struct GlRenderer {
    program_2d: Program,
    program_external: Result<Program, String>,
    program_nv12: Program,
    vao: glow::VertexArray,
}

impl GlRenderer {
    /// Compiles the shaders on the current context. The external-texture program is
    /// optional: without `GL_OES_EGL_image_external_essl3` only YUV drawing fails.
    pub fn new(gl: &glow::Context) -> Result<Self, RenderError> {
        let program_2d = build_program(gl, "blit.frag", BLIT_FRAG)?;
        let program_nv12 = match build_program(gl, "blit_nv12.frag", BLIT_NV12_FRAG) {
            Ok(program) => program,
            Err(e) => {
                // SAFETY: deleting a program just created on the current context.
                unsafe { gl.delete_program(program_2d.program) };
                return Err(e);
            }
        };
        let program_external = if gl
            .supported_extensions()
            .contains("GL_OES_EGL_image_external_essl3")
        {
            build_program(gl, "blit_external.frag", BLIT_EXTERNAL_FRAG).map_err(|e| e.to_string())
        } else {
            Err("GL extension GL_OES_EGL_image_external_essl3 is missing".to_owned())
        };
        // SAFETY: plain GL object creation on the current context.
        let vao = unsafe { gl.create_vertex_array() }.map_err(|message| RenderError::Gl {
            call: "glGenVertexArrays",
            message,
        })?;
        Ok(Self {
            program_2d,
            program_external,
            program_nv12,
            vao,
        })
    }

    /// Whether YUV (external) textures can be drawn; the reason if not.
    pub fn external_support(&self) -> Result<(), &str> {
        self.program_external
            .as_ref()
            .map(|_| ())
            .map_err(|e| e.as_str())
    }

    /// Clears the bound framebuffer to black and draws `texture` cropped to
    /// `params.src`, flipped for `params.y0_top`, scaled to fit. Returns the viewport
    /// the picture covers (GL coordinates, origin bottom left).
    pub fn draw(
        &self,
        gl: &glow::Context,
        texture: &ImportedTexture,
        params: &DrawParams,
    ) -> Result<Rect, RenderError> {
        let src = params.src;
        let fits = src.width > 0
            && src.height > 0
            && src
                .x
                .checked_add(src.width)
                .is_some_and(|r| r <= texture.width)
            && src
                .y
                .checked_add(src.height)
                .is_some_and(|b| b <= texture.height);
        if !fits {
            return Err(RenderError::BadSourceRect {
                rect: src,
                width: texture.width,
                height: texture.height,
            });
        }
        let program = match texture.target {
            // NV12 as luma + chroma planes: converted in the shader, texels fetched
            // unfiltered (the filter does not apply).
            TextureTarget::Texture2D if texture.chroma.is_some() => &self.program_nv12,
            TextureTarget::Texture2D => &self.program_2d,
            TextureTarget::External => self.program_external.as_ref().map_err(|reason| {
                RenderError::ExternalUnsupported {
                    reason: reason.clone(),
                }
            })?,
        };
        let (w, h) = (texture.width as f32, texture.height as f32);
        let u0 = src.x as f32 / w;
        let u1 = (src.x + src.width) as f32 / w;
        let first = src.y as f32 / h;
        let last = (src.y + src.height) as f32 / h;
        let (v_top, v_bottom) = if params.y0_top {
            (first, last)
        } else {
            (last, first)
        };
        let opaque = if texture.format.has_alpha() { 0.0 } else { 1.0 };
        let view = letterbox(
            src.width,
            src.height,
            params.target_width,
            params.target_height,
        );
        let filter = match params.filter {
            Filter::Nearest => glow::NEAREST,
            Filter::Linear => glow::LINEAR,
        } as i32;
        let target = texture.target.gl_enum();
        // SAFETY: GL calls on the current context with objects this renderer and the
        // importer created on it; the texture is live while its cache entry is.
        unsafe {
            gl.disable(glow::SCISSOR_TEST);
            gl.disable(glow::BLEND);
            gl.disable(glow::DEPTH_TEST);
            gl.viewport(
                0,
                0,
                params.target_width as i32,
                params.target_height as i32,
            );
            gl.clear_color(0.0, 0.0, 0.0, 1.0);
            gl.clear(glow::COLOR_BUFFER_BIT);
            if view.width == 0 || view.height == 0 {
                return Ok(view);
            }
            gl.viewport(
                view.x as i32,
                view.y as i32,
                view.width as i32,
                view.height as i32,
            );
            gl.use_program(Some(program.program));
            gl.active_texture(glow::TEXTURE0);
            gl.bind_texture(target, Some(texture.texture));
            gl.tex_parameter_i32(target, glow::TEXTURE_MIN_FILTER, filter);
            gl.tex_parameter_i32(target, glow::TEXTURE_MAG_FILTER, filter);
            gl.uniform_1_i32(program.u_tex.as_ref(), 0);
            if let Some(chroma) = texture.chroma {
                gl.active_texture(glow::TEXTURE1);
                gl.bind_texture(glow::TEXTURE_2D, Some(chroma));
                gl.uniform_1_i32(program.u_chroma.as_ref(), 1);
            }
            gl.uniform_4_f32(program.u_src.as_ref(), u0, v_top, u1, v_bottom);
            gl.uniform_1_f32(program.u_opaque.as_ref(), opaque);
            gl.bind_vertex_array(Some(self.vao));
            gl.draw_arrays(glow::TRIANGLE_STRIP, 0, 4);
            gl.bind_vertex_array(None);
            if texture.chroma.is_some() {
                gl.bind_texture(glow::TEXTURE_2D, None);
                gl.active_texture(glow::TEXTURE0);
            }
            gl.bind_texture(target, None);
            gl.use_program(None);
            match gl.get_error() {
                glow::NO_ERROR => Ok(view),
                error => Err(RenderError::Gl {
                    call: "draw",
                    message: format!("GL error {error:#06x}"),
                }),
            }
        }
    }

    /// Deletes the GL objects (on the current context).
    pub fn destroy(self, gl: &glow::Context) {
        // SAFETY: deleting objects this renderer created on the current context.
        unsafe {
            gl.delete_program(self.program_2d.program);
            gl.delete_program(self.program_nv12.program);
            if let Ok(program) = self.program_external {
                gl.delete_program(program.program);
            }
            gl.delete_vertex_array(self.vao);
        }
    }
}

fn build_program(
    gl: &glow::Context,
    frag_name: &'static str,
    frag_source: &str,
) -> Result<Program, RenderError> {
    // SAFETY: shader and program creation on the current context; every object is
    // deleted on the error paths.
    unsafe {
        let vert = compile(gl, glow::VERTEX_SHADER, "blit.vert", BLIT_VERT)?;
        let frag = match compile(gl, glow::FRAGMENT_SHADER, frag_name, frag_source) {
            Ok(frag) => frag,
            Err(e) => {
                gl.delete_shader(vert);
                return Err(e);
            }
        };
        let program = gl.create_program().map_err(|message| RenderError::Gl {
            call: "glCreateProgram",
            message,
        })?;
        gl.attach_shader(program, vert);
        gl.attach_shader(program, frag);
        gl.link_program(program);
        gl.detach_shader(program, vert);
        gl.detach_shader(program, frag);
        gl.delete_shader(vert);
        gl.delete_shader(frag);
        if !gl.get_program_link_status(program) {
            let log = gl.get_program_info_log(program);
            gl.delete_program(program);
            return Err(RenderError::Link {
                program: frag_name,
                log,
            });
        }
        Ok(Program {
            u_src: gl.get_uniform_location(program, "u_src"),
            u_opaque: gl.get_uniform_location(program, "u_opaque"),
            u_tex: gl.get_uniform_location(program, "u_tex"),
            u_chroma: gl.get_uniform_location(program, "u_chroma"),
            program,
        })
    }
}

/// # Safety
/// A GL context must be current.
unsafe fn compile(
    gl: &glow::Context,
    kind: u32,
    name: &'static str,
    source: &str,
) -> Result<glow::Shader, RenderError> {
    // SAFETY: the caller guarantees a current context.
    unsafe {
        let shader = gl.create_shader(kind).map_err(|message| RenderError::Gl {
            call: "glCreateShader",
            message,
        })?;
        gl.shader_source(shader, source);
        gl.compile_shader(shader);
        if gl.get_shader_compile_status(shader) {
            Ok(shader)
        } else {
            let log = gl.get_shader_info_log(shader);
            gl.delete_shader(shader);
            Err(RenderError::Compile { shader: name, log })
        }
    }
}

/// Reads `width`×`height` RGBA8 pixels at the origin of the bound read framebuffer,
/// returned top row first (GL reads bottom row first; this flips).
pub fn read_rgba(gl: &glow::Context, width: u32, height: u32) -> Vec<u8> {
    let row = width as usize * 4;
    let mut pixels = vec![0u8; row * height as usize];
    // SAFETY: the buffer holds width*height RGBA8 pixels with PACK_ALIGNMENT 4 (rows of
    // 4-byte pixels need no padding).
    unsafe {
        gl.pixel_store_i32(glow::PACK_ALIGNMENT, 4);
        gl.read_pixels(
            0,
            0,
            width as i32,
            height as i32,
            glow::RGBA,
            glow::UNSIGNED_BYTE,
            glow::PixelPackData::Slice(Some(&mut pixels)),
        );
    }
    let mut flipped = Vec::with_capacity(pixels.len());
    for line in pixels.chunks_exact(row.max(1)).rev() {
        flipped.extend_from_slice(line);
    }
    flipped
}

/// An RGBA8 framebuffer object to draw into and read back (tests, screenshots).
#[derive(Debug)]
pub struct OffscreenTarget {
    fbo: glow::Framebuffer,
    renderbuffer: glow::Renderbuffer,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl OffscreenTarget {
    /// Creates an RGBA8 renderbuffer-backed FBO and binds it for drawing and reading.
    pub fn new(gl: &glow::Context, width: u32, height: u32) -> Result<Self, RenderError> {
        let gl_err = |call| move |message| RenderError::Gl { call, message };
        // SAFETY: object creation and binding on the current context.
        unsafe {
            let renderbuffer = gl
                .create_renderbuffer()
                .map_err(gl_err("glGenRenderbuffers"))?;
            gl.bind_renderbuffer(glow::RENDERBUFFER, Some(renderbuffer));
            gl.renderbuffer_storage(glow::RENDERBUFFER, glow::RGBA8, width as i32, height as i32);
            let fbo = gl
                .create_framebuffer()
                .map_err(gl_err("glGenFramebuffers"))?;
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(fbo));
            gl.framebuffer_renderbuffer(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::RENDERBUFFER,
                Some(renderbuffer),
            );
            let status = gl.check_framebuffer_status(glow::FRAMEBUFFER);
            let target = Self {
                fbo,
                renderbuffer,
                width,
                height,
            };
            if status != glow::FRAMEBUFFER_COMPLETE {
                target.destroy(gl);
                return Err(RenderError::Gl {
                    call: "glCheckFramebufferStatus",
                    message: format!("status {status:#06x} for {width}x{height} RGBA8"),
                });
            }
            Ok(target)
        }
    }

    /// Binds the FBO for drawing and reading.
    pub fn bind(&self, gl: &glow::Context) {
        // SAFETY: binding a live FBO on the current context.
        unsafe { gl.bind_framebuffer(glow::FRAMEBUFFER, Some(self.fbo)) };
    }

    /// Reads the whole FBO as RGBA8, top row first.
    pub fn read_rgba(&self, gl: &glow::Context) -> Vec<u8> {
        self.bind(gl);
        read_rgba(gl, self.width, self.height)
    }

    /// Deletes the FBO and its renderbuffer and binds the default framebuffer.
    pub fn destroy(self, gl: &glow::Context) {
        // SAFETY: deleting objects this target created on the current context.
        unsafe {
            gl.bind_framebuffer(glow::FRAMEBUFFER, None);
            gl.delete_framebuffer(self.fbo);
            gl.delete_renderbuffer(self.renderbuffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_fits_and_centres() {
        assert_eq!(letterbox(64, 32, 64, 32), Rect::full(64, 32));
        // Wider target: bars left and right.
        assert_eq!(
            letterbox(64, 32, 128, 32),
            Rect {
                x: 32,
                y: 0,
                width: 64,
                height: 32
            }
        );
        // Taller target: bars top and bottom.
        assert_eq!(
            letterbox(64, 32, 64, 64),
            Rect {
                x: 0,
                y: 16,
                width: 64,
                height: 32
            }
        );
        // 1920x1080 into 1280x1024.
        assert_eq!(
            letterbox(1920, 1080, 1280, 1024),
            Rect {
                x: 0,
                y: 152,
                width: 1280,
                height: 720
            }
        );
        assert_eq!(letterbox(0, 10, 10, 10), Rect::full(0, 0));
    }
}
