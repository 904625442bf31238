//! Damage rectangles, per-buffer stale regions (buffer age) and letterbox placement.
//!
//! Pure logic with no Wayland objects, so it is unit tested on its own.

use crate::rect::Rect;

/// Most rectangles a stale region keeps before it collapses to their bounding box.
pub(crate) const MAX_STALE_RECTS: usize = 16;

/// The part of one buffer that lags behind the picture on screen.
///
/// A buffer that was never shown lags everywhere; a buffer last shown `n` frames ago lags
/// by the damage of those `n` frames (this is EGL's buffer age, kept as a region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaleRegion {
    width: u32,
    height: u32,
    rects: Vec<Rect>,
}

impl StaleRegion {
    /// A region for a fresh buffer: everything is stale.
    pub(crate) fn fresh(width: u32, height: u32) -> Self {
        let mut region = Self {
            width,
            height,
            rects: Vec::new(),
        };
        region.rects.push(Rect::full(width, height));
        region
    }

    /// The stale rectangles (clipped to the frame, possibly overlapping).
    pub(crate) fn rects(&self) -> &[Rect] {
        &self.rects
    }

    /// Whether the whole buffer is stale.
    pub(crate) fn is_full(&self) -> bool {
        self.rects
            .first()
            .is_some_and(|r| r.contains(&Rect::full(self.width, self.height)))
    }

    /// Total stale pixels counted with overlaps (a cheap ordering key).
    pub(crate) fn cost(&self) -> u64 {
        self.rects.iter().map(Rect::area).sum()
    }

    /// The buffer was brought up to date and shown.
    pub(crate) fn clear(&mut self) {
        self.rects.clear();
    }

    /// Another buffer was shown with `damage`: this one now lags by it too.
    pub(crate) fn add(&mut self, damage: &[Rect]) {
        if self.is_full() {
            return;
        }
        let full = Rect::full(self.width, self.height);
        for rect in damage
            .iter()
            .filter_map(|r| r.clip(self.width, self.height))
        {
            if rect.contains(&full) {
                self.rects.clear();
                self.rects.push(full);
                return;
            }
            if self.rects.iter().any(|r| r.contains(&rect)) {
                continue;
            }
            self.rects.retain(|r| !rect.contains(r));
            self.rects.push(rect);
        }
        if self.rects.len() > MAX_STALE_RECTS {
            let bounding = self
                .rects
                .iter()
                .skip(1)
                .fold(self.rects[0], |acc, r| acc.bounding(r));
            self.rects.clear();
            self.rects.push(bounding);
        }
    }
}

/// Where the frame goes inside the window: the largest aspect-preserving rectangle,
/// centred. All values in the window's (surface-local, logical) coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Left edge of the picture.
    pub x: u32,
    /// Top edge of the picture.
    pub y: u32,
    /// Width of the picture (at least 1).
    pub width: u32,
    /// Height of the picture (at least 1).
    pub height: u32,
}

/// Fits a `frame` (width, height) into a `window` (width, height) with letterbox or
/// pillarbox bars. Sizes of zero are treated as one.
pub fn fit_letterbox(frame: (u32, u32), window: (u32, u32)) -> Placement {
    let (fw, fh) = (u64::from(frame.0.max(1)), u64::from(frame.1.max(1)));
    let (ww, wh) = (u64::from(window.0.max(1)), u64::from(window.1.max(1)));
    // Compare aspect ratios exactly: fw/fh >= ww/wh  <=>  fw*wh >= ww*fh.
    let (width, height) = if fw * wh >= ww * fh {
        // Frame is wider than the window: full width, bars above and below.
        (ww, ((ww * fh + fw / 2) / fw).clamp(1, wh))
    } else {
        // Frame is taller: full height, bars left and right.
        (((wh * fw + fh / 2) / fh).clamp(1, ww), wh)
    };
    // The values are bounded by the window's u32 size, so the casts are lossless.
    Placement {
        x: ((ww - width) / 2) as u32,
        y: ((wh - height) / 2) as u32,
        width: width as u32,
        height: height as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_and_bounding() {
        let r = Rect::new(90, 40, 20, 20);
        assert_eq!(r.clip(100, 50), Some(Rect::new(90, 40, 10, 10)));
        assert_eq!(Rect::new(100, 0, 5, 5).clip(100, 50), None);
        assert_eq!(Rect::new(u32::MAX, 0, 5, 5).clip(100, 50), None);
        let b = Rect::new(0, 0, 1, 1).bounding(&Rect::new(5, 6, 2, 3));
        assert_eq!(b, Rect::new(0, 0, 7, 9));
    }

    #[test]
    fn fresh_buffer_is_fully_stale_and_absorbs_damage() {
        let mut region = StaleRegion::fresh(64, 32);
        assert!(region.is_full());
        region.add(&[Rect::new(1, 1, 2, 2)]);
        assert_eq!(region.rects(), &[Rect::full(64, 32)]);
    }

    #[test]
    fn stale_region_accumulates_and_dedups() {
        let mut region = StaleRegion::fresh(64, 32);
        region.clear();
        assert_eq!(region.cost(), 0);
        region.add(&[Rect::new(0, 0, 4, 4)]);
        region.add(&[Rect::new(1, 1, 2, 2)]); // inside the first: dropped
        region.add(&[Rect::new(10, 10, 4, 4)]);
        assert_eq!(
            region.rects(),
            &[Rect::new(0, 0, 4, 4), Rect::new(10, 10, 4, 4)]
        );
        region.add(&[Rect::new(0, 0, 20, 20)]); // swallows both
        assert_eq!(region.rects(), &[Rect::new(0, 0, 20, 20)]);
        region.add(&[Rect::new(60, 30, 10, 10)]); // clipped
        assert_eq!(region.rects()[1], Rect::new(60, 30, 4, 2));
    }

    #[test]
    fn stale_region_collapses_when_long() {
        let mut region = StaleRegion::fresh(1000, 1000);
        region.clear();
        for i in 0..=MAX_STALE_RECTS as u32 {
            region.add(&[Rect::new(i * 10, i * 5, 2, 2)]);
        }
        let n = MAX_STALE_RECTS as u32;
        assert_eq!(region.rects(), &[Rect::new(0, 0, n * 10 + 2, n * 5 + 2)]);
    }

    #[test]
    fn letterbox_fits() {
        // Same size: identity.
        let p = fit_letterbox((1001, 667), (1001, 667));
        assert_eq!((p.x, p.y, p.width, p.height), (0, 0, 1001, 667));
        // Square frame in a wide window: pillarbox.
        let p = fit_letterbox((320, 320), (800, 600));
        assert_eq!((p.x, p.y, p.width, p.height), (100, 0, 600, 600));
        // Wide frame in a square window: letterbox.
        let p = fit_letterbox((1920, 1080), (1000, 1000));
        assert_eq!((p.x, p.y, p.width, p.height), (0, 218, 1000, 563));
        // Degenerate sizes never give a zero-sized picture.
        let p = fit_letterbox((10_000, 1), (10, 10));
        assert_eq!((p.width, p.height), (10, 1));
        let p = fit_letterbox((0, 0), (0, 0));
        assert_eq!((p.width, p.height), (1, 1));
    }
}
