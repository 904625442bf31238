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

/// QEMU's listener messages handled one by one, without a connection (the fuzz target
/// `qemu_listener` drives it). Events are dropped as they come; gated updates complete.
#[cfg(feature = "qemu")]
pub struct ListenerHarness(crate::source::qemu::listener::Harness);

#[cfg(feature = "qemu")]
impl std::fmt::Debug for ListenerHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerHarness")
    }
}

#[cfg(feature = "qemu")]
impl ListenerHarness {
    /// A listener serving what `options` offers, with no surface yet.
    pub fn new(
        options: crate::source::qemu::ListenerOptions,
    ) -> Result<Self, crate::source::qemu::QemuError> {
        crate::source::qemu::listener::Harness::new(options).map(Self)
    }

    /// Handles one method call; the error QEMU would be answered with, if any.
    pub fn call(
        &mut self,
        message: &zbus::message::Message,
    ) -> Result<(), crate::source::qemu::QemuError> {
        self.0.handle(message)
    }
}
