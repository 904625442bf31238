//! Host EGL tests on llvmpipe: memfds imported as linear "dma-bufs" (Mesa's software
//! path accepts them), rendered with `GlRenderer` into an FBO and read back.
//!
//! These tests do not skip: without a headless EGL display that imports memfds they
//! fail with the reason. On a guest with real udmabufs the same checks apply.
#![cfg(feature = "egl")]

use std::os::fd::AsFd;

use guestfb::format::{Modifier, PixelFormat, ALL_FORMATS};
use guestfb::import::convert::nv12_to_rgb;
use std::os::fd::BorrowedFd;

use guestfb::format::fourcc_name;
use guestfb::import::dmabuf::{DmaBufImage, DmaBufPlane};
use guestfb::import::egl::{BufferKey, EglError, EglImporter, ImportedTexture, TextureTarget};
use guestfb::present::gl::{letterbox, DrawParams, Filter, GlRenderer, OffscreenTarget};
use guestfb::rect::Rect;
use guestfb::sys::dmabuf::{Access, Mapping};
use guestfb::sys::memfd::Memfd;

const I915_X_TILED: u64 = 0x0100_0000_0000_0001;

/// A test framebuffer in a memfd: its bytes and the RGBA8 pixels it should show
/// (memory rows, row 0 first).
struct Frame {
    memfd: Memfd,
    format: PixelFormat,
    width: u32,
    height: u32,
    offsets: Vec<u32>,
    strides: Vec<u32>,
    expected: Vec<[u8; 4]>,
}

impl Frame {
    fn image(&self) -> DmaBufImage<BorrowedFd<'_>> {
        let planes = (self.offsets.iter().zip(&self.strides))
            .map(|(&offset, &stride)| DmaBufPlane {
                fd: self.memfd.as_fd(),
                offset,
                stride,
            })
            .collect();
        DmaBufImage {
            planes,
            format: self.format,
            modifier: Modifier::LINEAR,
            width: self.width,
            height: self.height,
            visible: Rect::full(self.width, self.height),
            y0_top: true,
        }
    }
}

/// Deterministic pseudo-random bytes.
fn noise(x: u32, y: u32, salt: u32) -> u8 {
    let mut h = x
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
        .wrapping_add(salt.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    (h >> 8) as u8
}

fn unorm(value: u32, max: u32) -> u8 {
    ((value * 255 + max / 2) / max) as u8
}

fn write_memfd(len: usize, bytes: &[u8]) -> Memfd {
    let memfd = Memfd::create("guestfb-egl-test").expect("memfd_create");
    memfd.set_size(len as u64).expect("ftruncate");
    let map = Mapping::new(memfd.as_fd(), 0, len, Access::ReadWrite).expect("mmap memfd");
    map.bytes_mut()
        .unwrap()
        .write_at(0, bytes)
        .expect("fits the memfd");
    memfd
}

/// Builds a packed-RGB frame with padded stride and a plane offset; `salt` varies it.
fn rgb_frame(format: PixelFormat, width: u32, height: u32, salt: u32) -> Frame {
    let bpp = format.bytes_per_pixel();
    let stride = (width * bpp).next_multiple_of(64) + 64;
    let offset = 256;
    let len = (offset + stride * height) as usize;
    let mut bytes = vec![0xEEu8; len];
    let mut expected = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let (r, g, b, a) = (
                noise(x, y, salt),
                noise(x, y, salt + 1),
                noise(x, y, salt + 2),
                noise(x, y, salt + 3),
            );
            let at = (offset + y * stride + x * bpp) as usize;
            let px = &mut bytes[at..at + bpp as usize];
            let junk = 0x5A;
            let rgba = match format {
                PixelFormat::Xrgb8888 => {
                    px.copy_from_slice(&[b, g, r, junk]);
                    [r, g, b, 255]
                }
                PixelFormat::Argb8888 => {
                    px.copy_from_slice(&[b, g, r, a]);
                    [r, g, b, a]
                }
                PixelFormat::Xbgr8888 => {
                    px.copy_from_slice(&[r, g, b, junk]);
                    [r, g, b, 255]
                }
                PixelFormat::Abgr8888 => {
                    px.copy_from_slice(&[r, g, b, a]);
                    [r, g, b, a]
                }
                PixelFormat::Rgb565 => {
                    let (r5, g6, b5) = (u32::from(r >> 3), u32::from(g >> 2), u32::from(b >> 3));
                    let word = ((r5 << 11) | (g6 << 5) | b5) as u16;
                    px.copy_from_slice(&word.to_le_bytes());
                    // GL's unorm conversion; llvmpipe expands by bit replication,
                    // which differs by one in places (tolerated below).
                    [unorm(r5, 31), unorm(g6, 63), unorm(b5, 31), 255]
                }
                PixelFormat::Bgr888 => {
                    px.copy_from_slice(&[r, g, b]);
                    [r, g, b, 255]
                }
                PixelFormat::Rgb888 => {
                    px.copy_from_slice(&[b, g, r]);
                    [r, g, b, 255]
                }
                PixelFormat::Nv12 => unreachable!("not a packed format"),
            };
            expected.push(rgba);
        }
    }
    Frame {
        memfd: write_memfd(len, &bytes),
        format,
        width,
        height,
        offsets: vec![offset],
        strides: vec![stride],
        expected,
    }
}

