//! The wl_shm frame buffers: their size, format and stride checks, and the pool they live in.

use smithay_client_toolkit::shm::slot::{Buffer, SlotPool};
use smithay_client_toolkit::shm::Shm;
use wayland_client::protocol::wl_shm;

use crate::format::PixelFormat;
use crate::present::wayland::damage::StaleRegion;
use crate::present::wayland::PresentError;

/// Largest frame side the presenter accepts.
pub(super) const MAX_SIDE: u32 = 32768;

/// The wl_shm format that shows `format` unchanged, if there is one.
pub(super) fn shm_format_of(format: PixelFormat) -> Option<wl_shm::Format> {
    Some(match format {
        PixelFormat::Xrgb8888 => wl_shm::Format::Xrgb8888,
        PixelFormat::Argb8888 => wl_shm::Format::Argb8888,
        PixelFormat::Xbgr8888 => wl_shm::Format::Xbgr8888,
        PixelFormat::Abgr8888 => wl_shm::Format::Abgr8888,
        PixelFormat::Rgb565 => wl_shm::Format::Rgb565,
        PixelFormat::Bgr888 => wl_shm::Format::Bgr888,
        PixelFormat::Rgb888 => wl_shm::Format::Rgb888,
        PixelFormat::Nv12 => return None,
    })
}

/// Size and layout of the frame buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameSpec {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) stride: u32,
    pub(super) format: PixelFormat,
    pub(super) shm_format: wl_shm::Format,
}

impl FrameSpec {
    pub(super) fn new(width: u32, height: u32, format: PixelFormat) -> Result<Self, PresentError> {
        let bad = PresentError::BadFrameSize { width, height };
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(bad);
        }
        let shm_format = shm_format_of(format).ok_or(PresentError::UnsupportedFormat {
            format: format.name(),
            reason: "multi-planar formats are not shown through wl_shm",
        })?;
        let bytes = format.planes()[0].bytes_per_sample;
        // Rows start on 4-byte boundaries, as pixman and GL uploads like them.
        let stride = (width * bytes).next_multiple_of(4);
        if u64::from(stride) * u64::from(height) > i32::MAX as u64 {
            return Err(bad);
        }
        Ok(Self {
            width,
            height,
            stride,
            format,
            shm_format,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.stride as usize * self.height as usize
    }
}

/// One frame buffer and how far it lags behind the screen.
#[derive(Debug)]
pub(super) struct FrameBuffer {
    pub(super) buffer: Buffer,
    pub(super) stale: StaleRegion,
}

impl FrameBuffer {
    pub(super) fn is_free(&self) -> bool {
        !self.buffer.slot().has_active_buffers()
    }
}

/// A pool with room for `count` buffers of `spec`, so it never has to grow.
///
/// Growing a pool while one of its buffers stays attached crashes weston 14's pixman
/// renderer (it keeps drawing from the old mapping, SIGSEGV in libpixman), so the pool is
/// sized once per frame size.
pub(super) fn frame_pool(
    shm: &Shm,
    spec: FrameSpec,
    count: usize,
) -> Result<SlotPool, PresentError> {
    // SlotPool rounds each slot up to 64 bytes.
    let len = spec.len().next_multiple_of(64) * count;
    SlotPool::new(len, shm).map_err(|error| PresentError::Pool(error.to_string()))
}
