//! What the listener hands out: frames (owned pixel data, QEMU's surface read or mapped),
//! dma-buf scanouts, cursors, and the token that answers QEMU once a frame is shown.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::PixelFormat;
use crate::source::qemu::{pixman, QemuError};
use crate::sys::dmabuf::Mapping;
use crate::sys::memfd::Memfd;
use crate::sys::volatile::VolatileSlice;
use crate::sys::SysError;

/// Where a frame's pixels live.
#[derive(Debug)]
pub(super) enum Storage {
    /// Copied out of `Scanout`/`Update` messages into a buffer guestfb owns.
    Owned(Vec<u8>),
    /// QEMU's surface memfd when it is not sealed against shrinking: QEMU (or anyone
    /// holding it) could truncate it, and a mapping would then raise SIGBUS on the next
    /// read. It is read with `pread` instead, whole at `ScanoutMap` and the damaged rows
    /// at each `UpdateMap`, into a buffer guestfb owns; a memfd that shrank reads short,
    /// an error, not a signal.
    Read {
        memfd: OwnedFd,
        /// The surface's offset in the memfd.
        offset: u64,
        pixels: Vec<u8>,
    },
    /// QEMU's surface memfd sealed against shrinking (`F_SEAL_SHRINK`), mapped
    /// read-only once at `ScanoutMap`.
    Mapped {
        mapping: Mapping,
        /// The memfd and the surface's offset in it, kept when it is sealed the way
        /// udmabuf needs (`F_SEAL_SHRINK`, no write seal): then it can be exported.
        sealed: Option<(Arc<Memfd>, u64)>,
    },
}

/// A CPU-visible picture from QEMU: width × height pixels of `format`, rows `stride`
/// bytes apart, top row first.
#[derive(Debug)]
pub struct Frame {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) stride: u32,
    pub(super) format: PixelFormat,
    pub(super) pixman: u32,
    pub(super) storage: Storage,
}

impl Frame {
    /// Reads bytes `start..start + len` of the surface again from an unsealed memfd
    /// (`Storage::Read`); nothing to do for other storage.
    pub(super) fn reread(&mut self, start: u64, len: u64) -> Result<(), QemuError> {
        let Storage::Read {
            memfd,
            offset,
            pixels,
        } = &mut self.storage
        else {
            return Ok(());
        };
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(start + len).ok())
            .filter(|&(_, end)| end <= pixels.len());
        let Some((from, to)) = range else {
            return Err(QemuError::Sys(SysError::OutOfBounds {
                offset: start,
                len,
                size: pixels.len() as u64,
            }));
        };
        read_exact_at(memfd.as_fd(), &mut pixels[from..to], *offset + start)
    }

    pub(super) fn new(
        width: u32,
        height: u32,
        stride: u32,
        format: PixelFormat,
        pixman: u32,
        storage: Storage,
    ) -> Self {
        Self {
            width,
            height,
            stride,
            format,
            pixman,
            storage,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The pixman code QEMU named the format with.
    pub fn pixman_format(&self) -> u32 {
        self.pixman
    }

    /// True when the pixels come from QEMU's surface memory (the `Unix.Map` path):
    /// mapped where the memfd is sealed against shrinking (QEMU may change the pixels
    /// at any time, which is why [`Frame::bytes`] is a view), else read at each update
    /// with `pread` (a memfd QEMU could truncate is never mapped).
    pub fn is_shared_memory(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. } | Storage::Read { .. })
    }

    /// QEMU's surface memfd and the frame's offset in it, when the memfd is sealed
    /// against shrinking and not write-sealed: host memory guestfb's `Exporter` can
    /// turn into a udmabuf (zero copy on the display's side). `None` for pixel-data
    /// frames and for unsealed memfds (QEMU 10's own surfaces are unsealed), which
    /// only the copy path can show.
    pub fn sealed_memfd(&self) -> Option<(&Arc<Memfd>, u64)> {
        match &self.storage {
            Storage::Mapped {
                sealed: Some((memfd, offset)),
                ..
            } => Some((memfd, *offset)),
            _ => None,
        }
    }

    /// All `stride × height` bytes: a view, because a mapped frame is QEMU's surface
    /// memory, which QEMU (and the guest's device model) may write at any time.
    pub fn bytes(&self) -> VolatileSlice<'_> {
        match &self.storage {
            Storage::Owned(bytes) | Storage::Read { pixels: bytes, .. } => {
                VolatileSlice::from(&bytes[..])
            }
            Storage::Mapped { mapping, .. } => mapping.bytes(),
        }
    }

    /// The visible bytes of row `y` (`width × bytes per pixel`), `None` past the end.
    pub fn row(&self, y: u32) -> Option<VolatileSlice<'_>> {
        if y >= self.height {
            return None;
        }
        let start = y as usize * self.stride as usize;
        let len = self.width as usize * self.format.bytes_per_pixel() as usize;
        self.bytes().subslice(start, len).ok()
    }

    /// The picture as tightly packed 8-bit R G B triples (for checks and PNG files).
    pub fn to_rgb(&self) -> Vec<u8> {
        let bpp = self.format.bytes_per_pixel() as usize;
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        let mut row_bytes = Vec::new();
        for y in 0..self.height {
            if let Some(row) = self.row(y) {
                row_bytes.resize(row.len(), 0);
                if row.copy_to(&mut row_bytes).is_ok() {
                    for px in row_bytes.chunks_exact(bpp) {
                        out.extend_from_slice(&pixman::pixel_rgb(self.format, px));
                    }
                }
            }
        }
        out
    }
}

