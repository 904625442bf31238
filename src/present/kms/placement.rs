//! Where a picture lands on the mode: source and destination rects, letterboxed or
//! centred.

use crate::rect::Rect;

/// Where a plane reads (`src`, framebuffer pixels) and where it shows it (`dst`, CRTC
/// pixels; `x`/`y` may be negative in principle, here they never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Source rectangle in the framebuffer.
    pub src: Rect,
    /// Destination rectangle on the CRTC.
    pub dst: Rect,
}

impl Placement {
    /// Scaled to fit `mode`, aspect kept, letterboxed (centred).
    pub fn fit(src: Rect, mode: (u32, u32)) -> Self {
        let (mw, mh) = (u64::from(mode.0), u64::from(mode.1));
        let (sw, sh) = (u64::from(src.width.max(1)), u64::from(src.height.max(1)));
        let (dw, dh) = if sw * mh <= sh * mw {
            ((sw * mh / sh).max(1), mh)
        } else {
            (mw, (sh * mw / sw).max(1))
        };
        Self {
            src,
            dst: Rect {
                x: ((mw - dw) / 2) as u32,
                y: ((mh - dh) / 2) as u32,
                width: dw as u32,
                height: dh as u32,
            },
        }
    }

    /// One to one: centred when smaller than `mode`, cropped around the centre when larger.
    pub fn centre(src: Rect, mode: (u32, u32)) -> Self {
        let width = src.width.min(mode.0);
        let height = src.height.min(mode.1);
        Self {
            src: Rect {
                x: src.x + (src.width - width) / 2,
                y: src.y + (src.height - height) / 2,
                width,
                height,
            },
            dst: Rect {
                x: (mode.0 - width) / 2,
                y: (mode.1 - height) / 2,
                width,
                height,
            },
        }
    }

    /// Whether source and destination sizes differ.
    pub fn is_scaled(&self) -> bool {
        self.src.width != self.dst.width || self.src.height != self.dst.height
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_letterboxes_and_centre_crops() {
        let src = Rect::full(640, 480);
        let fit = Placement::fit(src, (1920, 1080));
        assert_eq!(
            fit.dst,
            Rect {
                x: 240,
                y: 0,
                width: 1440,
                height: 1080
            }
        );
        let same = Placement::fit(
            Rect {
                width: 1024,
                height: 768,
                ..src
            },
            (1024, 768),
        );
        assert!(!same.is_scaled());
        let big = Rect {
            x: 10,
            y: 0,
            width: 2000,
            height: 500,
        };
        let centre = Placement::centre(big, (1024, 768));
        assert_eq!(
            centre.src,
            Rect {
                x: 10 + 488,
                y: 0,
                width: 1024,
                height: 500
            }
        );
        assert_eq!(centre.dst.y, 134);
    }
}
