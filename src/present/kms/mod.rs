//! KMS direct scanout (feature `kms`): an exported guest framebuffer is PRIME-imported
//! into a DRM device, wrapped in an ADDFB2 framebuffer and put on a primary plane with
//! atomic commits; new frames are page flips whose completion event is awaited.
//!
//! ```text
//! ExportedFramebuffer ── long-term pin? ── plane takes format+modifier? ─┬─ direct: PRIME → ADDFB2 → plane
//!                                                                       └─ copy: FrameFill → gbm BO (XRGB8888) → plane
//! ```
//!
//! The copy path is taken when the plane cannot take the guest's format, when the
//! picture is stored bottom-up and the plane cannot reflect, when there is no dma-buf,
//! and for hugetlb-backed exports on kernels with the udmabuf vmap quirk
//! ([`Quirk::HugetlbVmapHeadPage`], or [`probe_hugetlb_vmap_quirk`] found it): the
//! scanout engine would read the wrong pages there.
//!
//! The copy path's fill is [`GlFill`] (feature `egl`) where a headless EGL display
//! imports both the export and the scanout buffer: the export's EGLImage texture is
//! drawn into an FBO on the scanout buffer's EGLImage, no CPU copy. Formats EGL does not
//! import go through [`CpuFill`]; the choice and every fallback are in
//! [`KmsPresenter::log`], and [`PresentStatus::fill`] names what drew each frame.
//!
//! Revocation: the pin manager's revoke listeners run before a discard punches the hole;
//! a listener calls [`KmsPresenter::release`], which moves the plane off the buffer with
//! a blocking commit and closes the framebuffer and GEM handle before it returns.

mod card;
mod copy;
mod error;
#[cfg(feature = "egl")]
mod glfill;
mod pipe;
mod placement;
mod presenter;
mod probe;
mod writeback;

pub use card::Card;
pub use copy::{CopyReason, CpuFill, FillTarget, FrameFill};
pub use error::KmsError;
#[cfg(feature = "egl")]
pub use glfill::{GlFill, GlFillError};
pub use placement::Placement;
pub use presenter::{KmsPresenter, PresentStatus, Released, ScanoutPath};
pub use probe::probe_hugetlb_vmap_quirk;
pub use writeback::{Writeback, WritebackTarget};

#[cfg(doc)]
use crate::export::Quirk;
