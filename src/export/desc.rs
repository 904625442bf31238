//! Framebuffer descriptions from the guest, and their validation.
//!
//! Every field of a [`FramebufferDesc`] comes from an untrusted guest. [`FramebufferDesc::validate`]
//! checks all of it with checked arithmetic; what comes out, a [`ValidatedFramebuffer`],
//! is known to lie inside guest RAM, so later layers can index without re-checking.

use crate::format::{Modifier, PixelFormat};
use crate::rect::Rect;

use super::memory::{coalesce, GuestMemory, MemfdPiece};
use super::ExportError;

/// Largest width or height accepted (the largest KMS/GL limits in common use).
pub const MAX_DIMENSION: u32 = 16384;
/// Most scatter ranges accepted in one description, before coalescing.
pub const MAX_RANGES: usize = 1 << 16;

/// One plane as the guest describes it: where it starts in the backing (the
/// concatenation of the scatter ranges) and its row pitch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaneDesc {
    /// Byte offset of the plane's first row in the backing.
    pub offset: u64,
    /// Bytes from one row to the next.
    pub stride: u32,
}

/// A guest-physical byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A framebuffer as the guest (or VMM) describes it. Untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramebufferDesc {
    /// DRM fourcc code.
    pub fourcc: u32,
    /// Raw DRM modifier (`DRM_FORMAT_MOD_INVALID` for implicit).
    pub modifier: u64,
    /// Backing width in pixels.
    pub width: u32,
    /// Backing height in pixels.
    pub height: u32,
    /// The part of the backing that is shown; `None` shows all of it.
    pub visible: Option<Rect>,
    /// Per-plane offset and stride.
    pub planes: Vec<PlaneDesc>,
    /// True when memory row 0 is the top of the picture.
    pub y0_top: bool,
    /// Where the backing lies in guest RAM, in order.
    pub ranges: Vec<GuestRange>,
}

/// A plane known to lie inside the exported backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneLayout {
    /// Offset from the start of the exported buffer (after page rounding).
    pub offset: u64,
    /// Row pitch in bytes.
    pub stride: u32,
    /// Rows in this plane.
    pub rows: u32,
    /// Bytes of pixel data in one row.
    pub row_bytes: u32,
}

impl PlaneLayout {
    /// Bytes from the plane's start to the end of its last row's pitch.
    pub fn span(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.rows)
    }
}

/// A framebuffer whose every number has been checked against its format and guest RAM.
#[derive(Debug, Clone)]
pub struct ValidatedFramebuffer {
    format: PixelFormat,
    modifier: Modifier,
    width: u32,
    height: u32,
    visible: Rect,
    planes: Vec<PlaneLayout>,
    y0_top: bool,
    pieces: Vec<MemfdPiece>,
    len: u64,
}

impl ValidatedFramebuffer {
    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Modifier (always linear in practice: udmabufs of guest RAM are linear).
    pub fn modifier(&self) -> Modifier {
        self.modifier
    }

    /// Backing width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Backing height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The shown part of the backing, in picture coordinates (row 0 is the top).
    pub fn visible(&self) -> Rect {
        self.visible
    }

    /// The shown part with `y` counted in memory rows from the lowest address: the same
    /// rect as [`visible`](Self::visible) when memory row 0 is the top, mirrored
    /// vertically when it is the bottom (`y0_top == false`).
    pub fn visible_in_memory(&self) -> Rect {
        let Rect {
            x,
            y,
            width,
            height,
        } = self.visible;
        if self.y0_top {
            self.visible
        } else {
            // Validation keeps y + height ≤ the backing height.
            Rect::new(x, self.height - y - height, width, height)
        }
    }

    /// Planes, with offsets relative to the exported buffer.
    pub fn planes(&self) -> &[PlaneLayout] {
        &self.planes
    }

    /// True when memory row 0 is the top of the picture.
    pub fn y0_top(&self) -> bool {
        self.y0_top
    }

    /// The page-aligned memfd pieces that make up the exported buffer, coalesced; empty
    /// for a peer's dma-buf ([`FramebufferDesc::validate_in_dmabuf`]).
    pub fn pieces(&self) -> &[MemfdPiece] {
        &self.pieces
    }

