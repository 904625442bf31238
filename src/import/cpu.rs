//! Reading exported framebuffers with the CPU (the gl=off path).

use crate::export::{ExportError, ExportedFramebuffer, ValidatedFramebuffer};

/// How a [`CpuMapping`] reaches the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuPath {
    /// mmap of the udmabuf (VM_PFNMAP on Linux ≥ 6.11), bracketed by DMA_BUF_IOCTL_SYNC.
    UdmabufMmap,
    /// No /dev/udmabuf: the guest's memfd pieces are mapped directly, back to back.
    MemfdDirect,
}

/// CPU read access to an exported framebuffer.
///
/// The mapping belongs to the export's pin: when a discard revokes the export, the
/// mapping goes with it, and [`CpuMapping::read`] returns [`ExportError::Revoked`]
/// instead of stale or freed memory.
#[derive(Debug, Clone)]
pub struct CpuMapping {
    export: ExportedFramebuffer,
}

impl CpuMapping {
    /// CPU access to `export`; the mapping is made on the first read.
    pub fn new(export: ExportedFramebuffer) -> Self {
        Self { export }
    }

    /// The export read.
    pub fn export(&self) -> &ExportedFramebuffer {
        &self.export
    }

    /// Which path the reads take.
    pub fn path(&self) -> Result<CpuPath, ExportError> {
        Ok(if self.export.has_dmabuf()? {
            CpuPath::UdmabufMmap
        } else {
            CpuPath::MemfdDirect
        })
    }

    /// Runs `f` over the exported bytes (plane offsets of the layout index into them).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&[u8], &ValidatedFramebuffer) -> R,
    ) -> Result<R, ExportError> {
        let layout = self.export.layout();
        match self.export.lease().with_cpu_bytes(|bytes| f(bytes, layout)) {
            None => Err(self.export.revoked_error()),
            Some(result) => Ok(result?),
        }
    }
}
