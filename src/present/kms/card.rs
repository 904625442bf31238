//! The DRM card and the RAII handles on it: GEM handles, framebuffers, property blobs,
//! dumb buffers; PRIME import and ADDFB2.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drm::buffer::{self, DrmFourcc, DrmModifier, PlanarBuffer};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::{
    atomic::AtomicModeReq, framebuffer, AtomicCommitFlags, Device as ControlDevice, FbCmd2Flags,
};
use drm::ClientCapability;

use crate::sys::dmabuf::{Access, Mapping};

use super::error::{ioctl, KmsError};
use super::pipe::find_connector;

/// An open DRM device node. Cheap to clone: clones share the open file (and so the GEM
/// handle namespace and DRM master status).
#[derive(Debug, Clone)]
pub struct Card {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) path: Arc<PathBuf>,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl drm::Device for Card {}
impl ControlDevice for Card {}

impl Card {
    /// Opens `path` read-write.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KmsError> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| KmsError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            fd: Arc::new(OwnedFd::from(file)),
            path: Arc::new(path),
        })
    }

    /// Opens the first `/dev/dri/card*` with KMS resources and a connected connector
    /// (writeback connectors do not count).
    pub fn open_first() -> Result<Self, KmsError> {
        let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| name.starts_with("card"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        for path in &nodes {
            let Ok(card) = Card::open(path) else { continue };
            if card.enable_atomic().is_err() {
                continue;
            }
            if find_connector(&card, None).is_ok() {
                return Ok(card);
            }
        }
        Err(KmsError::NoDevice { tried: nodes })
    }

    /// The node this card was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Enables the universal-planes and atomic client capabilities.
    pub fn enable_atomic(&self) -> Result<(), KmsError> {
        for (cap, name) in [
            (ClientCapability::UniversalPlanes, "UNIVERSAL_PLANES"),
            (ClientCapability::Atomic, "ATOMIC"),
        ] {
            drm::Device::set_client_capability(self, cap, true).map_err(|source| {
                KmsError::ClientCap {
                    path: self.path().to_path_buf(),
                    cap: name,
                    source,
                }
            })?;
        }
        Ok(())
    }

    pub(super) fn commit(
        &self,
        flags: AtomicCommitFlags,
        req: AtomicModeReq,
        what: &str,
    ) -> Result<(), KmsError> {
        self.atomic_commit(flags, req)
            .map_err(|source| self.classify(what, source))
    }

    /// Sorts a failed ioctl into master loss or a plain error.
    pub(super) fn classify(&self, what: &str, source: io::Error) -> KmsError {
        match source.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => KmsError::MasterLost {
                path: self.path().to_path_buf(),
                what: what.to_string(),
                source,
            },
            _ => KmsError::Ioctl {
                what: what.to_string(),
                source,
            },
        }
    }
}

/// A KMS object guestfb created on a card, given back when its [`Held`] drops.
pub(super) trait Release: Copy + std::fmt::Debug {
    /// Gives the object back; errors are ignored (the card may be gone).
    fn release(self, card: &Card);
}

/// A card object held until drop.
#[derive(Debug)]
pub(super) struct Held<H: Release> {
    pub(super) card: Card,
    pub(super) handle: H,
}

impl<H: Release> Drop for Held<H> {
    fn drop(&mut self) {
        self.handle.release(&self.card);
    }
}

/// A GEM handle, closed on drop.
pub(super) type Gem = Held<buffer::Handle>;

impl Release for buffer::Handle {
    fn release(self, card: &Card) {
        let _ = card.close_buffer(self);
    }
}

/// A KMS framebuffer, removed on drop (RMFB also takes it off any plane still showing it).
pub(super) type Fb = Held<framebuffer::Handle>;

impl Release for framebuffer::Handle {
    fn release(self, card: &Card) {
        let _ = card.destroy_framebuffer(self);
    }
}

/// A property blob, destroyed on drop.
pub(super) type Blob = Held<BlobId>;

/// A property blob's id.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlobId(pub(super) u64);

impl Release for BlobId {
    fn release(self, card: &Card) {
        let _ = card.destroy_property_blob(self.0);
    }
}

/// A dumb buffer, destroyed on drop.
pub(super) struct Dumb {
    pub(super) card: Card,
    pub(super) buffer: Option<DumbBuffer>,
}

impl std::fmt::Debug for Dumb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumb")
            .field("size", &self.buffer.as_ref().map(buffer::Buffer::size))
            .finish()
    }
}