    /// Length of the exported buffer (page aligned; a peer dma-buf's size).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: validation refuses empty framebuffers.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the backing is one contiguous memfd range (one `UDMABUF_CREATE`).
    pub fn is_contiguous(&self) -> bool {
        self.pieces.len() == 1
    }
}

impl FramebufferDesc {
    /// A single-plane, contiguous description: the common case.
    pub fn packed(format: PixelFormat, width: u32, height: u32, stride: u32, addr: u64) -> Self {
        let len = u64::from(stride) * u64::from(height);
        Self {
            fourcc: format.fourcc() as u32,
            modifier: Modifier::LINEAR.raw(),
            width,
            height,
            visible: None,
            planes: vec![PlaneDesc { offset: 0, stride }],
            y0_top: true,
            ranges: vec![GuestRange { addr, len }],
        }
    }

    /// Checks everything against the format and `memory`.
    ///
    /// Rules: known fourcc; linear modifier; non-zero size up to [`MAX_DIMENSION`];
    /// one plane description per format plane; each stride at least the plane's row
    /// bytes; every plane's `offset + stride × rows` inside the backing; ranges
    /// non-empty, inside guest RAM, and page aligned where they meet (the first may
    /// start and the last may end mid-page: the export is rounded out to whole pages
    /// and plane offsets shifted, as udmabuf works in pages); visible rect inside.
    pub fn validate(&self, memory: &GuestMemory) -> Result<ValidatedFramebuffer, ExportError> {
        let (format, modifier, visible) = self.checked_header()?;
        let (head, backing_len, pieces) = self.resolve_ranges(memory)?;
        self.checked_layout(format, modifier, visible, head, backing_len, pieces)
    }

    /// Checks everything against the format and a peer's dma-buf of `size` bytes (a
    /// VMM's scanout buffer: planes are offsets into it, not guest addresses).
    ///
    /// The rules of [`validate`](Self::validate), with the dma-buf as the backing:
    /// every plane's `offset + stride × rows` inside `size`. `ranges` must be empty:
    /// a dma-buf has no guest-physical scatter list.
    pub fn validate_in_dmabuf(&self, size: u64) -> Result<ValidatedFramebuffer, ExportError> {
        let (format, modifier, visible) = self.checked_header()?;
        if !self.ranges.is_empty() {
            return Err(ExportError::RangesOnDmaBuf {
                count: self.ranges.len(),
            });
        }
        self.checked_layout(format, modifier, visible, 0, size, Vec::new())
    }

    /// Format, modifier, size and visible rect: the checks that do not depend on the
    /// backing.
    fn checked_header(&self) -> Result<(PixelFormat, Modifier, Rect), ExportError> {
        let format =
            PixelFormat::from_fourcc(self.fourcc).ok_or(ExportError::UnsupportedFourcc {
                fourcc: self.fourcc,
            })?;
        let modifier = Modifier::from_raw(self.modifier);
        if !modifier.is_linear() {
            return Err(ExportError::NonLinearModifier {
                modifier: self.modifier,
            });
        }
        if self.width == 0 || self.height == 0 {
            return Err(ExportError::ZeroSize {
                width: self.width,
                height: self.height,
            });
        }
        if self.width > MAX_DIMENSION || self.height > MAX_DIMENSION {
            return Err(ExportError::TooLarge {
                width: self.width,
                height: self.height,
                max: MAX_DIMENSION,
            });
        }
        let visible = match self.visible {
            None => Rect::full(self.width, self.height),
            Some(rect) => {
                let inside = rect.width > 0
                    && rect.height > 0
                    && rect
                        .x
                        .checked_add(rect.width)
                        .is_some_and(|right| right <= self.width)
                    && rect
                        .y
                        .checked_add(rect.height)
                        .is_some_and(|bottom| bottom <= self.height);
                if !inside {
                    return Err(ExportError::VisibleOutside {
                        rect,
                        width: self.width,
                        height: self.height,
                    });
                }
                rect
            }
        };
        Ok((format, modifier, visible))
    }

