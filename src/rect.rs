//! Rectangles in picture coordinates, shared by every layer (damage, visible rects).

/// A rectangle in picture coordinates (row 0 is the top of the picture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// A rectangle from its left, top, width and height.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// The whole of a `width` × `height` frame.
    pub const fn full(width: u32, height: u32) -> Self {
        Self::new(0, 0, width, height)
    }

    /// Whether the rectangle covers no pixel.
    pub const fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The number of pixels covered (cannot overflow: at most `u32::MAX²`).
    pub const fn area(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// One past the right column, without overflow.
    pub const fn right(&self) -> u64 {
        self.x as u64 + self.width as u64
    }

    /// One past the bottom row, without overflow.
    pub const fn bottom(&self) -> u64 {
        self.y as u64 + self.height as u64
    }

    /// The common part of two rectangles; `None` when they do not overlap (touching
    /// edges do not overlap).
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = self.right().min(other.right());
        let y1 = self.bottom().min(other.bottom());
        if x1 <= u64::from(x0) || y1 <= u64::from(y0) {
            return None;
        }
        // Both ends are ≤ one of the operands' ends, and the differences fit in u32
        // because they are at most the width / height of either operand.
        Some(Rect::new(
            x0,
            y0,
            (x1 - u64::from(x0)) as u32,
            (y1 - u64::from(y0)) as u32,
        ))
    }

    /// This rectangle clipped to a `width` × `height` frame; `None` when nothing is left.
    pub fn clip(&self, width: u32, height: u32) -> Option<Rect> {
        self.intersect(&Rect::full(width, height))
    }

    /// The smallest rectangle holding both (saturating at the edge of the u32 plane).
    pub fn bounding(&self, other: &Rect) -> Rect {
        let x0 = self.x.min(other.x);
        let y0 = self.y.min(other.y);
        let x1 = self.right().max(other.right()).min(u64::from(u32::MAX)) as u32;
        let y1 = self.bottom().max(other.bottom()).min(u64::from(u32::MAX)) as u32;
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// Whether `other` lies entirely inside this rectangle.
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right() <= self.right()
            && other.bottom() <= self.bottom()
    }
}