/// An NV12 frame with padded strides (odd sizes allowed: the chroma plane is
/// ceil(w/2)×ceil(h/2)); expected pixels from the CPU converter's `nv12_to_rgb`.
fn nv12_frame(width: u32, height: u32, salt: u32) -> Frame {
    let y_stride = width.next_multiple_of(64) + 64;
    let uv_stride = y_stride + 32;
    let uv_offset = y_stride * height + 128;
    let len = (uv_offset + uv_stride * height.div_ceil(2)) as usize;
    let mut bytes = vec![0u8; len];
    let mut expected = Vec::new();
    let chroma = |cx: u32, cy: u32| {
        (
            16 + noise(cx, cy, salt + 1) % 225,
            16 + noise(cx, cy, salt + 2) % 225,
        )
    };
    for cy in 0..height.div_ceil(2) {
        for cx in 0..width.div_ceil(2) {
            let (u, v) = chroma(cx, cy);
            let at = (uv_offset + cy * uv_stride + cx * 2) as usize;
            bytes[at] = u;
            bytes[at + 1] = v;
        }
    }
    for y in 0..height {
        for x in 0..width {
            let luma = 16 + noise(x, y, salt) % 220;
            bytes[(y * y_stride + x) as usize] = luma;
            let (u, v) = chroma(x / 2, y / 2);
            let [r, g, b] = nv12_to_rgb(luma, u, v);
            expected.push([r, g, b, 255]);
        }
    }
    Frame {
        memfd: write_memfd(len, &bytes),
        format: PixelFormat::Nv12,
        width,
        height,
        offsets: vec![0, uv_offset],
        strides: vec![y_stride, uv_stride],
        expected,
    }
}

struct Gl {
    importer: EglImporter,
    renderer: GlRenderer,
}

impl Gl {
    fn new() -> Self {
        let importer = EglImporter::headless().unwrap_or_else(|e| {
            panic!("headless EGL (llvmpipe) is needed for these tests and failed: {e}")
        });
        let renderer = GlRenderer::new(importer.gl()).expect("GlRenderer::new");
        Self { importer, renderer }
    }

    fn import(&mut self, key: BufferKey, frame: &Frame) -> Result<ImportedTexture, EglError> {
        let image = frame.image();
        self.importer.import(key, &image)
    }

    /// Draws into a fresh `w`×`h` FBO and reads it back (top row first).
    fn render(&self, texture: &ImportedTexture, params: DrawParams) -> Vec<[u8; 4]> {
        let gl = self.importer.gl();
        let target =
            OffscreenTarget::new(gl, params.target_width, params.target_height).expect("FBO");
        self.renderer.draw(gl, texture, &params).expect("draw");
        let bytes = target.read_rgba(gl);
        target.destroy(gl);
        bytes
            .chunks_exact(4)
            .map(|p| [p[0], p[1], p[2], p[3]])
            .collect()
    }
}

fn params(src: Rect, y0_top: bool, target_width: u32, target_height: u32) -> DrawParams {
    DrawParams {
        src,
        y0_top,
        target_width,
        target_height,
        filter: Filter::Nearest,
    }
}

/// The expected picture of `frame` cropped to `src`, top row first.
fn expected_picture(frame: &Frame, src: Rect, y0_top: bool) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    for row in 0..src.height {
        let mem_row = if y0_top {
            src.y + row
        } else {
            src.y + src.height - 1 - row
        };
        for col in 0..src.width {
            out.push(frame.expected[(mem_row * frame.width + src.x + col) as usize]);
        }
    }
    out
}

