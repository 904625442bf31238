//! Checks before a blit writes anything: planes, strides and lengths against the frame,
//! damage clipped to it; and the bounds-checked row views the kernels read.

use crate::rect::Rect;
use crate::sys::volatile::VolatileSlice;

use super::{ConvertError, Dest, Source};

/// Clips the damage to the frame, dropping empty rectangles; returns them and their
/// total area.
pub(super) fn clip_damage(damage: &[Rect], width: u32, height: u32) -> (Vec<Rect>, u64) {
    let rects: Vec<Rect> = damage
        .iter()
        .filter_map(|r| r.clip(width, height))
        .collect();
    let pixels = rects.iter().map(Rect::area).sum();
    (rects, pixels)
}

/// Bytes needed by `rows` rows of `row_bytes` at `stride`: `(rows - 1) × stride +
/// row_bytes`, or 0 for no rows; `None` on overflow.
fn needed_bytes(rows: u64, stride: usize, row_bytes: u64) -> Option<u64> {
    if rows == 0 {
        return Some(0);
    }
    let needed = (rows - 1)
        .checked_mul(stride as u64)?
        .checked_add(row_bytes)?;
    // Everything must also be addressable as usize.
    usize::try_from(needed).ok()?;
    Some(needed)
}

/// Checks that the source planes and the destination fit the frame.
pub(super) fn validate(src: &Source, dst: &Dest) -> Result<(), ConvertError> {
    const PLANE_NAMES: [&str; 2] = ["plane 0", "plane 1"];
    let infos = src.format.planes();
    if src.planes.len() != infos.len() {
        return Err(ConvertError::PlaneCount {
            format: src.format,
            expected: infos.len(),
            got: src.planes.len(),
        });
    }
    for (index, (plane, info)) in src.planes.iter().zip(infos).enumerate() {
        let samples = u64::from(src.width.div_ceil(info.h_sub));
        let rows = u64::from(src.height.div_ceil(info.v_sub));
        let row_bytes = samples * u64::from(info.bytes_per_sample);
        if (plane.stride as u64) < row_bytes {
            return Err(ConvertError::SourceStride {
                plane: index,
                stride: plane.stride,
                samples,
                bytes_per_sample: info.bytes_per_sample,
            });
        }
        let needed = needed_bytes(rows, plane.stride, row_bytes).ok_or(ConvertError::Overflow {
            what: PLANE_NAMES.get(index).copied().unwrap_or("plane"),
            rows,
            stride: plane.stride,
        })?;
        if (plane.data.len() as u64) < needed {
            return Err(ConvertError::SourceTooShort {
                plane: index,
                len: plane.data.len(),
                rows,
                stride: plane.stride,
                needed,
            });
        }
    }
    let row_bytes = u64::from(src.width) * 4;
    if (dst.stride as u64) < row_bytes {
        return Err(ConvertError::DestStride {
            stride: dst.stride,
            width: src.width,
        });
    }
    let rows = u64::from(src.height);
    let needed = needed_bytes(rows, dst.stride, row_bytes).ok_or(ConvertError::Overflow {
        what: "destination",
        rows,
        stride: dst.stride,
    })?;
    if (dst.data.len() as u64) < needed {
        return Err(ConvertError::DestTooShort {
            len: dst.data.len(),
            rows: src.height,
            stride: dst.stride,
            needed,
        });
    }
    Ok(())
}

/// `data[start..start + len]`, or an internal error naming the buffer and row.
pub(super) fn sub<'s>(
    data: VolatileSlice<'s>,
    start: usize,
    len: usize,
    what: &'static str,
    row: usize,
) -> Result<VolatileSlice<'s>, ConvertError> {
    data.subslice(start, len)
        .map_err(|_| ConvertError::RowOutOfBounds {
            what,
            row: row as u64,
        })
}