    /// The planes checked against a backing of `backing_len` bytes that starts `head`
    /// bytes into the exported buffer.
    fn checked_layout(
        &self,
        format: PixelFormat,
        modifier: Modifier,
        visible: Rect,
        head: u64,
        backing_len: u64,
        pieces: Vec<MemfdPiece>,
    ) -> Result<ValidatedFramebuffer, ExportError> {
        let format_planes = format.planes();
        if self.planes.len() != format_planes.len() {
            return Err(ExportError::PlaneCount {
                format,
                expected: format_planes.len(),
                got: self.planes.len(),
            });
        }
        let mut planes = Vec::with_capacity(format_planes.len());
        for (index, (desc, info)) in self.planes.iter().zip(format_planes).enumerate() {
            let samples = self.width.div_ceil(info.h_sub);
            let rows = self.height.div_ceil(info.v_sub);
            // width ≤ 16384 and bytes_per_sample ≤ 4: cannot overflow u32, but stay checked.
            let row_bytes = samples
                .checked_mul(info.bytes_per_sample)
                .ok_or(ExportError::Overflow { what: "row bytes" })?;
            if desc.stride < row_bytes {
                return Err(ExportError::StrideTooSmall {
                    plane: index,
                    stride: desc.stride,
                    width: samples,
                    bytes_per_sample: info.bytes_per_sample,
                });
            }
            let span = u64::from(desc.stride).checked_mul(u64::from(rows)).ok_or(
                ExportError::Overflow {
                    what: "stride × height",
                },
            )?;
            let end = desc.offset.checked_add(span).ok_or(ExportError::Overflow {
                what: "plane offset + size",
            })?;
            if end > backing_len {
                return Err(ExportError::PlanePastBacking {
                    plane: index,
                    offset: desc.offset,
                    size: span,
                    backing: backing_len,
                });
            }
            planes.push(PlaneLayout {
                // head < page size and offset + span ≤ backing_len: no overflow.
                offset: head + desc.offset,
                stride: desc.stride,
                rows,
                row_bytes,
            });
        }

        let len = if pieces.is_empty() {
            backing_len
        } else {
            pieces.iter().map(|piece| piece.len).sum()
        };
        Ok(ValidatedFramebuffer {
            format,
            modifier,
            width: self.width,
            height: self.height,
            visible,
            planes,
            y0_top: self.y0_top,
            pieces,
            len,
        })
    }

