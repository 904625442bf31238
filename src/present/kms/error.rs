//! Errors of the KMS presenter.

use std::io;
use std::path::PathBuf;

use crate::export::{BufferId, ExportError};
use crate::format::PixelFormat;
use crate::import::CpuBlitError;
use crate::sys::SysError;

/// Errors of the KMS presenter. Each names the object and the numbers involved.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The device node could not be opened.
    #[error("cannot open DRM device {path}: {source}")]
    Open {
        /// The node.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No card under /dev/dri has KMS resources and a connected connector.
    #[error("no DRM card with KMS resources and a connected connector among {tried:?}")]
    NoDevice {
        /// The nodes tried.
        tried: Vec<PathBuf>,
    },
    /// A client capability the presenter needs was refused.
    #[error("DRM device {path}: client capability {cap} refused: {source}")]
    ClientCap {
        /// The node.
        path: PathBuf,
        /// The capability.
        cap: &'static str,
        /// Why.
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{what} failed: {source}")]
    Ioctl {
        /// The operation, with the objects it named.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// No connected (non-writeback) connector.
    #[error("no connected connector on {path} (connectors: {connectors:?})")]
    NoConnector {
        /// The node.
        path: PathBuf,
        /// Each connector and its state.
        connectors: Vec<String>,
    },
    /// The chosen connector is gone or disconnected (hot-unplug).
    #[error("connector {connector} is disconnected or gone; {what} failed: {source}")]
    Disconnected {
        /// The connector's name, e.g. `Virtual-1`.
        connector: String,
        /// The operation.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The connector has no modes.
    #[error("connector {connector} reports no modes")]
    NoMode {
        /// The connector.
        connector: String,
    },
    /// No CRTC can drive the connector.
    #[error("no CRTC can drive connector {connector}")]
    NoCrtc {
        /// The connector.
        connector: String,
    },
    /// No primary plane on the CRTC takes a format the presenter can give it.
    #[error(
        "no primary plane for CRTC {crtc} takes {format} (modifier {modifier:#x}) or XRGB8888"
    )]
    NoPlane {
        /// The CRTC id.
        crtc: u32,
        /// The format wanted.
        format: PixelFormat,
        /// The modifier wanted.
        modifier: u64,
    },
    /// A KMS object lacks a property atomic modesetting needs.
    #[error("{object} {id} has no property {name}")]
    NoProperty {
        /// Kind of object.
        object: &'static str,
        /// Its id.
        id: u32,
        /// The property.
        name: &'static str,
    },
    /// Another process took DRM master, or this one never had it.
    #[error("DRM master lost (or never held) on {path}: {what} failed: {source}")]
    MasterLost {
        /// The node.
        path: PathBuf,
        /// The operation.
        what: String,
        /// The kernel's answer (EACCES or EPERM).
        source: io::Error,
    },
    /// The export is not pinned long-term, and the policy does not opt in.
    #[error(
        "buffer {buffer_id} generation {generation}: pages are not pinned long-term on kernel \
         {kernel}; direct scanout refused (PinPolicy::allow_without_longterm opts in)"
    )]
    NotLongterm {
        /// The buffer.
        buffer_id: BufferId,
        /// Its generation.
        generation: u64,
        /// Kernel release.
        kernel: String,
    },
    /// An export-layer error (a revoked export, for one).
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The CPU fill could not read or convert the frame.
    #[error(transparent)]
    Import(#[from] CpuBlitError),
    /// A kernel-interface error from guestfb's own wrappers.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A page flip's event did not come in time.
    #[error("no page-flip event for CRTC {crtc} within {waited_ms} ms")]
    FlipTimeout {
        /// The CRTC id.
        crtc: u32,
        /// How long the presenter waited.
        waited_ms: u128,
    },
    /// gbm could not open the device or allocate a scanout buffer.
    #[error("gbm: {what}: {source}")]
    Gbm {
        /// What failed, with sizes.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// No writeback connector on the device.
    #[error("no writeback connector on {path}")]
    NoWriteback {
        /// The node.
        path: PathBuf,
    },
    /// The writeback out-fence did not signal in time.
    #[error("writeback to framebuffer {fb} did not complete within {waited_ms} ms")]
    WritebackTimeout {
        /// The target framebuffer.
        fb: u32,
        /// How long it waited.
        waited_ms: u128,
    },
    /// The quirk probe could not decide (even the first page of a folio was wrong).
    #[error(
        "hugetlb vmap probe inconclusive: {wrong_first_page} wrong pixels in the first 4 KiB \
         of a folio, {wrong_rest} after it (of {total})"
    )]
    ProbeInconclusive {
        /// Wrong pixels inside the first 4 KiB of some folio.
        wrong_first_page: usize,
        /// Wrong pixels past the first 4 KiB.
        wrong_rest: usize,
        /// Pixels compared.
        total: usize,
    },
}

pub(super) fn ioctl(what: impl Into<String>) -> impl FnOnce(io::Error) -> KmsError {
    let what = what.into();
    move |source| KmsError::Ioctl { what, source }
}
