//! An export seen as dma-buf planes: what EGL import and linux-dmabuf passthrough take.
//!
//! [`with_export_image`] lends an [`ExportedFramebuffer`] as a [`DmaBufImage`]: its
//! udmabuf when the host has `/dev/udmabuf`, else (host-only fallback, for tests and
//! development machines) the guest memfd itself, which Mesa (25, llvmpipe, and weston's
//! GL renderer on it) accepts as a linear "dma-buf". The fallback only works for an
//! export that is one contiguous piece of one memfd: a scattered export has no single fd
//! to hand over, and is refused with [`DmaBufImageError::Scattered`].

use std::os::fd::{AsFd, BorrowedFd};

use crate::export::{ExportError, ExportedFramebuffer, FramebufferDesc, PlaneDesc};
use crate::format::{Modifier, PixelFormat};
use crate::rect::Rect;

/// One plane of a dma-buf image: the fd that holds it, where its first row starts and
/// how far apart rows are. `Fd` is [`OwnedFd`](std::os::fd::OwnedFd) where the image
/// was received (QEMU's scanouts) and [`BorrowedFd`] where it is lent for a call.
#[derive(Debug, Clone, Copy)]
pub struct DmaBufPlane<Fd> {
    /// The dma-buf (or, where the driver accepts it, a memfd) holding the plane.
    pub fd: Fd,
    /// Byte offset of the plane's first row in `fd`.
    pub offset: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
}

/// A dma-buf image, the one description every consumer takes: EGL import
/// ([`EglImporter`](crate::import::egl::EglImporter)), linux-dmabuf passthrough, KMS
/// direct scanout, QEMU's gl=on scanouts
/// ([`QemuEvent::ScanoutDmaBuf`](crate::source::qemu::QemuEvent::ScanoutDmaBuf)).
///
/// `width` and `height` are the size of the whole buffer (what is imported); `visible`
/// is the part of it that is the picture, in picture coordinates (`y` from the top of
/// the picture), and `y0_top` says whether memory row 0 is the picture's top row.
///
/// ```
/// use std::os::fd::AsFd;
/// use guestfb::format::{Modifier, PixelFormat};
/// use guestfb::import::dmabuf::{DmaBufImage, DmaBufPlane};
/// use guestfb::rect::Rect;
///
/// let file = std::fs::File::open("/dev/null").unwrap();
/// let image = DmaBufImage {
///     planes: vec![DmaBufPlane { fd: file.as_fd(), offset: 0, stride: 256 }],
///     format: PixelFormat::Xrgb8888,
///     modifier: Modifier::LINEAR,
///     width: 64,
///     height: 48,
///     visible: Rect::new(0, 4, 64, 32),
///     y0_top: false,
/// };
/// // Bottom-up: picture rows 4..36 are memory rows 12..44.
/// assert_eq!(image.visible_in_memory(), Rect::new(0, 12, 64, 32));
/// assert_eq!(image.framebuffer_desc().planes[0].stride, 256);
/// ```
#[derive(Debug, Clone)]
pub struct DmaBufImage<Fd> {
    /// One entry per plane of `format`, first plane first (1 to 4).
    pub planes: Vec<DmaBufPlane<Fd>>,
    /// Pixel format.
    pub format: PixelFormat,
    /// Layout modifier; attributes are passed to EGL and KMS only for an explicit one.
    pub modifier: Modifier,
    /// Backing width in pixels.
    pub width: u32,
    /// Backing height in pixels.
    pub height: u32,
    /// The part of the buffer that is the picture, `y` from the picture's top.
    pub visible: Rect,
    /// True when memory row 0 is the top of the picture; false: bottom-up.
    pub y0_top: bool,
}

impl<Fd: AsFd> DmaBufImage<Fd> {
    /// The same image with its fds borrowed.
    pub fn borrowed(&self) -> DmaBufImage<BorrowedFd<'_>> {
        DmaBufImage {
            planes: self
                .planes
                .iter()
                .map(|plane| DmaBufPlane {
                    fd: plane.fd.as_fd(),
                    offset: plane.offset,
                    stride: plane.stride,
                })
                .collect(),
            format: self.format,
            modifier: self.modifier,
            width: self.width,
            height: self.height,
            visible: self.visible,
            y0_top: self.y0_top,
        }
    }
}

