//! An export seen as dma-buf planes: what EGL import and linux-dmabuf passthrough take.
//!
//! [`with_export_image`] lends an [`ExportedFramebuffer`] as a [`DmaBufImage`]: its
//! udmabuf when the host has `/dev/udmabuf`, else (host-only fallback, for tests and
//! development machines) the guest memfd itself, which Mesa (25, llvmpipe, and weston's
//! GL renderer on it) accepts as a linear "dma-buf". The fallback only works for an
//! export that is one contiguous piece of one memfd: a scattered export has no single fd
//! to hand over, and is refused with [`ExportImageError::Scattered`].

use std::os::fd::{AsFd, BorrowedFd};

use crate::export::{ExportError, ExportedFramebuffer};
use crate::format::{Modifier, PixelFormat};

/// One plane of a dma-buf framebuffer.
#[derive(Debug, Clone, Copy)]
pub struct DmaBufPlane<'a> {
    /// The dma-buf (or, where the driver accepts it, a memfd) holding the plane.
    pub fd: BorrowedFd<'a>,
    /// Byte offset of the plane's first row in `fd`.
    pub offset: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
}

/// A framebuffer to import: planes, format, modifier and *backing* size.
///
/// `width` and `height` are the size of the whole buffer; the visible rectangle is the
/// renderer's business (`present::gl::DrawParams`).
#[derive(Debug, Clone, Copy)]
pub struct DmaBufImage<'a> {
    /// One entry per plane of `format`, first plane first.
    pub planes: &'a [DmaBufPlane<'a>],
    /// Pixel format.
    pub format: PixelFormat,
    /// Layout modifier; attributes are passed to EGL only for an explicit one.
    pub modifier: Modifier,
    /// Backing width in pixels.
    pub width: u32,
    /// Backing height in pixels.
    pub height: u32,
}

/// What the planes' fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource {
    /// The export's udmabuf: a real dma-buf.
    DmaBuf,
    /// Host-only fallback: the guest memfd, passed as a linear dma-buf (Mesa accepts it;
    /// real drivers and compositors on other stacks may not).
    Memfd,
}

/// Why an export cannot be lent as dma-buf planes.
#[derive(Debug, thiserror::Error)]
pub enum ExportImageError {
    /// The export is revoked (or another export-layer error).
    #[error(transparent)]
    Export(#[from] ExportError),
    /// No udmabuf, and the export spans several memfd pieces: no single fd holds it.
    #[error(
        "buffer {buffer_id} has no dma-buf (no /dev/udmabuf on this host) and its memory is \
         {pieces} separate memfd pieces; only a single-piece export can be passed as a memfd \
         (host-only fallback). Use a host with udmabuf, or the CPU path"
    )]
    Scattered {
        /// The buffer.
        buffer_id: u64,
        /// Pieces in its scatter list.
        pieces: usize,
    },
    /// A plane offset does not fit the 32-bit offset dma-buf interfaces take.
    #[error("plane {plane} of buffer {buffer_id} starts at byte {offset}, beyond u32")]
    OffsetTooLarge {
        /// The buffer.
        buffer_id: u64,
        /// Plane index.
        plane: usize,
        /// The offset in the fd.
        offset: u64,
    },
}

/// Runs `f` with `export` as a [`DmaBufImage`] (backing size, planes on one fd) and
/// which fd that is. Nothing is copied or mapped; the fd is only lent for the call.
pub fn with_export_image<R>(
    export: &ExportedFramebuffer,
    f: impl FnOnce(&DmaBufImage<'_>, ImageSource) -> R,
) -> Result<R, ExportImageError> {
    let layout = export.layout();
    let buffer_id = export.buffer_id();
    export.with_dmabuf(|dmabuf| {
        let (fd, base, source) = match dmabuf {
            Some(dmabuf) => (dmabuf.as_fd(), 0, ImageSource::DmaBuf),
            None => match layout.pieces() {
                [piece] => (piece.memfd.as_fd(), piece.offset, ImageSource::Memfd),
                pieces => {
                    return Err(ExportImageError::Scattered {
                        buffer_id,
                        pieces: pieces.len(),
                    })
                }
            },
        };
        let mut planes = Vec::with_capacity(layout.planes().len());
        for (plane, p) in layout.planes().iter().enumerate() {
            let offset = base + p.offset;
            planes.push(DmaBufPlane {
                fd,
                offset: u32::try_from(offset).map_err(|_| ExportImageError::OffsetTooLarge {
                    buffer_id,
                    plane,
                    offset,
                })?,
                stride: p.stride,
            });
        }
        let image = DmaBufImage {
            planes: &planes,
            format: layout.format(),
            modifier: layout.modifier(),
            width: layout.width(),
            height: layout.height(),
        };
        Ok(f(&image, source))
    })?
}
