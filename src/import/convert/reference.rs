//! A plain per-pixel implementation of the blit contract, for tests and benchmarks.

use crate::format::PixelFormat;
use crate::rect::Rect;

use super::portable::{nv12_to_rgb, rgb565_to_bgrx};
use super::validate::{clip_damage, sub, validate};
use super::{BlitStats, ConvertError, Dest, DestFormat, Source};

/// The bytes (B, G, R, X/A) that picture pixel `x` of memory row `mem_row` becomes.
pub(super) fn reference_pixel(
    src: &Source,
    dst: DestFormat,
    x: usize,
    mem_row: usize,
) -> Result<[u8; 4], ConvertError> {
    let plane0 = src.planes.first().ok_or(ConvertError::PlaneCount {
        format: src.format,
        expected: src.format.planes().len(),
        got: 0,
    })?;
    let bpp = src.format.bytes_per_pixel() as usize;
    let mut p = [0u8; 4];
    sub(
        plane0.data,
        mem_row * plane0.stride + x * bpp,
        bpp,
        "plane 0",
        mem_row,
    )?
    .copy_to(&mut p[..bpp])
    .map_err(|_| ConvertError::RowOutOfBounds {
        what: "plane 0",
        row: mem_row as u64,
    })?;
    let keep_alpha = dst == DestFormat::Argb8888;
    let alpha = |a: u8| if keep_alpha { a } else { 0xFF };
    Ok(match src.format {
        PixelFormat::Xrgb8888 => match dst {
            // A plain copy: the X byte passes through.
            DestFormat::Xrgb8888 => [p[0], p[1], p[2], p[3]],
            DestFormat::Argb8888 => [p[0], p[1], p[2], 0xFF],
        },
        PixelFormat::Argb8888 => [p[0], p[1], p[2], alpha(p[3])],
        PixelFormat::Xbgr8888 => [p[2], p[1], p[0], 0xFF],
        PixelFormat::Abgr8888 => [p[2], p[1], p[0], alpha(p[3])],
        PixelFormat::Rgb888 => [p[0], p[1], p[2], 0xFF],
        PixelFormat::Bgr888 => [p[2], p[1], p[0], 0xFF],
        PixelFormat::Rgb565 => rgb565_to_bgrx(u16::from_le_bytes([p[0], p[1]])),
        PixelFormat::Nv12 => {
            let plane1 = src.planes.get(1).ok_or(ConvertError::PlaneCount {
                format: src.format,
                expected: 2,
                got: src.planes.len(),
            })?;
            let c_row = mem_row / 2;
            let mut c = [0u8; 2];
            sub(
                plane1.data,
                c_row * plane1.stride + (x / 2) * 2,
                2,
                "plane 1",
                c_row,
            )?
            .copy_to(&mut c)
            .map_err(|_| ConvertError::RowOutOfBounds {
                what: "plane 1",
                row: c_row as u64,
            })?;
            let [r, g, b] = nv12_to_rgb(p[0], c[0], c[1]);
            [b, g, r, 0xFF]
        }
    })
}

/// A plain per-pixel implementation of [`blit`] (same contract, same results), for
/// tests and benchmarks. Slow on purpose: one pixel at a time, no specialisation.
#[doc(hidden)]
pub fn blit_reference(
    src: &Source,
    dst: &mut Dest,
    damage: &[Rect],
) -> Result<BlitStats, ConvertError> {
    validate(src, dst)?;
    let (rects, pixels) = clip_damage(damage, src.width, src.height);
    for rect in &rects {
        for y in rect.y..(rect.bottom() as u32) {
            let mem_row = if src.y0_top { y } else { src.height - 1 - y } as usize;
            for x in rect.x..(rect.right() as u32) {
                let px = reference_pixel(src, dst.format, x as usize, mem_row)?;
                let at = y as usize * dst.stride + x as usize * 4;
                let out = at
                    .checked_add(4)
                    .and_then(|end| dst.data.get_mut(at..end))
                    .ok_or(ConvertError::RowOutOfBounds {
                        what: "destination",
                        row: u64::from(y),
                    })?;
                out.copy_from_slice(&px);
            }
        }
    }
    Ok(BlitStats {
        rects: rects.len(),
        pixels,
        bytes: pixels * 4,
        threads: 1,
    })
}