    /// Resolves the scatter list to page-aligned memfd pieces. Returns the bytes added
    /// in front by rounding the first range down to a page, the backing length the
    /// guest described, and the pieces.
    fn resolve_ranges(
        &self,
        memory: &GuestMemory,
    ) -> Result<(u64, u64, Vec<MemfdPiece>), ExportError> {
        let page = crate::sys::page_size();
        let count = self.ranges.len();
        if count == 0 {
            return Err(ExportError::NoRanges);
        }
        if count > MAX_RANGES {
            return Err(ExportError::TooManyRanges {
                count,
                max: MAX_RANGES,
            });
        }
        let mut backing_len: u64 = 0;
        let mut pieces = Vec::new();
        let mut head = 0;
        for (index, range) in self.ranges.iter().enumerate() {
            if range.len == 0 {
                return Err(ExportError::EmptyRange { index });
            }
            let end = range
                .addr
                .checked_add(range.len)
                .ok_or(ExportError::RangeOverflow { index })?;
            let first = index == 0;
            let last = index + 1 == count;
            // Ranges meet at page boundaries: otherwise the pages concatenated by
            // udmabuf would not be the bytes the guest described.
            let start_ok = first || range.addr % page == 0;
            let end_ok = last || end % page == 0;
            if !start_ok || !end_ok {
                return Err(ExportError::UnalignedRange {
                    index,
                    addr: range.addr,
                    len: range.len,
                    page,
                });
            }
            let aligned_start = range.addr - range.addr % page;
            if first {
                head = range.addr - aligned_start;
            }
            let aligned_end = end
                .checked_next_multiple_of(page)
                .ok_or(ExportError::RangeOverflow { index })?;
            backing_len = backing_len
                .checked_add(range.len)
                .ok_or(ExportError::Overflow {
                    what: "total range length",
                })?;
            pieces.extend(memory.lookup(aligned_start, aligned_end - aligned_start)?);
        }
        Ok((head, backing_len, coalesce(pieces)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sys::memfd::{Memfd, Seals};

    const MIB: u64 = 1 << 20;

    fn memory() -> GuestMemory {
        let memfd = Memfd::create("guest-ram").unwrap();
        memfd.set_size(64 * MIB).unwrap();
        memfd.add_seals(Seals::SHRINK | Seals::GROW).unwrap();
        let mut memory = GuestMemory::new();
        memory.add_region(0, 64 * MIB, Arc::new(memfd), 0).unwrap();
        memory
    }

    fn good() -> FramebufferDesc {
        FramebufferDesc::packed(PixelFormat::Xrgb8888, 640, 480, 2560, 0x10_0000)
    }

    fn nv12() -> FramebufferDesc {
        let mut desc = good();
        desc.fourcc = PixelFormat::Nv12.fourcc() as u32;
        desc.planes = vec![
            PlaneDesc {
                offset: 0,
                stride: 640,
            },
            PlaneDesc {
                offset: 640 * 480,
                stride: 640,
            },
        ];
        desc.ranges[0].len = 640 * 480 * 3 / 2;
        desc
    }

    /// A table of malformed descriptors, each with the error variant it must give.
    #[test]
    fn malformed_descriptors_give_their_errors() {
        type Case = (
            &'static str,
            fn(&mut FramebufferDesc),
            fn(&ExportError) -> bool,
        );
        let cases: Vec<Case> = vec![
            (
                "zero width",
                |d| d.width = 0,
                |e| matches!(e, ExportError::ZeroSize { .. }),
            ),
            (
                "zero height",
                |d| d.height = 0,
                |e| matches!(e, ExportError::ZeroSize { .. }),
            ),
            (
                "huge width",
                |d| d.width = 70000,
                |e| matches!(e, ExportError::TooLarge { .. }),
            ),
            (
                "huge height",
                |d| d.height = u32::MAX,
                |e| matches!(e, ExportError::TooLarge { .. }),
            ),
            (
                "unknown fourcc",
                |d| d.fourcc = 0x3231_5659,
                |e| matches!(e, ExportError::UnsupportedFourcc { .. }),
            ),
            (
                "zero fourcc",
                |d| d.fourcc = 0,
                |e| matches!(e, ExportError::UnsupportedFourcc { .. }),
            ),
            (
                "x-tiled modifier",
                |d| d.modifier = 0x0100_0000_0000_0001,
                |e| matches!(e, ExportError::NonLinearModifier { .. }),
            ),
            (
                "afbc modifier",
                |d| d.modifier = 0x0800_0000_0000_0001,
                |e| matches!(e, ExportError::NonLinearModifier { .. }),
            ),
            (
                "stride too small",
                |d| d.planes[0].stride = 2559,
                |e| matches!(e, ExportError::StrideTooSmall { .. }),
            ),
            (
                "stride zero",
                |d| d.planes[0].stride = 0,
                |e| matches!(e, ExportError::StrideTooSmall { .. }),
            ),
            (
                "no planes",
                |d| d.planes.clear(),
                |e| matches!(e, ExportError::PlaneCount { .. }),
            ),
            (
                "two planes for xrgb",
                |d| d.planes.push(PlaneDesc::default()),
                |e| matches!(e, ExportError::PlaneCount { .. }),
            ),
            (
                "plane past backing",
                |d| d.planes[0].offset = 4096,
                |e| matches!(e, ExportError::PlanePastBacking { .. }),
            ),
            (
                "plane offset overflow",
                |d| d.planes[0].offset = u64::MAX - 10,
                |e| matches!(e, ExportError::Overflow { .. }),
            ),
            (
                "stride × height past backing",
                |d| {
                    d.planes[0].stride = u32::MAX;
                    d.height = 16384;
                },
                |e| matches!(e, ExportError::PlanePastBacking { .. }),
            ),
            (
                "backing too short",
                |d| d.ranges[0].len = 2560 * 479,
                |e| matches!(e, ExportError::PlanePastBacking { .. }),
            ),
            (
                "no ranges",
                |d| d.ranges.clear(),
                |e| matches!(e, ExportError::NoRanges),
            ),
            (
                "empty range",
                |d| d.ranges[0].len = 0,
                |e| matches!(e, ExportError::EmptyRange { index: 0 }),
            ),
            (
                "range wraps",
                |d| d.ranges[0].addr = u64::MAX - 100,
                |e| matches!(e, ExportError::RangeOverflow { .. }),
            ),
            (
                "range outside guest memory",
                |d| d.ranges[0].addr = 1 << 40,
                |e| matches!(e, ExportError::OutsideGuestMemory { .. }),
            ),
            (
                "range runs off guest memory",
                |d| d.ranges[0].addr = 64 * MIB - 4096,
                |e| matches!(e, ExportError::OutsideGuestMemory { .. }),
            ),
            (
                "list too long",
                |d| d.ranges = vec![GuestRange { addr: 0, len: 4096 }; MAX_RANGES + 1],
                |e| matches!(e, ExportError::TooManyRanges { .. }),
            ),
            (
                "unaligned inner boundary",
                |d| {
                    d.ranges = vec![
                        GuestRange { addr: 0, len: 4000 },
                        GuestRange {
                            addr: 8192,
                            len: 2560 * 480,
                        },
                    ]
                },
                |e| matches!(e, ExportError::UnalignedRange { index: 0, .. }),
            ),
            (
                "unaligned second start",
                |d| {
                    d.ranges = vec![
                        GuestRange { addr: 0, len: 4096 },
                        GuestRange {
                            addr: 8193,
                            len: 2560 * 480,
                        },
                    ]
                },
                |e| matches!(e, ExportError::UnalignedRange { index: 1, .. }),
            ),
            (
                "visible outside",
                |d| {
                    d.visible = Some(Rect {
                        x: 600,
                        y: 0,
                        width: 100,
                        height: 10,
                    })
                },
                |e| matches!(e, ExportError::VisibleOutside { .. }),
            ),
            (
                "visible empty",
                |d| d.visible = Some(Rect::full(0, 10)),
                |e| matches!(e, ExportError::VisibleOutside { .. }),
            ),
            (
                "visible overflow",
                |d| {
                    d.visible = Some(Rect {
                        x: u32::MAX,
                        y: 0,
                        width: 2,
                        height: 1,
                    })
                },
                |e| matches!(e, ExportError::VisibleOutside { .. }),
            ),
        ];
        assert!(cases.len() >= 25);
        let memory = memory();
        assert!(good().validate(&memory).is_ok());
        for (name, mutate, expected) in cases {
            let mut desc = good();
            mutate(&mut desc);
            let error = desc.validate(&memory).expect_err(name);
            assert!(expected(&error), "{name}: got {error:?}");
            assert!(!error.to_string().is_empty());
        }
        // NV12-specific: chroma plane past the backing; chroma stride too small.
        let mut desc = nv12();
        assert!(desc.validate(&memory).is_ok());
        desc.planes[1].offset += 4096;
        assert!(matches!(
            desc.validate(&memory),
            Err(ExportError::PlanePastBacking { plane: 1, .. })
        ));
        let mut desc = nv12();
        desc.planes[1].stride = 638;
        assert!(matches!(
            desc.validate(&memory),
            Err(ExportError::StrideTooSmall { plane: 1, .. })
        ));
    }

    #[test]
    fn visible_rect_in_memory_rows_mirrors_for_bottom_up_frames() {
        let memory = memory();
        let mut desc = good();
        desc.visible = Some(Rect::new(10, 20, 100, 50));
        let top_down = desc.validate(&memory).unwrap();
        assert_eq!(top_down.visible_in_memory(), Rect::new(10, 20, 100, 50));
        desc.y0_top = false;
        let bottom_up = desc.validate(&memory).unwrap();
        assert_eq!(bottom_up.visible(), Rect::new(10, 20, 100, 50));
        // 480 rows: picture rows 20..70 are memory rows 410..460.
        assert_eq!(bottom_up.visible_in_memory(), Rect::new(10, 410, 100, 50));
    }

    #[test]
    fn mid_page_start_becomes_a_plane_offset() {
        let memory = memory();
        let mut desc = good();
        desc.ranges[0].addr = 0x10_0000 + 100;
        let fb = desc.validate(&memory).unwrap();
        assert_eq!(fb.planes()[0].offset, 100);
        assert_eq!(fb.pieces()[0].offset, 0x10_0000);
        assert_eq!(fb.len() % 4096, 0);
        assert!(fb.len() >= 100 + 2560 * 480);
    }

    #[test]
    fn adjacent_ranges_coalesce_and_reversed_ones_do_not() {
        let memory = memory();
        let mut desc = good();
        let half = 2560 * 240;
        desc.ranges = vec![
            GuestRange {
                addr: 0x20_0000,
                len: half,
            },
            GuestRange {
                addr: 0x20_0000 + half,
                len: half,
            },
        ];
        assert!(desc.validate(&memory).unwrap().is_contiguous());
        desc.ranges = vec![
            GuestRange {
                addr: 0x40_0000,
                len: half,
            },
            GuestRange {
                addr: 0x20_0000,
                len: half,
            },
        ];
        let fb = desc.validate(&memory).unwrap();
        assert_eq!(fb.pieces().len(), 2);
        assert_eq!(fb.pieces()[0].offset, 0x40_0000);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_desc() -> impl Strategy<Value = FramebufferDesc> {
            let fourcc = prop_oneof![
                Just(PixelFormat::Xrgb8888.fourcc() as u32),
                Just(PixelFormat::Nv12.fourcc() as u32),
                Just(PixelFormat::Rgb565.fourcc() as u32),
                Just(PixelFormat::Bgr888.fourcc() as u32),
                any::<u32>(),
            ];
            let small_or_any = |max: u64| prop_oneof![0..max, any::<u64>()];
            let dimension = prop_oneof![0u32..2000, any::<u32>()];
            let plane = (
                small_or_any(1 << 22),
                prop_oneof![0u32..10_000, any::<u32>()],
            )
                .prop_map(|(offset, stride)| PlaneDesc { offset, stride });
            let range = (small_or_any(80 << 20), small_or_any(8 << 20))
                .prop_map(|(addr, len)| GuestRange { addr, len });
            let visible =
                proptest::option::of((0u32..3000, 0u32..3000, 0u32..3000, 0u32..3000).prop_map(
                    |(x, y, width, height)| Rect {
                        x,
                        y,
                        width,
                        height,
                    },
                ));
            (
                fourcc,
                prop_oneof![Just(0u64), any::<u64>()],
                dimension.clone(),
                dimension,
                visible,
                proptest::collection::vec(plane, 0..3),
                any::<bool>(),
                proptest::collection::vec(range, 0..4),
            )
                .prop_map(
                    |(fourcc, modifier, width, height, visible, planes, y0_top, ranges)| {
                        FramebufferDesc {
                            fourcc,
                            modifier,
                            width,
                            height,
                            visible,
                            planes,
                            y0_top,
                            ranges,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            /// Random descriptors never panic, and every accepted one lies inside its
            /// backing and inside guest RAM.
            #[test]
            fn random_descriptors_never_escape_the_backing(desc in any_desc()) {
                let memory = memory();
                if let Ok(fb) = desc.validate(&memory) {
                    let total: u64 = fb.pieces().iter().map(|piece| piece.len).sum();
                    prop_assert_eq!(total, fb.len());
                    prop_assert_eq!(fb.len() % crate::sys::page_size(), 0);
                    for plane in fb.planes() {
                        prop_assert!(plane.offset + plane.span() <= fb.len());
                        prop_assert!(plane.stride >= plane.row_bytes);
                    }
                    for piece in fb.pieces() {
                        prop_assert!(piece.end() <= 64 * MIB);
                    }
                    let visible = fb.visible();
                    prop_assert!(visible.x + visible.width <= fb.width());
                    prop_assert!(visible.y + visible.height <= fb.height());
                }
            }
        }
    }
}
