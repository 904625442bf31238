//! The copy path: why it is taken ([`CopyReason`]), what a fill draws into
//! ([`FillTarget`]), the fill interface ([`FrameFill`]) with its CPU implementation, and
//! the scanout buffers it draws into.

use std::os::fd::OwnedFd;

use drm::buffer::{self, DrmFourcc};
use drm::control::Device as ControlDevice;

use crate::export::{BufferId, ExportedFramebuffer};
use crate::format::PixelFormat;
use crate::import::convert::{Dest, DestFormat};
use crate::rect::Rect;

use super::card::{add_fb2, Card, Dumb, Fb, Planar};
use super::error::{ioctl, KmsError};

/// Why a frame went through the copy path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyReason {
    /// The primary plane does not take the guest's format and modifier.
    FormatNotOnPlane,
    /// The picture is stored bottom-up and the plane has no REFLECT_Y.
    BottomUpWithoutReflect,
    /// The export has no dma-buf (no /dev/udmabuf).
    NoDmaBuf,
    /// hugetlb-backed export on a kernel whose udmabuf vmap repeats each folio's head
    /// page: the scanout engine would read wrong pixels.
    HugetlbVmapQuirk,
    /// A peer's udmabuf whose pages nobody said are 4 KiB, on a kernel with the hugetlb
    /// vmap quirk: they may be hugetlb folios, which the scanout engine would read wrong.
    PeerPagesUnknown,
}

/// A scanout buffer the copy path draws into: a gbm buffer object (SCANOUT | LINEAR,
/// XRGB8888), or a dumb buffer where gbm is unavailable.
pub struct FillTarget<'a> {
    pub(super) inner: &'a mut CopyBuffer,
    pub(super) card: &'a Card,
}

impl std::fmt::Debug for FillTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillTarget")
            .field("size", &self.size())
            .finish()
    }
}

impl FillTarget<'_> {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.inner.size()
    }

    /// The target's format (always XRGB8888).
    pub fn format(&self) -> PixelFormat {
        PixelFormat::Xrgb8888
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        match &self.inner {
            CopyBuffer::Gbm(bo) => bo.stride(),
            CopyBuffer::Dumb(dumb) => dumb.pitch(),
        }
    }

    /// The buffer as a dma-buf (what a GL renderer imports as its render target):
    /// linear, [`FillTarget::format`], [`FillTarget::stride`], offset 0.
    pub fn dmabuf(&self) -> Result<OwnedFd, KmsError> {
        // O_RDWR: a renderer that maps the dma-buf (llvmpipe does) needs a writable
        // mapping; gbm_bo_get_fd and a plain PRIME export give a read-only one.
        let (card, handle) = match &self.inner {
            CopyBuffer::Gbm(bo) => (self.card, buffer::Buffer::handle(bo)),
            CopyBuffer::Dumb(dumb) => (&dumb.card, buffer::Buffer::handle(dumb.buffer())),
        };
        card.buffer_to_prime_fd(handle, (libc::O_CLOEXEC | libc::O_RDWR) as u32)
            .map_err(ioctl("DRM_IOCTL_PRIME_HANDLE_TO_FD (O_RDWR)"))
    }

    /// Runs `f` over the CPU-mapped pixels and the stride in bytes.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut [u8], u32) -> R) -> Result<R, KmsError> {
        match &mut self.inner {
            CopyBuffer::Gbm(bo) => {
                let (width, height) = (bo.width(), bo.height());
                let mut f = Some(f);
                bo.map_mut(0, 0, width, height, |map| {
                    let stride = map.stride();
                    (f.take().expect("called once"))(map.buffer_mut(), stride)
                })
                .map_err(|source| KmsError::Gbm {
                    what: format!("gbm_bo_map {width}x{height}"),
                    source,
                })
            }
            CopyBuffer::Dumb(dumb) => dumb.with_bytes(f),
        }
    }
}

/// Draws an export into a scanout buffer for the copy path. The CPU fill is the default;
/// a GL renderer (EGLImage of the export → FBO on the target's dma-buf) can replace it.
pub trait FrameFill: Send + std::fmt::Debug {
    /// A short name for status reports.
    fn name(&self) -> &'static str;
    /// Draws the export's visible rect, top row first, into `target` (same size).
    fn fill(
        &mut self,
        export: &ExportedFramebuffer,
        target: &mut FillTarget<'_>,
    ) -> Result<(), KmsError>;
    /// The name of what drew the last frame (a fill may fall back to another per
    /// frame); [`FrameFill::name`] unless the fill says otherwise.
    fn last_used(&self) -> &'static str {
        self.name()
    }
    /// Drops whatever the fill keeps of `buffer_id` up to `generation` (that export
    /// was revoked: an imported image would keep its pages pinned).
    fn forget(&mut self, buffer_id: BufferId, generation: u64) {
        let _ = (buffer_id, generation);
    }
    /// Decisions since the last call, for the presenter's log.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// The CPU fill: blits the export through [`crate::import::CpuMapping`] into XRGB8888
/// with the gl=off path's SIMD converter.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuFill;

impl FrameFill for CpuFill {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn fill(
        &mut self,
        export: &ExportedFramebuffer,
        target: &mut FillTarget<'_>,
    ) -> Result<(), KmsError> {
        let mapping = crate::import::CpuMapping::new(export.clone());
        let visible = export.layout().visible();
        target.write_with(|data, stride| {
            let mut dest = Dest {
                data,
                stride: stride as usize,
                format: DestFormat::Xrgb8888,
            };
            mapping.blit(&mut dest, &[Rect::full(visible.width, visible.height)])
        })??;
        Ok(())
    }
}

pub(super) enum CopyBuffer {
    Gbm(gbm::BufferObject<()>),
    Dumb(Dumb),
}

impl std::fmt::Debug for CopyBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gbm(_) => write!(f, "Gbm{:?}", self.size()),
            Self::Dumb(_) => write!(f, "Dumb{:?}", self.size()),
        }
    }
}

impl CopyBuffer {
    pub(super) fn size(&self) -> (u32, u32) {
        match self {
            Self::Gbm(bo) => (bo.width(), bo.height()),
            Self::Dumb(dumb) => buffer::Buffer::size(dumb.buffer()),
        }
    }

    pub(super) fn add_fb(&self, card: &Card) -> Result<Fb, KmsError> {
        match self {
            Self::Gbm(bo) => add_fb2(
                card,
                &Planar {
                    size: (bo.width(), bo.height()),
                    format: DrmFourcc::Xrgb8888,
                    modifier: None,
                    handles: [Some(buffer::Buffer::handle(bo)), None, None, None],
                    pitches: [bo.stride(), 0, 0, 0],
                    offsets: [0; 4],
                },
            ),
            Self::Dumb(dumb) => dumb.add_fb(),
        }
    }
}