fn assert_pixels(what: &str, got: &[[u8; 4]], want: &[[u8; 4]], width: u32, tolerance: u8) {
    assert_eq!(got.len(), want.len(), "{what}: pixel count");
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| {
            g.iter()
                .zip(w.iter())
                .any(|(a, b)| a.abs_diff(*b) > tolerance)
        })
        .take(5)
        .map(|(i, (g, w))| {
            format!(
                "({}, {}): got {g:?} want {w:?}",
                i as u32 % width,
                i as u32 / width
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: mismatches (first 5): {}",
        bad.join("; ")
    );
}

fn advertised(importer: &EglImporter, format: PixelFormat) -> bool {
    importer.formats().contains_key(&(format.fourcc() as u32))
}

#[test]
fn headless_display_is_software_and_lists_formats() {
    let gl = Gl::new();
    let importer = &gl.importer;
    let names: Vec<String> = importer.formats().keys().map(|&c| fourcc_name(c)).collect();
    eprintln!(
        "platform {:?}; formats: {}",
        importer.platform(),
        names.join(" ")
    );
    for format in ALL_FORMATS {
        eprintln!(
            "{format}: {:?}",
            importer.formats().get(&(format.fourcc() as u32))
        );
    }
    assert!(
        advertised(importer, PixelFormat::Xrgb8888),
        "XRGB8888 must be importable"
    );
}

#[test]
fn every_packed_format_round_trips_exactly_in_both_orientations() {
    let mut gl = Gl::new();
    let (width, height) = (61, 37);
    let mut checked = Vec::new();
    for (id, format) in ALL_FORMATS.into_iter().enumerate() {
        if format == PixelFormat::Nv12 {
            continue;
        }
        let frame = rgb_frame(format, width, height, id as u32 * 10);
        let key = BufferKey {
            buffer_id: id as u64,
            generation: 1,
        };
        if !advertised(&gl.importer, format) {
            // Refused up front with the typed error, no eglCreateImage.
            let before = gl.importer.stats().images_created;
            match gl.import(key, &frame) {
                Err(EglError::UnsupportedFormat { format: f, .. }) => assert_eq!(f, format),
                other => panic!("{format}: expected UnsupportedFormat, got {other:?}"),
            }
            assert_eq!(gl.importer.stats().images_created, before);
            eprintln!("{format}: not advertised, refused with UnsupportedFormat");
            continue;
        }
        let texture = gl
            .import(key, &frame)
            .unwrap_or_else(|e| panic!("{format}: memfd import failed: {e}"));
        assert_eq!(texture.target, TextureTarget::Texture2D, "{format}");
        // 5/6-bit channels: unorm rounding vs bit replication may differ by one.
        let tolerance = u8::from(format == PixelFormat::Rgb565);
        let full = Rect::full(width, height);
        for y0_top in [true, false] {
            let got = gl.render(&texture, params(full, y0_top, width, height));
            let want = expected_picture(&frame, full, y0_top);
            assert_pixels(
                &format!("{format} y0_top={y0_top}"),
                &got,
                &want,
                width,
                tolerance,
            );
        }
        // Crop: a visible rect inside the backing, both orientations.
        let crop = Rect {
            x: 3,
            y: 5,
            width: 20,
            height: 11,
        };
        for y0_top in [true, false] {
            let got = gl.render(&texture, params(crop, y0_top, crop.width, crop.height));
            let want = expected_picture(&frame, crop, y0_top);
            assert_pixels(
                &format!("{format} crop y0_top={y0_top}"),
                &got,
                &want,
                crop.width,
                tolerance,
            );
        }
        checked.push(format.name());
    }
    eprintln!("checked exactly: {}", checked.join(" "));
    assert!(checked.contains(&"XRGB8888"));
}

#[test]
fn implicit_modifier_imports_without_modifier_attributes() {
    let mut gl = Gl::new();
    let frame = rgb_frame(PixelFormat::Xrgb8888, 32, 16, 7);
    let mut image = frame.image();
    image.modifier = Modifier::Implicit;
    let texture = gl
        .importer
        .import(
            BufferKey {
                buffer_id: 9,
                generation: 0,
            },
            &image,
        )
        .expect("implicit-modifier import");
    let full = Rect::full(32, 16);
    let got = gl.render(&texture, params(full, true, 32, 16));
    assert_pixels(
        "implicit",
        &got,
        &expected_picture(&frame, full, true),
        32,
        0,
    );
}

/// Mesa 25 llvmpipe advertises NV12 (LINEAR, not external-only) but refuses every
/// NV12 import as one image with EGL_BAD_ALLOC. The importer takes it as two images
/// (R8 luma, GR88 chroma) and the renderer converts in its shader with the CPU path's
/// integer math: the picture must be bit-exact, in both orientations, cropped or not,
/// with padded strides and odd sizes.
#[test]
fn nv12_imports_as_two_planes_and_converts_bt601_exactly() {
    let mut gl = Gl::new();
    assert!(
        advertised(&gl.importer, PixelFormat::Nv12),
        "llvmpipe advertised NV12 when this test was written"
    );
    for (id, (width, height)) in [(64, 32), (61, 37)].into_iter().enumerate() {
        let frame = nv12_frame(width, height, 3 + id as u32);
        let key = BufferKey {
            buffer_id: 1 + id as u64,
            generation: 1,
        };
        let before = gl.importer.stats();
        let texture = gl
            .import(key, &frame)
            .unwrap_or_else(|e| panic!("NV12 {width}x{height} memfd import: {e}"));
        assert_eq!(texture.target, TextureTarget::Texture2D);
        assert!(texture.chroma.is_some(), "imported as luma + chroma planes");
        assert_eq!(
            gl.importer.stats().images_created,
            before.images_created + 2
        );
        let image = frame.image();
        assert_eq!(
            gl.importer.check(&image).ok(),
            Some(TextureTarget::Texture2D)
        );
        let full = Rect::full(width, height);
        let crop = Rect {
            x: 3,
            y: 5,
            width: 20,
            height: 11,
        };
        for src in [full, crop] {
            for y0_top in [true, false] {
                let got = gl.render(&texture, params(src, y0_top, src.width, src.height));
                let want = expected_picture(&frame, src, y0_top);
                assert_pixels(
                    &format!("NV12 {width}x{height} src {src:?} y0_top={y0_top}"),
                    &got,
                    &want,
                    src.width,
                    0,
                );
            }
        }
        // Cached, then forgotten: both images and textures go.
        assert_eq!(gl.import(key, &frame).expect("cached"), texture);
        let stats = gl.importer.stats();
        assert!(gl.importer.forget(key.buffer_id));
        assert_eq!(
            gl.importer.stats().images_destroyed,
            stats.images_destroyed + 2
        );
    }
}

#[test]
fn new_generation_replaces_the_cached_image_and_forget_drops_it() {
    let mut gl = Gl::new();
    let (width, height) = (40, 24);
    let first = rgb_frame(PixelFormat::Xrgb8888, width, height, 100);
    let second = rgb_frame(PixelFormat::Xrgb8888, width, height, 200);
    let key = |generation| BufferKey {
        buffer_id: 42,
        generation,
    };
    let t1 = gl.import(key(1), &first).expect("import gen 1");
    assert_eq!(gl.import(key(1), &first).expect("cached"), t1);
    let stats = gl.importer.stats();
    assert_eq!(
        (
            stats.images_created,
            stats.images_destroyed,
            stats.cache_hits
        ),
        (1, 0, 1)
    );
    assert_eq!(gl.importer.cached_count(), 1);

    let t2 = gl.import(key(2), &second).expect("import gen 2");
    let stats = gl.importer.stats();
    assert_eq!((stats.images_created, stats.images_destroyed), (2, 1));
    assert_eq!(gl.importer.cached_count(), 1);
    assert_eq!(gl.importer.cached(42).map(|(g, _)| g), Some(2));
    let full = Rect::full(width, height);
    let got = gl.render(&t2, params(full, true, width, height));
    assert_pixels(
        "gen 2",
        &got,
        &expected_picture(&second, full, true),
        width,
        0,
    );

    assert!(gl.importer.forget(42));
    assert!(!gl.importer.forget(42));
    assert_eq!(gl.importer.cached_count(), 0);
    assert_eq!(gl.importer.stats().images_destroyed, 2);
}

#[test]
fn unsupported_modifier_is_refused_before_egl_create_image() {
    let mut gl = Gl::new();
    let frame = rgb_frame(PixelFormat::Xrgb8888, 16, 16, 1);
    let mut image = frame.image();
    image.modifier = Modifier::from_raw(I915_X_TILED);
    let err = gl
        .importer
        .import(
            BufferKey {
                buffer_id: 1,
                generation: 1,
            },
            &image,
        )
        .expect_err("X-tiled must be refused");
    eprintln!("{err}");
    match &err {
        EglError::UnsupportedModifier {
            format,
            modifier,
            supported,
        } => {
            assert_eq!(*format, PixelFormat::Xrgb8888);
            assert_eq!(modifier.raw(), I915_X_TILED);
            assert!(supported.contains(&0), "LINEAR listed: {supported:x?}");
        }
        other => panic!("expected UnsupportedModifier, got {other:?}"),
    }
    assert!(err.to_string().contains("0x0100000000000001"));
    assert_eq!(gl.importer.stats().images_created, 0);
    assert_eq!(gl.importer.cached_count(), 0);

    // A wrong plane count is refused too.
    let frame = rgb_frame(PixelFormat::Xrgb8888, 16, 16, 1);
    let mut image = frame.image();
    image.planes.clear();
    assert!(matches!(
        gl.importer.check(&image),
        Err(EglError::PlaneCount {
            expected: 1,
            got: 0,
            ..
        })
    ));
}

#[test]
fn letterbox_draws_black_bars() {
    let mut gl = Gl::new();
    let (width, height) = (61, 37);
    let frame = rgb_frame(PixelFormat::Argb8888, width, height, 55);
    let texture = gl
        .import(
            BufferKey {
                buffer_id: 5,
                generation: 1,
            },
            &frame,
        )
        .expect("import");
    let (tw, th) = (200, 37);
    let view = letterbox(width, height, tw, th);
    assert_eq!(
        view,
        Rect {
            x: 69,
            y: 0,
            width: 61,
            height: 37
        }
    );
    let got = gl.render(&texture, params(Rect::full(width, height), true, tw, th));
    let want = expected_picture(&frame, Rect::full(width, height), true);
    for y in 0..th {
        for x in 0..tw {
            let px = got[(y * tw + x) as usize];
            if x < view.x || x >= view.x + view.width {
                assert_eq!(px, [0, 0, 0, 255], "bar pixel ({x}, {y})");
            } else {
                assert_eq!(
                    px,
                    want[(y * width + x - view.x) as usize],
                    "picture pixel ({x}, {y})"
                );
            }
        }
    }

    // Taller target: bars top and bottom.
    let (tw, th) = (61, 81);
    let view = letterbox(width, height, tw, th);
    let got = gl.render(&texture, params(Rect::full(width, height), true, tw, th));
    let top_bar = th - view.y - view.height; // rows above the picture (top-first rows)
    for y in (0..top_bar).chain(top_bar + view.height..th) {
        for x in 0..tw {
            assert_eq!(got[(y * tw + x) as usize], [0, 0, 0, 255], "bar ({x}, {y})");
        }
    }
}

#[test]
fn bad_source_rect_is_an_error() {
    let mut gl = Gl::new();
    let frame = rgb_frame(PixelFormat::Xrgb8888, 16, 16, 2);
    let texture = gl
        .import(
            BufferKey {
                buffer_id: 3,
                generation: 1,
            },
            &frame,
        )
        .expect("import");
    let gl_ctx = gl.importer.gl();
    let target = OffscreenTarget::new(gl_ctx, 16, 16).expect("FBO");
    let src = Rect {
        x: 8,
        y: 0,
        width: 9,
        height: 16,
    };
    let err = gl
        .renderer
        .draw(gl_ctx, &texture, &params(src, true, 16, 16))
        .expect_err("rect past the right edge");
    assert!(err.to_string().contains("9x16+8+0"), "{err}");
    target.destroy(gl_ctx);
}

#[test]
fn texture_follows_later_writes_to_the_memory_without_reimport() {
    let mut gl = Gl::new();
    let (width, height) = (32, 8);
    let mut frame = rgb_frame(PixelFormat::Xbgr8888, width, height, 300);
    let key = BufferKey {
        buffer_id: 7,
        generation: 1,
    };
    let texture = gl.import(key, &frame).expect("import");
    // The guest draws the next frame into the same memory: every pixel becomes
    // (10, 20, 30).
    let (offset, stride) = (frame.offsets[0] as usize, frame.strides[0] as usize);
    let len = offset + stride * height as usize;
    let map = Mapping::new(frame.memfd.as_fd(), 0, len, Access::ReadWrite).expect("mmap");
    let bytes = map.bytes_mut().unwrap();
    for y in 0..height as usize {
        for x in 0..width as usize {
            let at = offset + y * stride + x * 4;
            bytes.write_at(at, &[10, 20, 30, 0]).unwrap();
        }
    }
    frame.expected.fill([10, 20, 30, 255]);
    let again = gl.import(key, &frame).expect("cached");
    assert_eq!(again, texture);
    assert_eq!(gl.importer.stats().images_created, 1);
    let full = Rect::full(width, height);
    let got = gl.render(&texture, params(full, true, width, height));
    assert_pixels("after guest write", &got, &frame.expected, width, 0);
}
