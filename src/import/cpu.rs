//! Reading exported framebuffers with the CPU (the gl=off path).

use crate::export::{ExportError, ExportedFramebuffer, ValidatedFramebuffer};
use crate::rect::Rect;
use crate::sys::volatile::VolatileSlice;

use super::convert::{self, BlitStats, Dest, Source, SourcePlane};
use super::CpuBlitError;

/// How a [`CpuMapping`] reaches the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuPath {
    /// mmap of the dma-buf (the export's udmabuf, VM_PFNMAP on Linux ≥ 6.11, or a
    /// peer's), bracketed by DMA_BUF_IOCTL_SYNC.
    UdmabufMmap,
    /// No /dev/udmabuf: the guest's memfd pieces are mapped directly, back to back.
    MemfdDirect,
}

/// CPU read access to an exported framebuffer.
///
/// The mapping belongs to the export's pin: when a discard revokes the export, the
/// mapping goes with it, and [`CpuMapping::read`] returns [`ExportError::Revoked`]
/// instead of stale or freed memory.
///
/// ```
/// use std::os::fd::AsFd;
/// use std::os::unix::fs::FileExt;
/// use std::sync::Arc;
/// use guestfb::export::{Exporter, FramebufferDesc, GuestMemory, PinManager, PinPolicy, PinPurpose};
/// use guestfb::format::PixelFormat;
/// use guestfb::import::convert::{Dest, DestFormat};
/// use guestfb::import::CpuMapping;
/// use guestfb::rect::Rect;
/// use guestfb::sys::memfd::{Memfd, Seals};
///
/// let ram = Arc::new(Memfd::create("guest-ram")?);
/// ram.set_size(1 << 16)?;
/// ram.add_seals(Seals::SHRINK)?;
/// // The guest draws an XBGR8888 pixel (R=0x11, G=0x22, B=0x33) at (1, 0).
/// let file = std::fs::File::from(ram.as_fd().try_clone_to_owned()?);
/// file.write_all_at(&[0x11, 0x22, 0x33, 0xff], 4)?;
///
/// let mut memory = GuestMemory::new();
/// memory.add_region(0, 1 << 16, ram.clone(), 0)?;
/// let exporter = Exporter::new(Arc::new(memory), PinManager::new(PinPolicy::default()));
/// let desc = FramebufferDesc::packed(PixelFormat::Xbgr8888, 16, 16, 64, 0);
/// let mapping = CpuMapping::new(exporter.export(1, &desc, PinPurpose::CpuRead)?);
///
/// // gl=off: blit the damage into the window's XRGB8888 buffer, converting.
/// let mut window = vec![0u8; 16 * 16 * 4];
/// let dest = &mut Dest { data: &mut window, stride: 64, format: DestFormat::Xrgb8888 };
/// let stats = mapping.blit(dest, &[Rect::new(0, 0, 2, 1)])?;
/// assert_eq!(stats.pixels, 2);
/// assert_eq!(&window[4..8], &[0x33, 0x22, 0x11, 0xff]); // B, G, R, X in memory
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CpuMapping {
    export: ExportedFramebuffer,
}

impl CpuMapping {
    /// CPU access to `export`; the mapping is made on the first read.
    pub fn new(export: ExportedFramebuffer) -> Self {
        Self { export }
    }

    /// The export read.
    pub fn export(&self) -> &ExportedFramebuffer {
        &self.export
    }

    /// Which path the reads take.
    pub fn path(&self) -> Result<CpuPath, ExportError> {
        Ok(if self.export.has_dmabuf()? {
            CpuPath::UdmabufMmap
        } else {
            CpuPath::MemfdDirect
        })
    }

    /// Runs `f` over the exported bytes (plane offsets of the layout index into them).
    ///
    /// The bytes are guest memory, so `f` gets a [`VolatileSlice`], not a slice: copy
    /// out what it needs (`read_at`, `to_vec`, `get`).
    pub fn read<R>(
        &self,
        f: impl FnOnce(VolatileSlice<'_>, &ValidatedFramebuffer) -> R,
    ) -> Result<R, ExportError> {
        let layout = self.export.layout();
        self.export.with_cpu_bytes(|bytes| f(bytes, layout))
    }

    /// Blits `damage` (picture coordinates of the visible rect, top row first) of the
    /// export into `dst`, which has the visible rect's size: the gl=off frame copy.
    pub fn blit(&self, dst: &mut Dest<'_>, damage: &[Rect]) -> Result<BlitStats, CpuBlitError> {
        self.read(|bytes, layout| {
            let planes = visible_planes(bytes, layout);
            let visible = layout.visible();
            let source = Source {
                format: layout.format(),
                width: visible.width,
                height: visible.height,
                planes: &planes,
                y0_top: layout.y0_top(),
            };
            convert::blit(&source, dst, damage)
        })?
        .map_err(CpuBlitError::from)
    }
}

/// The planes of the visible rect, as views of the exported bytes.
///
/// The visible rect is in picture coordinates; with `y0_top == false` picture row `y`
/// is memory row `height - 1 - y`, so the visible rows start lower in memory.
fn visible_planes<'a>(
    bytes: VolatileSlice<'a>,
    layout: &ValidatedFramebuffer,
) -> Vec<SourcePlane<'a>> {
    let visible = layout.visible_in_memory();
    let first_memory_row = visible.y;
    layout
        .format()
        .planes()
        .iter()
        .zip(layout.planes())
        .map(|(info, plane)| {
            // Validation put every plane inside `bytes`: these offsets stay in range.
            let row = u64::from(first_memory_row / info.v_sub);
            let column = u64::from(visible.x / info.h_sub) * u64::from(info.bytes_per_sample);
            let start = plane.offset + row * u64::from(plane.stride) + column;
            let end = plane.offset + plane.span();
            let data = bytes
                .subslice(start as usize, (end - start) as usize)
                .unwrap_or(VolatileSlice::empty());
            SourcePlane {
                data,
                stride: plane.stride as usize,
            }
        })
        .collect()
}
