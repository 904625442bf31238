//! Hooks for guestfb's own tests, behind the `testing` feature: they reach below the
//! API (raw ioctl flags, small module limits, where pages are) to check what the kernel
//! does. Not API: no stability promise, not for use outside guestfb's tests.

pub use crate::export::pin::kernel::{audit, movable_zone_spans, populate, ZoneAudit};
pub use crate::import::convert::reference::blit_reference;

use crate::export::PinManager;
use crate::sys::dmabuf::DmaBuf;
use crate::sys::udmabuf::Limits;
use crate::sys::SysError;

/// `DMA_BUF_IOCTL_SYNC` with raw `flags`, to see the kernel's answer to flags the typed
/// [`DmaBuf::sync`] cannot express.
pub fn sync_raw(dmabuf: &DmaBuf, flags: u64) -> Result<(), SysError> {
    dmabuf.sync_raw(flags)
}

/// Replaces the udmabuf limits `pins` checks before each create (small ones make the
/// limit errors reachable).
pub fn set_udmabuf_limits(pins: &mut PinManager, limits: Limits) {
    pins.set_udmabuf_limits(limits);
}