/// A [`Frame`] shared between the listener thread (which writes updates into owned
/// frames) and the viewer (which blits from it). Lock it for the length of a blit.
#[derive(Debug, Clone)]
pub struct SharedFrame(Arc<Mutex<Frame>>);

impl SharedFrame {
    pub(super) fn new(frame: Frame) -> Self {
        Self(Arc::new(Mutex::new(frame)))
    }

    /// Locks the frame. A poisoned lock (a panicking reader) is taken over: the bytes
    /// are plain pixels, valid in any state.
    pub fn lock(&self) -> MutexGuard<'_, Frame> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether two handles share one frame (a new scanout makes a new frame).
    pub fn same_as(&self, other: &SharedFrame) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A cursor image: `width × height` pixels of 32-bit ARGB in native byte order, i.e.
/// [`PixelFormat::Argb8888`] (bytes B G R A), rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Hot spot, from the left.
    pub hot_x: i32,
    /// Hot spot, from the top.
    pub hot_y: i32,
    /// `width × height × 4` bytes.
    pub argb: Vec<u8>,
}

/// The "frame presented" signal of one update.
///
/// The listener answers QEMU's update call only when the token is completed, so QEMU
/// (for `UpdateDMABUF`, the guest) waits until the viewer has drawn the frame. Call
/// [`FrameToken::complete`] after presenting (after the compositor has the buffer, or
/// after the GL fence). Dropping a token completes it too: a viewer that discards an
/// event can never deadlock QEMU; it only gives up the back-pressure for that frame.
#[derive(Debug)]
pub struct FrameToken {
    pub(super) done: Option<Sender<()>>,
}

impl FrameToken {
    pub(super) fn new() -> (Self, Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Self { done: Some(tx) }, rx)
    }

    /// The frame has been presented: let QEMU go on.
    pub fn complete(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Drop for FrameToken {
    fn drop(&mut self) {
        // Dropping the sender wakes the listener as completing does.
        self.done.take();
    }
}

/// Fills `buf` from `fd` at `offset` with `pread`: a file that ends early (a memfd
/// truncated under us) is [`QemuError::MemfdShrank`], never a signal.
pub(super) fn read_exact_at(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), QemuError> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(QemuError::MemfdShrank {
                    offset,
                    len: buf.len() as u64,
                    size: rustix::fs::fstat(fd).map_or(0, |st| st.st_size as u64),
                })
            }
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                return Err(QemuError::Sys(SysError::Syscall {
                    op: "pread (QEMU surface memfd)",
                    errno,
                }))
            }
        }
    }
    Ok(())
}