impl Dumb {
    pub(super) fn new(card: &Card, width: u32, height: u32) -> Result<Self, KmsError> {
        let buffer = card
            .create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)
            .map_err(ioctl(format!(
                "DRM_IOCTL_MODE_CREATE_DUMB {width}x{height}"
            )))?;
        Ok(Self {
            card: card.clone(),
            buffer: Some(buffer),
        })
    }

    pub(super) fn buffer(&self) -> &DumbBuffer {
        self.buffer.as_ref().expect("present until drop")
    }

    pub(super) fn pitch(&self) -> u32 {
        buffer::Buffer::pitch(self.buffer())
    }

    /// Copies the bytes out through a volatile view: for a writeback target, which the
    /// display engine writes (drm's own dumb mapping would hold a `&mut [u8]` over it).
    pub(super) fn read_back(&self) -> Result<Vec<u8>, KmsError> {
        let handle: u32 = buffer::Buffer::handle(self.buffer()).into();
        let map = drm_ffi::mode::dumbbuffer::map(self.card.as_fd(), handle, 0, 0)
            .map_err(ioctl("DRM_IOCTL_MODE_MAP_DUMB"))?;
        let (_, height) = buffer::Buffer::size(self.buffer());
        let len = self.pitch() as usize * height as usize;
        let mapping = Mapping::new(self.card.as_fd(), map.offset, len, Access::Read)?;
        Ok(mapping.bytes().to_vec())
    }

    /// Runs `f` over the mapped bytes and the pitch: for buffers only the CPU writes
    /// (the display engine reads them), so a slice over them is sound.
    pub(super) fn with_bytes<R>(
        &mut self,
        f: impl FnOnce(&mut [u8], u32) -> R,
    ) -> Result<R, KmsError> {
        let pitch = self.pitch();
        let card = self.card.clone();
        let buffer = self.buffer.as_mut().expect("present until drop");
        let mut map = card
            .map_dumb_buffer(buffer)
            .map_err(ioctl("DRM_IOCTL_MODE_MAP_DUMB"))?;
        Ok(f(map.as_mut(), pitch))
    }

    pub(super) fn add_fb(&self) -> Result<Fb, KmsError> {
        let (width, height) = buffer::Buffer::size(self.buffer());
        add_fb2(
            &self.card,
            &Planar {
                size: (width, height),
                format: DrmFourcc::Xrgb8888,
                modifier: None,
                handles: [
                    Some(buffer::Buffer::handle(self.buffer())),
                    None,
                    None,
                    None,
                ],
                pitches: [self.pitch(), 0, 0, 0],
                offsets: [0; 4],
            },
        )
    }
}

impl Drop for Dumb {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let _ = self.card.destroy_dumb_buffer(buffer);
        }
    }
}

/// The ADDFB2 description of a buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Planar {
    pub(super) size: (u32, u32),
    pub(super) format: DrmFourcc,
    pub(super) modifier: Option<DrmModifier>,
    pub(super) handles: [Option<buffer::Handle>; 4],
    pub(super) pitches: [u32; 4],
    pub(super) offsets: [u32; 4],
}

impl PlanarBuffer for Planar {
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn format(&self) -> DrmFourcc {
        self.format
    }
    fn modifier(&self) -> Option<DrmModifier> {
        self.modifier
    }
    fn pitches(&self) -> [u32; 4] {
        self.pitches
    }
    fn handles(&self) -> [Option<buffer::Handle>; 4] {
        self.handles
    }
    fn offsets(&self) -> [u32; 4] {
        self.offsets
    }
}

/// PRIME-imports a linear XRGB8888 dma-buf of `size` pixels and `stride` bytes per row
/// and makes it a framebuffer (`what` names the user in an error).
pub(super) fn import_xrgb8888(
    card: &Card,
    dmabuf: &crate::sys::dmabuf::DmaBuf,
    size: (u32, u32),
    stride: u32,
    what: &str,
) -> Result<(Fb, Gem), KmsError> {
    let handle = card
        .prime_fd_to_buffer(dmabuf.as_fd())
        .map_err(ioctl(format!("DRM_IOCTL_PRIME_FD_TO_HANDLE ({what})")))?;
    let gem = Gem {
        card: card.clone(),
        handle,
    };
    let fb = add_fb2(
        card,
        &Planar {
            size,
            format: DrmFourcc::Xrgb8888,
            modifier: None,
            handles: [Some(gem.handle), None, None, None],
            pitches: [stride, 0, 0, 0],
            offsets: [0; 4],
        },
    )?;
    Ok((fb, gem))
}

pub(super) fn add_fb2(card: &Card, planar: &Planar) -> Result<Fb, KmsError> {
    let flags = if planar.modifier.is_some() {
        FbCmd2Flags::MODIFIERS
    } else {
        FbCmd2Flags::empty()
    };
    let handle = card
        .add_planar_framebuffer(planar, flags)
        .map_err(|source| {
            card.classify(
                &format!(
                    "DRM_IOCTL_MODE_ADDFB2 {}x{} {:?} pitches {:?} offsets {:?} modifier {:?}",
                    planar.size.0,
                    planar.size.1,
                    planar.format,
                    planar.pitches,
                    planar.offsets,
                    planar.modifier
                ),
                source,
            )
        })?;
    Ok(Fb {
        card: card.clone(),
        handle,
    })
}
