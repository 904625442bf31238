//! A small scalar converter for the copy path: any guestfb format → XRGB8888.
//!
//! Private stand-in until `import::convert` (SIMD blits) lands; it is correct, not fast.

use crate::export::ValidatedFramebuffer;
use crate::format::PixelFormat;

use super::KmsError;

/// BT.601 limited-range YCbCr → RGB.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = i32::from(y) - 16;
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    let clamp = |value: i32| value.clamp(0, 255) as u8;
    [
        clamp((298 * c + 409 * e + 128) >> 8),
        clamp((298 * c - 100 * d - 208 * e + 128) >> 8),
        clamp((298 * c + 516 * d + 128) >> 8),
    ]
}

fn short(len: usize, needed: usize) -> KmsError {
    KmsError::ShortExport { len, needed }
}

/// Converts the visible rect of `layout` (read from `bytes`) into `dst`, top row first,
/// `dst_stride` bytes per row, pixels as B G R 0xFF.
pub(super) fn to_xrgb8888(
    bytes: &[u8],
    layout: &ValidatedFramebuffer,
    dst: &mut [u8],
    dst_stride: usize,
) -> Result<(), KmsError> {
    let format = layout.format();
    let visible = layout.visible();
    let planes = layout.planes();
    let plane0 = planes.first().ok_or(KmsError::Unconvertible { format })?;
    let width = visible.width as usize;
    let row_of = |picture_row: u32| -> usize {
        if layout.y0_top() {
            picture_row as usize
        } else {
            (layout.height() - 1 - picture_row) as usize
        }
    };
    for out_row in 0..visible.height {
        let y = row_of(visible.y + out_row);
        let dst_at = out_row as usize * dst_stride;
        let dst_len = dst.len();
        let out = dst
            .get_mut(dst_at..dst_at + width * 4)
            .ok_or(short(dst_len, dst_at + width * 4))?;
        let bpp = format.bytes_per_pixel() as usize;
        let src_at = plane0.offset as usize + y * plane0.stride as usize;
        let x0 = visible.x as usize;
        if format == PixelFormat::Nv12 {
            let chroma = planes.get(1).ok_or(KmsError::Unconvertible { format })?;
            let luma = bytes
                .get(src_at + x0..src_at + x0 + width)
                .ok_or(short(bytes.len(), src_at + x0 + width))?;
            let c_at = chroma.offset as usize + (y / 2) * chroma.stride as usize;
            let c_end = c_at + (x0 + width).div_ceil(2) * 2;
            let cbcr = bytes.get(c_at..c_end).ok_or(short(bytes.len(), c_end))?;
            for (i, pixel) in out.chunks_exact_mut(4).enumerate() {
                let x = x0 + i;
                let [r, g, b] = ycbcr_to_rgb(luma[i], cbcr[x / 2 * 2], cbcr[x / 2 * 2 + 1]);
                pixel.copy_from_slice(&[b, g, r, 0xFF]);
            }
            continue;
        }
        let start = src_at + x0 * bpp;
        let row = bytes
            .get(start..start + width * bpp)
            .ok_or(short(bytes.len(), start + width * bpp))?;
        for (src, pixel) in row.chunks_exact(bpp).zip(out.chunks_exact_mut(4)) {
            let [r, g, b] = match format {
                PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => [src[2], src[1], src[0]],
                PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 => [src[0], src[1], src[2]],
                PixelFormat::Bgr888 => [src[0], src[1], src[2]],
                PixelFormat::Rgb888 => [src[2], src[1], src[0]],
                PixelFormat::Rgb565 => {
                    let value = u16::from_le_bytes([src[0], src[1]]);
                    let r5 = (value >> 11) as u8;
                    let g6 = ((value >> 5) & 0x3F) as u8;
                    let b5 = (value & 0x1F) as u8;
                    [
                        (r5 << 3) | (r5 >> 2),
                        (g6 << 2) | (g6 >> 4),
                        (b5 << 3) | (b5 >> 2),
                    ]
                }
                PixelFormat::Nv12 => unreachable!("handled above"),
            };
            pixel.copy_from_slice(&[b, g, r, 0xFF]);
        }
    }
    Ok(())
}
