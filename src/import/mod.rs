//! Turning exported framebuffers into something drawable: CPU mappings and conversion
//! (gl=off), EGL images (gl=on).

pub mod convert;
mod cpu;
pub mod dmabuf;
#[cfg(feature = "egl")]
pub mod egl;

pub use cpu::{CpuMapping, CpuPath};

use crate::export::ExportError;

/// Why [`CpuMapping::blit`] could not copy the picture: the export is gone, or the
/// conversion refused the arguments.
#[derive(Debug, thiserror::Error)]
pub enum CpuBlitError {
    /// The export could not be read (revoked, or the mapping failed).
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The pixels could not be converted.
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
}
