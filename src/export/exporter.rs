//! Exports: validated framebuffers turned into pinned udmabufs, with ids and
//! generations so every holder can tell a live export from a revoked one.
//!
//! A peer's dma-buf (a VMM's blob scanout: QEMU's virtio-gpu hands its udmabuf over
//! D-Bus) is an export too, validated the same way but pinned by the peer: every
//! display path takes one [`ExportedFramebuffer`] whoever made the buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::sys::dmabuf::{Access, DmaBuf, Mapping};
use crate::sys::volatile::VolatileSlice;

use super::desc::{FramebufferDesc, ValidatedFramebuffer};
use super::memory::GuestMemory;
use super::pin::{PinLease, PinManager, PinPurpose};
use super::ExportError;

/// The guest's name for a buffer (a resource id, a scanout index…).
pub type BufferId = u64;

/// Turns guest framebuffer descriptions into exports.
///
/// ```
/// use std::sync::Arc;
/// use guestfb::export::{Exporter, FramebufferDesc, GuestMemory, PinManager, PinPolicy, PinPurpose};
/// use guestfb::format::PixelFormat;
/// use guestfb::sys::memfd::{Memfd, Seals};
///
/// // 1 MiB of guest RAM at guest address 0, as a VMM backs it: a memfd sealed
/// // against shrinking.
/// let ram = Memfd::create("guest-ram")?;
/// ram.set_size(1 << 20)?;
/// ram.add_seals(Seals::SHRINK)?;
/// let mut memory = GuestMemory::new();
/// memory.add_region(0, 1 << 20, Arc::new(ram), 0)?;
/// let exporter = Exporter::new(Arc::new(memory), PinManager::new(PinPolicy::default()));
///
/// // The guest says: a 64×48 XRGB8888 framebuffer at guest address 0x1000.
/// let desc = FramebufferDesc::packed(PixelFormat::Xrgb8888, 64, 48, 256, 0x1000);
/// let export = exporter.export(1, &desc, PinPurpose::CpuRead)?;
/// assert_eq!((export.layout().width(), export.layout().height()), (64, 48));
///
/// // A description reaching past guest RAM is refused before any kernel call.
/// let past = FramebufferDesc::packed(PixelFormat::Xrgb8888, 64, 48, 256, 0xff000);
/// let error = exporter.export(2, &past, PinPurpose::CpuRead).unwrap_err();
/// assert_eq!(error.to_string(), "guest range 0xff000+0x3000 is outside guest memory");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    backing: Backing,
}

/// Who holds the pages of an export.
#[derive(Debug)]
enum Backing {
    /// guestfb's pin manager.
    Pinned(PinLease),
    /// A peer made the dma-buf and pinned (or did not pin) its pages.
    Peer {
        dmabuf: DmaBuf,
        pages: PeerPages,
        /// The CPU mapping, made on the first read.
        mapping: Mutex<Option<Mapping>>,
    },
}

/// What is known of the pages under a peer's dma-buf: its maker says, since the
/// dma-buf itself does not (a udmabuf's mmap is `VM_PFNMAP`, which
/// `/proc/self/pagemap` does not walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPages {
    /// The maker pinned them long-term (a udmabuf on Linux ≥ 6.11 does), as direct
    /// scanout needs.
    pub longterm: bool,
    /// Whether hugetlb (or other large) folios back a udmabuf: `Some(false)` for
    /// 4 KiB pages or a dma-buf that is no udmabuf, `None` when not known.
    pub large_folios: Option<bool>,
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
    /// directly and pins nothing, as does a [`PinPurpose::CpuRead`] export over
    /// udmabuf's `size_limit_mb` or `list_limit` (a scanout there is that error).
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
                backing: Backing::Pinned(lease),
            }),
        })
    }
}

impl ExportedFramebuffer {
    /// A peer's dma-buf (`dmabuf`, e.g. QEMU's udmabuf of a virtio-gpu blob) as buffer
    /// `buffer_id`, after `desc` was validated against its size
    /// ([`FramebufferDesc::validate_in_dmabuf`]), with what its maker says of the
    /// pages under it.
    ///
    /// Nothing is imported or mapped here; the generation is 1.
    pub fn from_peer_dmabuf(
        buffer_id: BufferId,
        dmabuf: DmaBuf,
        desc: &FramebufferDesc,
        pages: PeerPages,
    ) -> Result<Self, ExportError> {
        let layout = desc.validate_in_dmabuf(dmabuf.size())?;
        Ok(Self {
            inner: Arc::new(ExportInner {
                buffer_id,
                generation: 1,
                layout,
                backing: Backing::Peer {
                    dmabuf,
                    pages,
                    mapping: Mutex::new(None),
                },
            }),
        })
    }

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

    /// Whether the pages are pinned long-term, as scanout needs (for a peer's dma-buf:
    /// what its maker said of it).
    pub fn is_longterm(&self) -> bool {
        match &self.inner.backing {
            Backing::Pinned(lease) => lease.is_longterm(),
            Backing::Peer { pages, .. } => pages.longterm,
        }
    }

    /// Whether the udmabuf under the export holds large folios (hugetlb), which the
    /// 6.12 udmabuf vmap quirk reads wrong: guestfb's own exports know their memfds;
    /// for a peer's dma-buf, what its maker said (`None`: not known).
    pub fn large_folios(&self) -> Option<bool> {
        match &self.inner.backing {
            Backing::Pinned(_) => Some(
                self.inner
                    .layout
                    .pieces()
                    .iter()
                    .any(|piece| piece.memfd.is_hugetlb()),
            ),
            Backing::Peer { pages, .. } => pages.large_folios,
        }
    }

    /// Whether the buffer is a peer's dma-buf rather than guestfb's own export.
    pub fn is_peer(&self) -> bool {
        matches!(self.inner.backing, Backing::Peer { .. })
    }

    /// Whether a discard revoked this export (never, for a peer's dma-buf).
    pub fn is_revoked(&self) -> bool {
        match &self.inner.backing {
            Backing::Pinned(lease) => lease.is_revoked(),
            Backing::Peer { .. } => false,
        }
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
        match &self.inner.backing {
            Backing::Pinned(lease) => lease.with_dmabuf(f).ok_or_else(|| self.revoked()),
            Backing::Peer { dmabuf, .. } => Ok(f(Some(dmabuf))),
        }
    }

    /// Runs `f` over the exported bytes read through the CPU: a dma-buf's mmap inside a
    /// `DMA_BUF_IOCTL_SYNC` read bracket, or the memfds mapped directly when there is
    /// no udmabuf. A revoked export cannot be read.
    pub(crate) fn with_cpu_bytes<R>(
        &self,
        f: impl FnOnce(VolatileSlice<'_>) -> R,
    ) -> Result<R, ExportError> {
        match &self.inner.backing {
            Backing::Pinned(lease) => match lease.with_cpu_bytes(f) {
                None => Err(self.revoked()),
                Some(result) => Ok(result?),
            },
            Backing::Peer {
                dmabuf, mapping, ..
            } => {
                let mut mapping = mapping.lock().unwrap_or_else(|p| p.into_inner());
                if mapping.is_none() {
                    *mapping = Some(dmabuf.mmap(Access::Read)?);
                }
                let mapping = mapping.as_ref().expect("mapped above");
                let sync = dmabuf.sync(Access::Read)?;
                let result = f(mapping.bytes());
                sync.end()?;
                Ok(result)
            }
        }
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
