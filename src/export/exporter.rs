//! Exports: validated framebuffers turned into pinned udmabufs, with ids and
//! generations so every holder can tell a live export from a revoked one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::desc::{FramebufferDesc, ValidatedFramebuffer};
use super::memory::GuestMemory;
use super::pin::{PinLease, PinManager, PinPurpose};
use super::ExportError;

pub use super::pin::Revocation;

/// The guest's name for a buffer (a resource id, a scanout index…).
pub type BufferId = u64;

/// Turns guest framebuffer descriptions into exports.
#[derive(Debug)]
pub struct Exporter {
    memory: Arc<GuestMemory>,
    pins: PinManager,
    generations: Mutex<HashMap<BufferId, u64>>,
}

/// A framebuffer exported for display: its layout and its pin. Cheap to share.
#[derive(Debug, Clone)]
pub struct ExportedFramebuffer {
    inner: Arc<ExportInner>,
}

#[derive(Debug)]
struct ExportInner {
    buffer_id: BufferId,
    generation: u64,
    layout: ValidatedFramebuffer,
    lease: PinLease,
}

impl Exporter {
    /// An exporter for `memory` whose pins `pins` manages.
    pub fn new(memory: Arc<GuestMemory>, pins: PinManager) -> Self {
        Self {
            memory,
            pins,
            generations: Mutex::default(),
        }
    }

    /// The guest memory map.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// The pin manager (for discards, budget and probing).
    pub fn pins(&self) -> &PinManager {
        &self.pins
    }

    /// Validates `desc` and exports it as buffer `buffer_id` with a new generation.
    ///
    /// A contiguous backing becomes one `UDMABUF_CREATE`, a scattered one a
    /// `UDMABUF_CREATE_LIST` (contiguous pieces merged first; over `list_limit` is an
    /// error naming the limit). Without `/dev/udmabuf` the export maps the memfds
    /// directly and pins nothing.
    pub fn export(
        &self,
        buffer_id: BufferId,
        desc: &FramebufferDesc,
        purpose: PinPurpose,
    ) -> Result<ExportedFramebuffer, ExportError> {
        let layout = desc.validate(&self.memory)?;
        let generation = {
            let mut generations = self
                .generations
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let generation = generations.entry(buffer_id).or_insert(0);
            *generation += 1;
            *generation
        };
        let lease = self
            .pins
            .pin(layout.pieces(), purpose, buffer_id, generation)?;
        Ok(ExportedFramebuffer {
            inner: Arc::new(ExportInner {
                buffer_id,
                generation,
                layout,
                lease,
            }),
        })
    }
}

impl ExportedFramebuffer {
    /// The guest's buffer id.
    pub fn buffer_id(&self) -> BufferId {
        self.inner.buffer_id
    }

    /// The generation: a new export of the same buffer id gets a higher one.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The validated layout (planes relative to the exported buffer).
    pub fn layout(&self) -> &ValidatedFramebuffer {
        &self.inner.layout
    }

    /// The pin behind the export.
    pub fn lease(&self) -> &PinLease {
        &self.inner.lease
    }

    /// Whether a discard revoked this export.
    pub fn is_revoked(&self) -> bool {
        self.inner.lease.is_revoked()
    }

    fn revoked(&self) -> ExportError {
        ExportError::Revoked {
            buffer_id: self.inner.buffer_id,
            generation: self.inner.generation,
        }
    }

    /// Runs `f` with the export's dma-buf (`None` when memfds are mapped directly).
    /// A revoked export's fd is unreachable: that is an error.
    pub fn with_dmabuf<R>(
        &self,
        f: impl FnOnce(Option<&crate::sys::dmabuf::DmaBuf>) -> R,
    ) -> Result<R, ExportError> {
        self.inner
            .lease
            .with_dmabuf(f)
            .ok_or_else(|| self.revoked())
    }

    /// Whether the export is a real dma-buf (false: memfds mapped directly).
    pub fn has_dmabuf(&self) -> Result<bool, ExportError> {
        self.with_dmabuf(|dmabuf| dmabuf.is_some())
    }

    /// The error for a revoked export, for layers above that keep their own state.
    pub fn revoked_error(&self) -> ExportError {
        self.revoked()
    }
}
