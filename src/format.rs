//! Pixel formats guestfb understands, named by their DRM fourcc.
//!
//! This is plain data shared by every layer: the export layer validates plane sizes with
//! it, the CPU path converts with it, EGL and KMS pass its fourcc on.

use drm_fourcc::{DrmFourcc, DrmModifier};

/// A pixel format guestfb can export, convert and display.
///
/// Byte order follows DRM: `Xrgb8888` is a little-endian 32-bit word `0xXXRRGGBB`, so
/// its bytes in memory are B, G, R, X.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PixelFormat {
    /// 32 bpp, bytes B G R X.
    Xrgb8888,
    /// 32 bpp, bytes B G R A.
    Argb8888,
    /// 32 bpp, bytes R G B X.
    Xbgr8888,
    /// 32 bpp, bytes R G B A.
    Abgr8888,
    /// 16 bpp little-endian `RRRRRGGGGGGBBBBB`.
    Rgb565,
    /// 24 bpp, bytes R G B (DRM_FORMAT_BGR888 is `[23:0] B:G:R` little endian).
    Bgr888,
    /// 24 bpp, bytes B G R (DRM_FORMAT_RGB888 is `[23:0] R:G:B` little endian).
    Rgb888,
    /// Two planes: full-resolution Y (8 bpp), then interleaved Cb Cr at half width and
    /// half height (BT.601 limited range when converted).
    Nv12,
}

/// Every format, in a fixed order (tests iterate over it).
pub const ALL_FORMATS: [PixelFormat; 8] = [
    PixelFormat::Xrgb8888,
    PixelFormat::Argb8888,
    PixelFormat::Xbgr8888,
    PixelFormat::Abgr8888,
    PixelFormat::Rgb565,
    PixelFormat::Bgr888,
    PixelFormat::Rgb888,
    PixelFormat::Nv12,
];

/// Geometry of one plane of a format relative to the frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneInfo {
    /// Bytes per sample in this plane (a CbCr pair counts as one 2-byte sample).
    pub bytes_per_sample: u32,
    /// Horizontal subsampling: the plane has `ceil(width / h_sub)` samples per row.
    pub h_sub: u32,
    /// Vertical subsampling: the plane has `ceil(height / v_sub)` rows.
    pub v_sub: u32,
}

impl PixelFormat {
    /// The DRM fourcc of this format.
    pub fn fourcc(self) -> DrmFourcc {
        match self {
            Self::Xrgb8888 => DrmFourcc::Xrgb8888,
            Self::Argb8888 => DrmFourcc::Argb8888,
            Self::Xbgr8888 => DrmFourcc::Xbgr8888,
            Self::Abgr8888 => DrmFourcc::Abgr8888,
            Self::Rgb565 => DrmFourcc::Rgb565,
            Self::Bgr888 => DrmFourcc::Bgr888,
            Self::Rgb888 => DrmFourcc::Rgb888,
            Self::Nv12 => DrmFourcc::Nv12,
        }
    }

    /// Looks up a format by its raw fourcc code; `None` for formats guestfb lacks.
    pub fn from_fourcc(code: u32) -> Option<Self> {
        ALL_FORMATS
            .into_iter()
            .find(|format| format.fourcc() as u32 == code)
    }

