//! Checks of untrusted call arguments: sizes, strides, rects, cursors and pixman codes
//! against the limits, each failure an error naming the value and the limit.

use crate::format::PixelFormat;
use crate::rect::Rect;
use crate::source::qemu::pixman;
use crate::source::qemu::QemuError;

use super::frame::Cursor;
use super::{MAX_CURSOR, MAX_DIMENSION};

pub(super) fn check_size(width: u32, height: u32) -> Result<(), QemuError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(QemuError::BadSize {
            width,
            height,
            max: MAX_DIMENSION,
        });
    }
    Ok(())
}

/// Checks a surface's geometry; returns `stride × height`.
pub(super) fn checked_surface(
    width: u32,
    height: u32,
    stride: u32,
    format: PixelFormat,
) -> Result<u64, QemuError> {
    check_size(width, height)?;
    let bpp = format.bytes_per_pixel();
    if u64::from(stride) < u64::from(width) * u64::from(bpp) {
        return Err(QemuError::StrideTooSmall {
            stride,
            width,
            bytes_per_pixel: bpp,
        });
    }
    Ok(u64::from(stride) * u64::from(height))
}

/// A damage rectangle from QEMU (signed), checked against the frame.
pub(super) fn checked_rect(
    x: i32,
    y: i32,
    w: i32,
    h: i32,
    frame_width: u32,
    frame_height: u32,
) -> Result<Rect, QemuError> {
    let (x64, y64, w64, h64) = (i64::from(x), i64::from(y), i64::from(w), i64::from(h));
    if x < 0
        || y < 0
        || w < 0
        || h < 0
        || x64 + w64 > i64::from(frame_width)
        || y64 + h64 > i64::from(frame_height)
    {
        return Err(QemuError::RectOutOfBounds {
            x: x64,
            y: y64,
            width: w64,
            height: h64,
            frame_width,
            frame_height,
        });
    }
    Ok(Rect {
        x: x as u32,
        y: y as u32,
        width: w as u32,
        height: h as u32,
    })
}

pub(super) fn checked_cursor(
    w: i32,
    h: i32,
    hot_x: i32,
    hot_y: i32,
    mut data: Vec<u8>,
) -> Result<Cursor, QemuError> {
    if !(1..=MAX_CURSOR as i32).contains(&w) || !(1..=MAX_CURSOR as i32).contains(&h) {
        return Err(QemuError::BadCursor {
            width: w,
            height: h,
            len: data.len(),
            max: MAX_CURSOR,
        });
    }
    let need = w as usize * h as usize * 4;
    if data.len() < need {
        return Err(QemuError::BadCursor {
            width: w,
            height: h,
            len: data.len(),
            max: MAX_CURSOR,
        });
    }
    data.truncate(need);
    Ok(Cursor {
        width: w as u32,
        height: h as u32,
        hot_x,
        hot_y,
        argb: data,
    })
}

/// The pixel format behind QEMU's pixman code, or an error naming the code.
pub(super) fn checked_format(code: u32) -> Result<PixelFormat, QemuError> {
    pixman::pixel_format(code).ok_or(QemuError::UnsupportedPixman { code })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::qemu::listener::{ListenerOptions, DMABUF2_IFACE, MAP_IFACE};

    #[test]
    fn rects_are_checked_against_the_frame() {
        assert!(checked_rect(0, 0, 640, 480, 640, 480).is_ok());
        assert!(checked_rect(1, 0, 640, 480, 640, 480).is_err());
        assert!(checked_rect(-1, 0, 1, 1, 640, 480).is_err());
        assert!(checked_rect(0, 0, -5, 1, 640, 480).is_err());
        assert!(checked_rect(i32::MAX, i32::MAX, i32::MAX, i32::MAX, 640, 480).is_err());
    }

    #[test]
    fn surfaces_are_checked() {
        let f = PixelFormat::Xrgb8888;
        assert_eq!(checked_surface(640, 480, 2560, f).unwrap(), 2560 * 480);
        assert!(checked_surface(640, 480, 2559, f).is_err());
        assert!(checked_surface(0, 480, 2560, f).is_err());
        assert!(checked_surface(MAX_DIMENSION + 1, 1, u32::MAX, f).is_err());
    }

    #[test]
    fn cursors_are_checked() {
        assert!(checked_cursor(2, 2, 0, 0, vec![0; 16]).is_ok());
        assert!(checked_cursor(2, 2, 0, 0, vec![0; 15]).is_err());
        assert!(checked_cursor(0, 2, 0, 0, vec![]).is_err());
        assert!(checked_cursor(4096, 4096, 0, 0, vec![]).is_err());
    }

    #[test]
    fn interfaces_follow_options() {
        let none = ListenerOptions {
            map: false,
            dmabuf2: false,
        };
        assert!(none.interfaces().is_empty());
        assert_eq!(
            ListenerOptions::default().interfaces(),
            [MAP_IFACE, DMABUF2_IFACE]
        );
    }
}