impl<Fd> DmaBufImage<Fd> {
    /// The visible rect with `y` counted in memory rows from the lowest address (what a
    /// KMS plane's source rect or a texture's rows are): `visible` itself when memory
    /// row 0 is the top, mirrored vertically when it is the bottom.
    pub fn visible_in_memory(&self) -> Rect {
        if self.y0_top {
            self.visible
        } else {
            Rect {
                y: (self.height).saturating_sub(self.visible.y.saturating_add(self.visible.height)),
                ..self.visible
            }
        }
    }

    /// The image as a framebuffer description of a dma-buf (planes as offsets into it,
    /// no guest ranges), for
    /// [`ExportedFramebuffer::from_peer_dmabuf`], which validates every number against
    /// the dma-buf's size.
    pub fn framebuffer_desc(&self) -> FramebufferDesc {
        FramebufferDesc {
            fourcc: self.format.fourcc() as u32,
            modifier: self.modifier.raw(),
            width: self.width,
            height: self.height,
            visible: Some(self.visible),
            planes: self
                .planes
                .iter()
                .map(|plane| PlaneDesc {
                    offset: u64::from(plane.offset),
                    stride: plane.stride,
                })
                .collect(),
            y0_top: self.y0_top,
            ranges: Vec::new(),
        }
    }
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
pub enum DmaBufImageError {
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
    /// A plane reaches past what the dma-buf interfaces can address.
    #[error(
        "plane {plane} of buffer {buffer_id} ends at byte {end} (offset {offset} + stride \
         {stride} × {rows} rows), past {max}: EGL takes signed 32-bit plane offsets and \
         pitches, linux-dmabuf 32-bit plane sizes. Use a smaller stride, or the CPU path \
         (gl=off), which has no such limit"
    )]
    PlaneTooLarge {
        /// The buffer.
        buffer_id: u64,
        /// Plane index.
        plane: usize,
        /// The plane's offset in the fd.
        offset: u64,
        /// Its stride.
        stride: u32,
        /// Its rows.
        rows: u32,
        /// The byte after its last row.
        end: u64,
        /// The limit ([`MAX_PLANE_END`]).
        max: u64,
    },
}

/// The largest `offset + stride × rows` of a plane that linux-dmabuf (32-bit offsets,
/// its "size overflow" check) and EGL (`EGLint` pitches) take.
pub const MAX_PLANE_END: u64 = i32::MAX as u64;

/// Runs `f` with `export` as a [`DmaBufImage`] (backing size, planes on one fd) and
/// which fd that is. Nothing is copied or mapped; the fd is only lent for the call.
pub fn with_export_image<R>(
    export: &ExportedFramebuffer,
    f: impl FnOnce(&DmaBufImage<BorrowedFd<'_>>, ImageSource) -> R,
) -> Result<R, DmaBufImageError> {
    let layout = export.layout();
    let buffer_id = export.buffer_id();
    export.with_dmabuf(|dmabuf| {
        let (fd, base, source) = match dmabuf {
            Some(dmabuf) => (dmabuf.as_fd(), 0, ImageSource::DmaBuf),
            None => match layout.pieces() {
                [piece] => (piece.memfd.as_fd(), piece.offset, ImageSource::Memfd),
                pieces => {
                    return Err(DmaBufImageError::Scattered {
                        buffer_id,
                        pieces: pieces.len(),
                    })
                }
            },
        };
        let mut planes = Vec::with_capacity(layout.planes().len());
        for (plane, p) in layout.planes().iter().enumerate() {
            let offset = base + p.offset;
            let end = offset + p.span();
            let (Ok(offset32), true) = (u32::try_from(offset), end <= MAX_PLANE_END) else {
                return Err(DmaBufImageError::PlaneTooLarge {
                    buffer_id,
                    plane,
                    offset,
                    stride: p.stride,
                    rows: p.rows,
                    end,
                    max: MAX_PLANE_END,
                });
            };
            planes.push(DmaBufPlane {
                fd,
                offset: offset32,
                stride: p.stride,
            });
        }
        let image = DmaBufImage {
            planes,
            format: layout.format(),
            modifier: layout.modifier(),
            width: layout.width(),
            height: layout.height(),
            visible: layout.visible(),
            y0_top: layout.y0_top(),
        };
        Ok(f(&image, source))
    })?
}
