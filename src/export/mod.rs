//! The export layer: guest memory, framebuffer descriptions, the pin manager, and the
//! exports they produce.
//!
//! ```text
//! GuestMemory + FramebufferDesc --validate--> ValidatedFramebuffer
//!   --Exporter::export--> PinManager (populate, budget, udmabuf) --> ExportedFramebuffer
//! ```

mod desc;
mod exporter;
mod memory;
pub(crate) mod pin;

pub use desc::{
    FramebufferDesc, GuestRange, PlaneDesc, PlaneLayout, ValidatedFramebuffer, MAX_DIMENSION,
    MAX_RANGES,
};
pub use exporter::{BufferId, ExportedFramebuffer, Exporter, PeerPages};
pub use memory::{GuestMemory, GuestRegion, MemfdId, MemfdPiece};
pub use pin::{
    DiscardMode, DiscardReport, LongtermPin, PinManager, PinPolicy, PinPurpose, PinSemantics,
    Quirk, Revocation,
};

use crate::format::PixelFormat;
use crate::rect::Rect;
use crate::sys::SysError;

/// Errors of the export layer. Each names the field and the numbers that were wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A kernel-interface error.
    #[error(transparent)]
    Sys(#[from] SysError),

    /// A guest memory region of zero length.
    #[error("guest memory region at {base:#x} is empty")]
    EmptyRegion {
        /// Its base.
        base: u64,
    },
    /// A region whose end does not fit in 64 bits.
    #[error("guest memory region {base:#x}+{size:#x} wraps the address space")]
    RegionOverflow {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A region value that is not a multiple of the memfd's page size.
    #[error("guest memory region {name} {value:#x} is not aligned to the memfd page size {page}")]
    UnalignedRegion {
        /// Which value.
        name: &'static str,
        /// The value.
        value: u64,
        /// The page size.
        page: u64,
    },
    /// A region whose memfd is not sealed against shrinking, or is write-sealed.
    #[error("guest memory region at {base:#x}: memfd seals {seals:#x} lack F_SEAL_SHRINK or have F_SEAL_WRITE")]
    RegionNotSealed {
        /// Its base.
        base: u64,
        /// The memfd's seals.
        seals: u32,
    },
    /// A region reaching past the end of its memfd.
    #[error("guest memory region at {base:#x}: memfd range {file_offset:#x}+{size:#x} ends past the memfd ({file_size:#x} bytes)")]
    RegionPastMemfd {
        /// Its base.
        base: u64,
        /// Offset in the memfd.
        file_offset: u64,
        /// Its size.
        size: u64,
        /// The memfd's size.
        file_size: u64,
    },
    /// Two regions overlapping.
    #[error("guest memory region {base:#x}+{size:#x} overlaps {other_base:#x}+{other_size:#x}")]
    RegionOverlap {
        /// The new region's base.
        base: u64,
        /// The new region's size.
        size: u64,
        /// The existing region's base.
        other_base: u64,
        /// The existing region's size.
        other_size: u64,
    },
    /// A guest-physical range not backed by guest RAM.
    #[error("guest range {addr:#x}+{len:#x} is outside guest memory")]
    OutsideGuestMemory {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },

    /// A fourcc guestfb does not handle.
    #[error("unsupported fourcc {fourcc:#010x} ({})", fourcc_text(*fourcc))]
    UnsupportedFourcc {
        /// The raw code.
        fourcc: u32,
    },
    /// A tiled or compressed modifier: a udmabuf of guest RAM is plain linear memory.
    #[error("modifier {modifier:#x} is not linear; a udmabuf of guest RAM can only be LINEAR")]
    NonLinearModifier {
        /// The raw modifier.
        modifier: u64,
    },
    /// Zero width or height.
    #[error("framebuffer size {width}x{height} is empty")]
    ZeroSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Width or height over the maximum.
    #[error("framebuffer size {width}x{height} is over the maximum {max}x{max}")]
    TooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The maximum.
        max: u32,
    },
    /// The visible rect is empty or leaves the backing.
    #[error("visible rect {rect:?} is empty or outside the {width}x{height} backing")]
    VisibleOutside {
        /// The rect.
        rect: Rect,
        /// Backing width.
        width: u32,
        /// Backing height.
        height: u32,
    },
    /// Plane descriptions that do not match the format.
    #[error("{format} has {expected} plane(s), the description has {got}")]
    PlaneCount {
        /// The format.
        format: PixelFormat,
        /// Planes the format has.
        expected: usize,
        /// Planes described.
        got: usize,
    },
    /// A stride shorter than a row of pixels.
    #[error("plane {plane}: stride {stride} < width {width} × {bytes_per_sample} bytes")]
    StrideTooSmall {
        /// Plane index.
        plane: usize,
        /// The stride.
        stride: u32,
        /// Samples per row.
        width: u32,
        /// Bytes per sample.
        bytes_per_sample: u32,
    },
    /// Arithmetic on guest values that does not fit in 64 bits.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A plane reaching past the described backing.
    #[error("plane {plane}: offset {offset} + size {size} is past the backing ({backing} bytes)")]
    PlanePastBacking {
        /// Plane index.
        plane: usize,
        /// Its offset.
        offset: u64,
        /// stride × rows.
        size: u64,
        /// Backing length.
        backing: u64,
    },
    /// No scatter ranges.
    #[error("framebuffer has no guest memory ranges")]
    NoRanges,
    /// A scatter list given for a dma-buf, whose planes are offsets into the buffer.
    #[error(
        "a dma-buf framebuffer has no guest ranges, but {count} were given; describe its \
         planes by offsets into the dma-buf and leave `ranges` empty"
    )]
    RangesOnDmaBuf {
        /// Ranges given.
        count: usize,
    },
    /// Too many scatter ranges.
    #[error("framebuffer has {count} guest ranges, more than {max}")]
    TooManyRanges {
        /// Ranges given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A zero-length scatter range.
    #[error("guest range {index} is empty")]
    EmptyRange {
        /// Its index.
        index: usize,
    },
    /// A scatter range whose end does not fit in 64 bits.
    #[error("guest range {index} wraps the address space")]
    RangeOverflow {
        /// Its index.
        index: usize,
    },
    /// Scatter ranges that do not meet at page boundaries.
    #[error("guest range {index} ({addr:#x}+{len:#x}) does not meet its neighbours at a page boundary (page {page})")]
    UnalignedRange {
        /// Its index.
        index: usize,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// The page size.
        page: u64,
    },

    /// Pinning would go over the budget; nothing was pinned.
    #[error("pinning {requested} more bytes would exceed the pin budget: {pinned} of {budget} bytes already pinned")]
    BudgetExceeded {
        /// New bytes this pin needs.
        requested: u64,
        /// Bytes pinned now.
        pinned: u64,
        /// The budget.
        budget: u64,
    },
    /// The hugetlb pool cannot back the range.
    #[error(
        "hugetlb pool of {} kB pages is short: {needed} page(s) needed, {free} free; reserve \
         more with `echo N > /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages` (N = the \
         pages already reserved + {}) or hugepages= on the kernel command line",
        .page_size / 1024, .page_size / 1024, .needed.saturating_sub(*.free)
    )]
    PoolExhausted {
        /// Huge page size.
        page_size: u64,
        /// Pages the populate needed (upper bound: the range's pages).
        needed: u64,
        /// Free pages in the pool before the populate.
        free: u64,
    },
    /// A scanout pin on a kernel that cannot pin long-term, without the opt-in.
    #[error(
        "kernel {kernel} holds udmabuf pages by plain reference, not a long-term pin; \
         scanout refused (PinPolicy::allow_without_longterm opts in)"
    )]
    NoLongtermPin {
        /// Kernel release.
        kernel: String,
    },
    /// A discard of pinned memory without asking to revoke.
    #[error("discard of memfd range {offset:#x}+{len:#x} refused: {exports} export(s) pin it")]
    RangePinned {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// How many exports pin it.
        exports: usize,
    },
    /// A discard of a range that is not in guest memory.
    #[error("discard range {offset:#x}+{len:#x} is not inside the memfd")]
    DiscardOutside {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// The export was revoked (its memory was discarded); re-export to show it again.
    #[error("export of buffer {buffer_id} generation {generation} was revoked")]
    Revoked {
        /// The buffer.
        buffer_id: u64,
        /// The revoked generation.
        generation: u64,
    },
}

fn fourcc_text(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&byte| {
            if byte.is_ascii_graphic() {
                byte as char
            } else {
                '?'
            }
        })
        .collect()
}