    /// Parses a name such as `XRGB8888` or `nv12` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_FORMATS
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
    }

    /// The DRM name of the format, e.g. `XRGB8888`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xrgb8888 => "XRGB8888",
            Self::Argb8888 => "ARGB8888",
            Self::Xbgr8888 => "XBGR8888",
            Self::Abgr8888 => "ABGR8888",
            Self::Rgb565 => "RGB565",
            Self::Bgr888 => "BGR888",
            Self::Rgb888 => "RGB888",
            Self::Nv12 => "NV12",
        }
    }

    /// The planes of the format, first plane first.
    pub fn planes(self) -> &'static [PlaneInfo] {
        const fn packed(bytes: u32) -> PlaneInfo {
            PlaneInfo {
                bytes_per_sample: bytes,
                h_sub: 1,
                v_sub: 1,
            }
        }
        const P4: [PlaneInfo; 1] = [packed(4)];
        const P3: [PlaneInfo; 1] = [packed(3)];
        const P2: [PlaneInfo; 1] = [packed(2)];
        const NV12: [PlaneInfo; 2] = [
            packed(1),
            PlaneInfo {
                bytes_per_sample: 2,
                h_sub: 2,
                v_sub: 2,
            },
        ];
        match self {
            Self::Xrgb8888 | Self::Argb8888 | Self::Xbgr8888 | Self::Abgr8888 => &P4,
            Self::Bgr888 | Self::Rgb888 => &P3,
            Self::Rgb565 => &P2,
            Self::Nv12 => &NV12,
        }
    }

    /// Bytes per pixel of the first plane.
    pub fn bytes_per_pixel(self) -> u32 {
        self.planes()[0].bytes_per_sample
    }

    /// Whether the format carries a meaningful alpha channel.
    pub fn has_alpha(self) -> bool {
        matches!(self, Self::Argb8888 | Self::Abgr8888)
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A framebuffer layout modifier as a guest states it.
///
/// `DRM_FORMAT_MOD_INVALID` means "implicit / unknown layout" and is kept apart from an
/// explicit `LINEAR`: QEMU once lost LINEAR by testing `if (modifier)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// No explicit modifier (DRM_FORMAT_MOD_INVALID): the layout is implied.
    Implicit,
    /// An explicit modifier, LINEAR (0) included.
    Explicit(DrmModifier),
}

impl Modifier {
    /// The explicit linear layout, the only one a udmabuf of guest RAM can have.
    pub const LINEAR: Self = Self::Explicit(DrmModifier::Linear);

    /// From the raw 64-bit value; `DRM_FORMAT_MOD_INVALID` becomes [`Modifier::Implicit`].
    pub fn from_raw(raw: u64) -> Self {
        match DrmModifier::from(raw) {
            DrmModifier::Invalid => Self::Implicit,
            modifier => Self::Explicit(modifier),
        }
    }

    /// The raw 64-bit value (`DRM_FORMAT_MOD_INVALID` for [`Modifier::Implicit`]).
    pub fn raw(self) -> u64 {
        match self {
            Self::Implicit => DrmModifier::Invalid.into(),
            Self::Explicit(modifier) => modifier.into(),
        }
    }

    /// Whether memory in this layout is plain rows of pixels.
    pub fn is_linear(self) -> bool {
        matches!(self, Self::Implicit | Self::Explicit(DrmModifier::Linear))
    }
}

/// A fourcc code as its four characters, e.g. `XR24`.
pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_round_trip_and_names() {
        for format in ALL_FORMATS {
            assert_eq!(
                PixelFormat::from_fourcc(format.fourcc() as u32),
                Some(format)
            );
            assert_eq!(
                PixelFormat::from_name(&format.name().to_lowercase()),
                Some(format)
            );
        }
        assert_eq!(PixelFormat::from_fourcc(0x3231_5659), None); // YV12
        assert_eq!(PixelFormat::Xrgb8888.fourcc() as u32, 0x3432_5258); // "XR24"
    }

    #[test]
    fn modifier_keeps_linear_apart_from_invalid() {
        assert_eq!(Modifier::from_raw(0), Modifier::LINEAR);
        assert_eq!(
            Modifier::from_raw(0x00ff_ffff_ffff_ffff),
            Modifier::Implicit
        );
        assert_eq!(Modifier::LINEAR.raw(), 0);
        assert!(Modifier::Implicit.is_linear());
        // I915_FORMAT_MOD_X_TILED
        assert!(!Modifier::from_raw(0x0100_0000_0000_0001).is_linear());
    }
}
