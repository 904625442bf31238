//! Pixman format codes (what QEMU's `Scanout`, `Update` and `ScanoutMap` carry) and
//! their guestfb [`PixelFormat`].
//!
//! A pixman code is `bpp << 24 | type << 16 | a << 12 | r << 8 | g << 4 | b`, with the
//! channels named from the most significant bits of a native-endian (here little
//! endian) pixel word, exactly like DRM fourccs name them.

use crate::format::PixelFormat;

/// `PIXMAN_x8r8g8b8`: QEMU's default 32 bpp surface.
pub const PIXMAN_X8R8G8B8: u32 = 0x2002_0888;
/// `PIXMAN_a8r8g8b8`.
pub const PIXMAN_A8R8G8B8: u32 = 0x2002_8888;
/// `PIXMAN_x8b8g8r8`.
pub const PIXMAN_X8B8G8R8: u32 = 0x2003_0888;
/// `PIXMAN_a8b8g8r8`.
pub const PIXMAN_A8B8G8R8: u32 = 0x2003_8888;
/// `PIXMAN_r5g6b5`.
pub const PIXMAN_R5G6B5: u32 = 0x1002_0565;
/// `PIXMAN_r8g8b8` (24 bpp, bytes B G R in memory).
pub const PIXMAN_R8G8B8: u32 = 0x1802_0888;
/// `PIXMAN_b8g8r8` (24 bpp, bytes R G B in memory).
pub const PIXMAN_B8G8R8: u32 = 0x1803_0888;

/// The guestfb format of a pixman code, `None` for one guestfb does not handle.
pub fn pixel_format(code: u32) -> Option<PixelFormat> {
    Some(match code {
        PIXMAN_X8R8G8B8 => PixelFormat::Xrgb8888,
        PIXMAN_A8R8G8B8 => PixelFormat::Argb8888,
        PIXMAN_X8B8G8R8 => PixelFormat::Xbgr8888,
        PIXMAN_A8B8G8R8 => PixelFormat::Abgr8888,
        PIXMAN_R5G6B5 => PixelFormat::Rgb565,
        PIXMAN_R8G8B8 => PixelFormat::Rgb888,
        PIXMAN_B8G8R8 => PixelFormat::Bgr888,
        _ => return None,
    })
}

/// The pixman code of a guestfb format (`None` for planar formats).
pub fn pixman_code(format: PixelFormat) -> Option<u32> {
    Some(match format {
        PixelFormat::Xrgb8888 => PIXMAN_X8R8G8B8,
        PixelFormat::Argb8888 => PIXMAN_A8R8G8B8,
        PixelFormat::Xbgr8888 => PIXMAN_X8B8G8R8,
        PixelFormat::Abgr8888 => PIXMAN_A8B8G8R8,
        PixelFormat::Rgb565 => PIXMAN_R5G6B5,
        PixelFormat::Rgb888 => PIXMAN_R8G8B8,
        PixelFormat::Bgr888 => PIXMAN_B8G8R8,
        PixelFormat::Nv12 => return None,
    })
}

/// One pixel of a packed format as (R, G, B); `px` holds at least `bytes_per_pixel`.
pub fn pixel_rgb(format: PixelFormat, px: &[u8]) -> [u8; 3] {
    match format {
        PixelFormat::Xrgb8888 | PixelFormat::Argb8888 | PixelFormat::Rgb888 => {
            [px[2], px[1], px[0]]
        }
        PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 | PixelFormat::Bgr888 => {
            [px[0], px[1], px[2]]
        }
        PixelFormat::Rgb565 => {
            let v = u16::from_le_bytes([px[0], px[1]]);
            let r = ((v >> 11) & 0x1f) as u8;
            let g = ((v >> 5) & 0x3f) as u8;
            let b = (v & 0x1f) as u8;
            [
                (r << 3) | (r >> 2),
                (g << 2) | (g >> 4),
                (b << 3) | (b >> 2),
            ]
        }
        // Luma only: planar frames never come through the pixman path.
        PixelFormat::Nv12 => [px[0]; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ALL_FORMATS;

    #[test]
    fn codes_round_trip_and_match_pixman_macro() {
        // PIXMAN_FORMAT(bpp, type, a, r, g, b); types ARGB = 2, ABGR = 3.
        let f = |bpp: u32, ty: u32, a: u32, r: u32, g: u32, b: u32| {
            (bpp << 24) | (ty << 16) | (a << 12) | (r << 8) | (g << 4) | b
        };
        assert_eq!(PIXMAN_X8R8G8B8, f(32, 2, 0, 8, 8, 8));
        assert_eq!(PIXMAN_A8B8G8R8, f(32, 3, 8, 8, 8, 8));
        assert_eq!(PIXMAN_R5G6B5, f(16, 2, 0, 5, 6, 5));
        assert_eq!(PIXMAN_B8G8R8, f(24, 3, 0, 8, 8, 8));
        for format in ALL_FORMATS {
            if let Some(code) = pixman_code(format) {
                assert_eq!(pixel_format(code), Some(format));
                assert_eq!(code >> 24, format.bytes_per_pixel() * 8);
            }
        }
        assert_eq!(pixel_format(0x2008_0888), None); // b8g8r8x8: no guestfb format
    }

    #[test]
    fn rgb_of_each_byte_order() {
        assert_eq!(pixel_rgb(PixelFormat::Xrgb8888, &[1, 2, 3, 0]), [3, 2, 1]);
        assert_eq!(pixel_rgb(PixelFormat::Xbgr8888, &[1, 2, 3, 0]), [1, 2, 3]);
        assert_eq!(
            pixel_rgb(PixelFormat::Rgb565, &0xf800u16.to_le_bytes()),
            [255, 0, 0]
        );
    }
}
