//! Portable row loops over private bytes (the compiler vectorises them), the pixel
//! formulas both `blit` and `blit_reference` use, and the staging that copies guest rows
//! out of shared memory for them.

use crate::sys::volatile::VolatileSlice;

/// Pixels per chunk that [`staged`] copies out of guest memory at once (fits L1).
const STAGE_PIXELS: usize = 256;

/// Runs the slice kernel `kernel` over the source row `src` of `in_bpp`-byte pixels,
/// copying it out of guest memory [`STAGE_PIXELS`] pixels at a time, into `dst` (4
/// bytes per pixel).
#[inline(always)]
pub(super) fn staged(
    src: VolatileSlice<'_>,
    in_bpp: usize,
    dst: &mut [u8],
    kernel: impl Fn(&[u8], &mut [u8]),
) {
    let mut buf = [0u8; STAGE_PIXELS * 4];
    let pixels = (src.len() / in_bpp).min(dst.len() / 4);
    for (chunk, out) in dst[..pixels * 4].chunks_mut(STAGE_PIXELS * 4).enumerate() {
        let bytes = &mut buf[..out.len() / 4 * in_bpp];
        // In range: chunk × STAGE_PIXELS + out.len() / 4 ≤ pixels ≤ src.len() / in_bpp.
        if src.read_at(chunk * STAGE_PIXELS * in_bpp, bytes).is_ok() {
            kernel(bytes, out);
        }
    }
}

/// Copies the source row `src` out of guest memory into `scratch`.
pub(super) fn stage<'s>(src: VolatileSlice<'_>, scratch: &'s mut Vec<u8>) -> &'s [u8] {
    scratch.resize(src.len(), 0);
    // Same length: cannot fail.
    let _ = src.copy_to(scratch);
    scratch
}

/// Portable 32-bit word loop: swap bytes 0 and 2 when `SWAP`, OR 0xFF000000 when
/// `ALPHA`. No branches per pixel; the compiler vectorises it.
#[inline]
pub(super) fn words32<const SWAP: bool, const ALPHA: bool>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
        let v = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let mut out = if SWAP {
            (v & 0xFF00_FF00) | ((v >> 16) & 0xFF) | ((v & 0xFF) << 16)
        } else {
            v
        };
        if ALPHA {
            out |= 0xFF00_0000;
        }
        d.copy_from_slice(&out.to_le_bytes());
    }
}

/// Portable 24-bit loop (see [`rgb24`]).
#[inline]
pub(super) fn words24<const RGB: bool>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(4)) {
        let (b, g, r) = if RGB {
            (s[2], s[1], s[0])
        } else {
            (s[0], s[1], s[2])
        };
        d.copy_from_slice(&[b, g, r, 0xFF]);
    }
}

/// Portable RGB565 loop: plain u32 arithmetic the compiler vectorises.
#[inline(always)]
pub(super) fn rgb565_words(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
        let v = u32::from(u16::from_le_bytes([s[0], s[1]]));
        let r = v >> 11;
        let g = (v >> 5) & 0x3F;
        let b = v & 0x1F;
        let out = 0xFF00_0000
            | (((r << 3) | (r >> 2)) << 16)
            | (((g << 2) | (g >> 4)) << 8)
            | ((b << 3) | (b >> 2));
        d.copy_from_slice(&out.to_le_bytes());
    }
}

/// One RGB565 pixel to bytes B G R 0xFF.
#[inline(always)]
pub(super) fn rgb565_to_bgrx(v: u16) -> [u8; 4] {
    let v = u32::from(v);
    let r = v >> 11;
    let g = (v >> 5) & 0x3F;
    let b = v & 0x1F;
    [
        ((b << 3) | (b >> 2)) as u8,
        ((g << 2) | (g >> 4)) as u8,
        ((r << 3) | (r >> 2)) as u8,
        0xFF,
    ]
}

/// Chroma terms of [`nv12_to_rgb`] for one CbCr sample: (R, G, B) additions.
#[inline(always)]
fn chroma_terms(cb: u8, cr: u8) -> (i32, i32, i32) {
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    (409 * e, -100 * d - 208 * e, 516 * d)
}

/// Applies precomputed chroma terms to one luma sample: bytes B G R 0xFF.
#[inline(always)]
fn yuv_terms_to_bgrx(y: u8, (rv, guv, bu): (i32, i32, i32)) -> [u8; 4] {
    let c = 298 * (i32::from(y) - 16) + 128;
    [
        ((c + bu) >> 8).clamp(0, 255) as u8,
        ((c + guv) >> 8).clamp(0, 255) as u8,
        ((c + rv) >> 8).clamp(0, 255) as u8,
        0xFF,
    ]
}

/// BT.601 limited range Y'CbCr → R'G'B', 8-bit fixed point (the definition both [`blit`](super::blit)
/// and `blit_reference` use):
///
/// ```text
/// C = Y - 16, D = Cb - 128, E = Cr - 128
/// R = clamp((298 C + 409 E + 128) >> 8)
/// G = clamp((298 C - 100 D - 208 E + 128) >> 8)
/// B = clamp((298 C + 516 D + 128) >> 8)
/// ```
pub fn nv12_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let [b, g, r, _] = yuv_terms_to_bgrx(y, chroma_terms(cb, cr));
    [r, g, b]
}

/// One NV12 row. `luma` holds the damaged samples, `uv` the CbCr pairs from the one of
/// the first damaged pixel on; `odd` says the first pixel sits at an odd column (so it
/// is the second user of `uv[0..2]`).
#[inline(always)]
pub(super) fn nv12_row(luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
    let (mut luma, mut uv, mut dst) = (luma, uv, dst);
    if odd {
        let whole = std::mem::take(&mut dst);
        if let (Some((&y, luma_rest)), [cb, cr, uv_rest @ ..], Some((d, dst_rest))) =
            (luma.split_first(), uv, whole.split_first_chunk_mut::<4>())
        {
            *d = yuv_terms_to_bgrx(y, chroma_terms(*cb, *cr));
            luma = luma_rest;
            uv = uv_rest;
            dst = dst_rest;
        }
    }
    let pairs = luma.chunks_exact(2);
    let last = pairs.remainder();
    let mut uv_pairs = uv.chunks_exact(2);
    let mut dst_pairs = dst.chunks_exact_mut(8);
    for ((y, c), d) in pairs.zip(uv_pairs.by_ref()).zip(dst_pairs.by_ref()) {
        let terms = chroma_terms(c[0], c[1]);
        d[..4].copy_from_slice(&yuv_terms_to_bgrx(y[0], terms));
        d[4..].copy_from_slice(&yuv_terms_to_bgrx(y[1], terms));
    }
    if let (Some(&y), Some(c), Some(d)) = (
        last.first(),
        uv_pairs.next(),
        dst_pairs.into_remainder().first_chunk_mut::<4>(),
    ) {
        *d = yuv_terms_to_bgrx(y, chroma_terms(c[0], c[1]));
    }
}
