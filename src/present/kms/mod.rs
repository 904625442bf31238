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

#[cfg(feature = "egl")]
mod glfill;
mod probe;
mod writeback;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drm::buffer::{self, DrmFourcc, DrmModifier, PlanarBuffer};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, AtomicCommitFlags,
    Device as ControlDevice, FbCmd2Flags, Mode, ResourceHandle,
};
use drm::ClientCapability;

use crate::export::pin::Quirk;
use crate::export::{BufferId, ExportError, ExportedFramebuffer, PinManager};
use crate::format::{Modifier, PixelFormat};
use crate::import::convert::{Dest, DestFormat};
use crate::import::ImportError;
use crate::rect::Rect;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::SysError;

#[cfg(feature = "egl")]
pub use glfill::{GlFill, GlFillError};
pub use probe::probe_hugetlb_vmap_quirk;
pub use writeback::{Writeback, WritebackTarget};

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
    Import(#[from] ImportError),
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

fn ioctl(what: impl Into<String>) -> impl FnOnce(io::Error) -> KmsError {
    let what = what.into();
    move |source| KmsError::Ioctl { what, source }
}

// ---------------------------------------------------------------------------------------
// The card and RAII handles.

/// An open DRM device node. Cheap to clone: clones share the open file (and so the GEM
/// handle namespace and DRM master status).
#[derive(Debug, Clone)]
pub struct Card {
    fd: Arc<OwnedFd>,
    path: Arc<PathBuf>,
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

    fn commit(
        &self,
        flags: AtomicCommitFlags,
        req: AtomicModeReq,
        what: &str,
    ) -> Result<(), KmsError> {
        self.atomic_commit(flags, req)
            .map_err(|source| self.classify(what, source))
    }

    /// Sorts a failed ioctl into master loss or a plain error.
    fn classify(&self, what: &str, source: io::Error) -> KmsError {
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

/// A GEM handle, closed on drop.
#[derive(Debug)]
struct Gem {
    card: Card,
    handle: buffer::Handle,
}

impl Drop for Gem {
    fn drop(&mut self) {
        let _ = self.card.close_buffer(self.handle);
    }
}

/// A KMS framebuffer, removed on drop (RMFB also takes it off any plane still showing it).
#[derive(Debug)]
struct Fb {
    card: Card,
    handle: framebuffer::Handle,
}

impl Drop for Fb {
    fn drop(&mut self) {
        let _ = self.card.destroy_framebuffer(self.handle);
    }
}

/// A property blob, destroyed on drop.
#[derive(Debug)]
struct Blob {
    card: Card,
    id: u64,
}

impl Drop for Blob {
    fn drop(&mut self) {
        let _ = self.card.destroy_property_blob(self.id);
    }
}

/// A dumb buffer, destroyed on drop.
struct Dumb {
    card: Card,
    buffer: Option<DumbBuffer>,
}

impl std::fmt::Debug for Dumb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumb")
            .field("size", &self.buffer.as_ref().map(buffer::Buffer::size))
            .finish()
    }
}

impl Dumb {
    fn new(card: &Card, width: u32, height: u32) -> Result<Self, KmsError> {
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

    fn buffer(&self) -> &DumbBuffer {
        self.buffer.as_ref().expect("present until drop")
    }

    fn pitch(&self) -> u32 {
        buffer::Buffer::pitch(self.buffer())
    }

    /// Copies the bytes out through a volatile view: for a writeback target, which the
    /// display engine writes (drm's own dumb mapping would hold a `&mut [u8]` over it).
    fn read_back(&self) -> Result<Vec<u8>, KmsError> {
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
    fn with_bytes<R>(&mut self, f: impl FnOnce(&mut [u8], u32) -> R) -> Result<R, KmsError> {
        let pitch = self.pitch();
        let card = self.card.clone();
        let buffer = self.buffer.as_mut().expect("present until drop");
        let mut map = card
            .map_dumb_buffer(buffer)
            .map_err(ioctl("DRM_IOCTL_MODE_MAP_DUMB"))?;
        Ok(f(map.as_mut(), pitch))
    }

    fn add_fb(&self) -> Result<Fb, KmsError> {
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
struct Planar {
    size: (u32, u32),
    format: DrmFourcc,
    modifier: Option<DrmModifier>,
    handles: [Option<buffer::Handle>; 4],
    pitches: [u32; 4],
    offsets: [u32; 4],
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
fn import_xrgb8888(
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

fn add_fb2(card: &Card, planar: &Planar) -> Result<Fb, KmsError> {
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

// ---------------------------------------------------------------------------------------
// Properties, pipes and formats.

/// The properties of one KMS object, by name: (handle, current value).
#[derive(Debug, Clone)]
struct Props {
    object: &'static str,
    id: u32,
    by_name: HashMap<String, (property::Handle, u64)>,
}

impl Props {
    fn of<H: ResourceHandle>(
        card: &Card,
        handle: H,
        object: &'static str,
    ) -> Result<Self, KmsError> {
        let raw: drm::control::RawResourceHandle = handle.into();
        let id = u32::from(raw);
        let set = card.get_properties(handle).map_err(ioctl(format!(
            "DRM_IOCTL_MODE_OBJ_GETPROPERTIES on {object} {id}"
        )))?;
        let (handles, values) = set.as_props_and_values();
        let mut by_name = HashMap::new();
        for (&prop, &value) in handles.iter().zip(values) {
            let info = card
                .get_property(prop)
                .map_err(ioctl(format!("DRM_IOCTL_MODE_GETPROPERTY {prop:?}")))?;
            by_name.insert(info.name().to_string_lossy().into_owned(), (prop, value));
        }
        Ok(Self {
            object,
            id,
            by_name,
        })
    }

    fn handle(&self, name: &'static str) -> Result<property::Handle, KmsError> {
        self.by_name
            .get(name)
            .map(|&(handle, _)| handle)
            .ok_or(KmsError::NoProperty {
                object: self.object,
                id: self.id,
                name,
            })
    }

    fn value(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&(_, value)| value)
    }
}

fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

/// The first connected connector that is not writeback (or the one named `wanted`).
fn find_connector(card: &Card, wanted: Option<&str>) -> Result<connector::Info, KmsError> {
    let resources = card
        .resource_handles()
        .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
    let mut seen = Vec::new();
    for &handle in resources.connectors() {
        let info = card
            .get_connector(handle, false)
            .map_err(ioctl(format!("DRM_IOCTL_MODE_GETCONNECTOR {handle:?}")))?;
        let name = connector_name(&info);
        seen.push(format!("{name}: {:?}", info.state()));
        if info.interface() == connector::Interface::Writeback {
            continue;
        }
        if wanted.is_some_and(|wanted| wanted != name) {
            continue;
        }
        if info.state() == connector::State::Connected && !resources.crtcs().is_empty() {
            return Ok(info);
        }
    }
    Err(KmsError::NoConnector {
        path: card.path().to_path_buf(),
        connectors: seen,
    })
}

/// A CRTC that can drive the connector (its current one if it has one).
fn find_crtc(card: &Card, connector: &connector::Info) -> Result<crtc::Handle, KmsError> {
    let resources = card
        .resource_handles()
        .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
    let mut candidates = Vec::new();
    if let Some(encoder) = connector.current_encoder() {
        if let Ok(info) = card.get_encoder(encoder) {
            candidates.extend(info.crtc());
        }
    }
    for &encoder in connector.encoders() {
        if let Ok(info) = card.get_encoder(encoder) {
            candidates.extend(resources.filter_crtcs(info.possible_crtcs()));
        }
    }
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| KmsError::NoCrtc {
            connector: connector_name(connector),
        })
}

/// DRM_PLANE_TYPE_PRIMARY.
const PLANE_TYPE_PRIMARY: u64 = 1;

/// One (format, modifier) pair a plane takes, from IN_FORMATS.
type FormatModifier = (u32, u64);

/// Parses an IN_FORMATS blob (`struct drm_format_modifier_blob`).
fn parse_in_formats(blob: &[u8]) -> Option<Vec<FormatModifier>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(blob.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(blob.get(at..at + 8)?.try_into().ok()?))
    };
    let count_formats = u32_at(8)? as usize;
    let formats_offset = u32_at(12)? as usize;
    let count_modifiers = u32_at(16)? as usize;
    let modifiers_offset = u32_at(20)? as usize;
    let formats: Vec<u32> = (0..count_formats)
        .map(|index| u32_at(formats_offset + index * 4))
        .collect::<Option<_>>()?;
    let mut pairs = Vec::new();
    for index in 0..count_modifiers {
        // struct drm_format_modifier { __u64 formats; __u32 offset; __u32 pad; __u64 modifier; }
        let at = modifiers_offset + index * 24;
        let mask = u64_at(at)?;
        let offset = u32_at(at + 8)? as usize;
        let modifier = u64_at(at + 16)?;
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                if let Some(&format) = formats.get(offset + bit) {
                    pairs.push((format, modifier));
                }
            }
        }
    }
    Some(pairs)
}

/// What a plane takes: IN_FORMATS pairs when the driver has them, else its format list
/// (implicitly linear).
#[derive(Debug, Clone)]
struct PlaneFormats {
    formats: Vec<u32>,
    pairs: Option<Vec<FormatModifier>>,
}

impl PlaneFormats {
    fn takes(&self, fourcc: u32, modifier: Modifier) -> bool {
        match (modifier, &self.pairs) {
            (Modifier::Implicit, _) => self.formats.contains(&fourcc),
            (Modifier::Explicit(modifier), Some(pairs)) => {
                pairs.contains(&(fourcc, u64::from(modifier)))
            }
            (Modifier::Explicit(modifier), None) => {
                modifier == DrmModifier::Linear && self.formats.contains(&fourcc)
            }
        }
    }
}

/// The connector → CRTC → primary plane chain the presenter drives.
#[derive(Debug, Clone)]
struct Pipe {
    connector: connector::Handle,
    connector_name: String,
    crtc: crtc::Handle,
    plane: plane::Handle,
    mode: Mode,
    formats: PlaneFormats,
    connector_props: Props,
    crtc_props: Props,
    plane_props: Props,
}

impl Pipe {
    fn find(card: &Card, connector: Option<&str>) -> Result<Self, KmsError> {
        card.enable_atomic()?;
        let info = find_connector(card, connector)?;
        let name = connector_name(&info);
        let mode = info
            .modes()
            .iter()
            .find(|mode| {
                mode.mode_type()
                    .contains(drm::control::ModeTypeFlags::PREFERRED)
            })
            .or_else(|| info.modes().first())
            .copied()
            .ok_or_else(|| KmsError::NoMode {
                connector: name.clone(),
            })?;
        let crtc = find_crtc(card, &info)?;
        let resources = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
        let planes = card
            .plane_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETPLANERESOURCES"))?;
        let mut primary = None;
        for handle in planes {
            let plane = card
                .get_plane(handle)
                .map_err(ioctl(format!("DRM_IOCTL_MODE_GETPLANE {handle:?}")))?;
            if !resources
                .filter_crtcs(plane.possible_crtcs())
                .contains(&crtc)
            {
                continue;
            }
            let props = Props::of(card, handle, "plane")?;
            if props.value("type") != Some(PLANE_TYPE_PRIMARY) {
                continue;
            }
            let pairs = match props.value("IN_FORMATS") {
                Some(blob) if blob != 0 => card
                    .get_property_blob(blob)
                    .ok()
                    .and_then(|bytes| parse_in_formats(&bytes)),
                _ => None,
            };
            primary = Some((
                handle,
                PlaneFormats {
                    formats: plane.formats().to_vec(),
                    pairs,
                },
                props,
            ));
            break;
        }
        let (plane, formats, plane_props) = primary.ok_or(KmsError::NoPlane {
            crtc: crtc.into(),
            format: PixelFormat::Xrgb8888,
            modifier: 0,
        })?;
        Ok(Self {
            connector: info.handle(),
            connector_name: name,
            crtc,
            plane,
            mode,
            formats,
            connector_props: Props::of(card, info.handle(), "connector")?,
            crtc_props: Props::of(card, crtc, "CRTC")?,
            plane_props,
        })
    }

    fn mode_size(&self) -> (u32, u32) {
        let (width, height) = self.mode.size();
        (u32::from(width), u32::from(height))
    }

    /// Adds the plane's state to `req`: `fb` at `placement`, with `rotation` if given.
    fn add_plane(
        &self,
        req: &mut AtomicModeReq,
        fb: Option<framebuffer::Handle>,
        placement: Option<Placement>,
        rotation: Option<u64>,
    ) -> Result<(), KmsError> {
        let props = &self.plane_props;
        req.add_property(
            self.plane,
            props.handle("FB_ID")?,
            property::Value::Framebuffer(fb),
        );
        req.add_property(
            self.plane,
            props.handle("CRTC_ID")?,
            property::Value::CRTC(fb.map(|_| self.crtc)),
        );
        if let Some(p) = placement {
            for (name, value) in [
                ("SRC_X", u64::from(p.src.x) << 16),
                ("SRC_Y", u64::from(p.src.y) << 16),
                ("SRC_W", u64::from(p.src.width) << 16),
                ("SRC_H", u64::from(p.src.height) << 16),
                ("CRTC_X", i64::from(p.dst.x) as u64),
                ("CRTC_Y", i64::from(p.dst.y) as u64),
                ("CRTC_W", u64::from(p.dst.width)),
                ("CRTC_H", u64::from(p.dst.height)),
            ] {
                req.add_raw_property(self.plane.into(), props.handle(name)?, value);
            }
        }
        if let (Some(rotation), Some(handle)) = (rotation, props.by_name.get("rotation")) {
            req.add_raw_property(self.plane.into(), handle.0, rotation);
        }
        Ok(())
    }

    /// Adds the modeset (mode blob, ACTIVE, connector routing) to `req`.
    fn add_modeset(&self, req: &mut AtomicModeReq, blob: &Blob) -> Result<(), KmsError> {
        req.add_property(
            self.connector,
            self.connector_props.handle("CRTC_ID")?,
            property::Value::CRTC(Some(self.crtc)),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("MODE_ID")?,
            property::Value::Blob(blob.id),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("ACTIVE")?,
            property::Value::Boolean(true),
        );
        Ok(())
    }

    fn mode_blob(&self, card: &Card) -> Result<Blob, KmsError> {
        let value = card
            .create_property_blob(&self.mode)
            .map_err(ioctl("DRM_IOCTL_MODE_CREATEPROPBLOB (mode)"))?;
        let id = match value {
            property::Value::Blob(id) => id,
            other => u64::from(other),
        };
        Ok(Blob {
            card: card.clone(),
            id,
        })
    }

    /// Turns the pipe off: plane off, CRTC inactive, connector unrouted.
    fn disable_all(&self, card: &Card) -> Result<(), KmsError> {
        let mut req = AtomicModeReq::new();
        self.add_plane(&mut req, None, None, None)?;
        req.add_property(
            self.connector,
            self.connector_props.handle("CRTC_ID")?,
            property::Value::CRTC(None),
        );
        // Every other connector on the CRTC (a writeback connector) goes too: a disabled
        // CRTC with connectors is refused with EINVAL.
        let crtc_id = u64::from(u32::from(self.crtc));
        let resources = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
        for &other in resources.connectors() {
            if other == self.connector {
                continue;
            }
            let props = Props::of(card, other, "connector")?;
            if props.value("CRTC_ID") == Some(crtc_id) {
                req.add_property(other, props.handle("CRTC_ID")?, property::Value::CRTC(None));
            }
        }
        req.add_property(
            self.crtc,
            self.crtc_props.handle("MODE_ID")?,
            property::Value::Blob(0),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("ACTIVE")?,
            property::Value::Boolean(false),
        );
        card.commit(
            AtomicCommitFlags::ALLOW_MODESET,
            req,
            &format!("atomic commit disabling CRTC {:?}", self.crtc),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Geometry.

/// Where a plane reads (`src`, framebuffer pixels) and where it shows it (`dst`, CRTC
/// pixels; `x`/`y` may be negative in principle, here they never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Source rectangle in the framebuffer.
    pub src: Rect,
    /// Destination rectangle on the CRTC.
    pub dst: Rect,
}

impl Placement {
    /// Scaled to fit `mode`, aspect kept, letterboxed (centred).
    pub fn fit(src: Rect, mode: (u32, u32)) -> Self {
        let (mw, mh) = (u64::from(mode.0), u64::from(mode.1));
        let (sw, sh) = (u64::from(src.width.max(1)), u64::from(src.height.max(1)));
        let (dw, dh) = if sw * mh <= sh * mw {
            ((sw * mh / sh).max(1), mh)
        } else {
            (mw, (sh * mw / sw).max(1))
        };
        Self {
            src,
            dst: Rect {
                x: ((mw - dw) / 2) as u32,
                y: ((mh - dh) / 2) as u32,
                width: dw as u32,
                height: dh as u32,
            },
        }
    }

    /// One to one: centred when smaller than `mode`, cropped around the centre when larger.
    pub fn centre(src: Rect, mode: (u32, u32)) -> Self {
        let width = src.width.min(mode.0);
        let height = src.height.min(mode.1);
        Self {
            src: Rect {
                x: src.x + (src.width - width) / 2,
                y: src.y + (src.height - height) / 2,
                width,
                height,
            },
            dst: Rect {
                x: (mode.0 - width) / 2,
                y: (mode.1 - height) / 2,
                width,
                height,
            },
        }
    }

    /// Whether source and destination sizes differ.
    pub fn is_scaled(&self) -> bool {
        self.src.width != self.dst.width || self.src.height != self.dst.height
    }
}

// ---------------------------------------------------------------------------------------
// The copy path.

/// Why a frame went through the copy path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyReason {
    /// The primary plane does not take the guest's format and modifier.
    FormatNotOnPlane,
    /// The picture is stored bottom-up and the plane has no REFLECT_Y.
    BottomUpWithoutReflect,
    /// The export has no dma-buf (no /dev/udmabuf).
    NoDmabuf,
    /// hugetlb-backed export on a kernel whose udmabuf vmap repeats each folio's head
    /// page: the scanout engine would read wrong pixels.
    HugetlbVmapQuirk,
    /// A peer's udmabuf whose pages nobody said are 4 KiB, on a kernel with the hugetlb
    /// vmap quirk: they may be hugetlb folios, which the scanout engine would read wrong.
    PeerPagesUnknown,
}

/// How a frame reaches the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "path", content = "reason", rename_all = "snake_case")]
pub enum ScanoutPath {
    /// The guest's pages are scanned out (zero copy).
    Direct,
    /// The frame is drawn into a scanout buffer first.
    Copy(CopyReason),
}

/// A scanout buffer the copy path draws into: a gbm buffer object (SCANOUT | LINEAR,
/// XRGB8888), or a dumb buffer where gbm is unavailable.
pub struct FillTarget<'a> {
    inner: &'a mut CopyBuffer,
    card: &'a Card,
}

impl std::fmt::Debug for FillTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillTarget")
            .field("size", &self.size())
            .finish()
    }
}

impl FillTarget<'_> {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.inner.size()
    }

    /// The target's format (always XRGB8888).
    pub fn format(&self) -> PixelFormat {
        PixelFormat::Xrgb8888
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        match &self.inner {
            CopyBuffer::Gbm(bo) => bo.stride(),
            CopyBuffer::Dumb(dumb) => dumb.pitch(),
        }
    }

    /// The buffer as a dma-buf (what a GL renderer imports as its render target):
    /// linear, [`FillTarget::format`], [`FillTarget::stride`], offset 0.
    pub fn dmabuf(&self) -> Result<OwnedFd, KmsError> {
        // O_RDWR: a renderer that maps the dma-buf (llvmpipe does) needs a writable
        // mapping; gbm_bo_get_fd and a plain PRIME export give a read-only one.
        let (card, handle) = match &self.inner {
            CopyBuffer::Gbm(bo) => (self.card, buffer::Buffer::handle(bo)),
            CopyBuffer::Dumb(dumb) => (&dumb.card, buffer::Buffer::handle(dumb.buffer())),
        };
        card.buffer_to_prime_fd(handle, (libc::O_CLOEXEC | libc::O_RDWR) as u32)
            .map_err(ioctl("DRM_IOCTL_PRIME_HANDLE_TO_FD (O_RDWR)"))
    }

    /// Runs `f` over the CPU-mapped pixels and the stride in bytes.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut [u8], u32) -> R) -> Result<R, KmsError> {
        match &mut self.inner {
            CopyBuffer::Gbm(bo) => {
                let (width, height) = (bo.width(), bo.height());
                let mut f = Some(f);
                bo.map_mut(0, 0, width, height, |map| {
                    let stride = map.stride();
                    (f.take().expect("called once"))(map.buffer_mut(), stride)
                })
                .map_err(|source| KmsError::Gbm {
                    what: format!("gbm_bo_map {width}x{height}"),
                    source,
                })
            }
            CopyBuffer::Dumb(dumb) => dumb.with_bytes(f),
        }
    }
}

/// Draws an export into a scanout buffer for the copy path. The CPU fill is the default;
/// a GL renderer (EGLImage of the export → FBO on the target's dma-buf) can replace it.
pub trait FrameFill: Send + std::fmt::Debug {
    /// A short name for status reports.
    fn name(&self) -> &'static str;
    /// Draws the export's visible rect, top row first, into `target` (same size).
    fn fill(
        &mut self,
        export: &ExportedFramebuffer,
        target: &mut FillTarget<'_>,
    ) -> Result<(), KmsError>;
    /// The name of what drew the last frame (a fill may fall back to another per
    /// frame); [`FrameFill::name`] unless the fill says otherwise.
    fn last_used(&self) -> &'static str {
        self.name()
    }
    /// Drops whatever the fill keeps of `buffer_id` up to `generation` (that export
    /// was revoked: an imported image would keep its pages pinned).
    fn forget(&mut self, buffer_id: BufferId, generation: u64) {
        let _ = (buffer_id, generation);
    }
    /// Decisions since the last call, for the presenter's log.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// The CPU fill: blits the export through [`crate::import::CpuMapping`] into XRGB8888
/// with the gl=off path's SIMD converter.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuFill;

impl FrameFill for CpuFill {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn fill(
        &mut self,
        export: &ExportedFramebuffer,
        target: &mut FillTarget<'_>,
    ) -> Result<(), KmsError> {
        let mapping = crate::import::CpuMapping::new(export.clone());
        let visible = export.layout().visible();
        target.write_with(|data, stride| {
            let mut dest = Dest {
                data,
                stride: stride as usize,
                format: DestFormat::Xrgb8888,
            };
            mapping.blit(&mut dest, &[Rect::full(visible.width, visible.height)])
        })??;
        Ok(())
    }
}

enum CopyBuffer {
    Gbm(gbm::BufferObject<()>),
    Dumb(Dumb),
}

impl std::fmt::Debug for CopyBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gbm(_) => write!(f, "Gbm{:?}", self.size()),
            Self::Dumb(_) => write!(f, "Dumb{:?}", self.size()),
        }
    }
}

impl CopyBuffer {
    fn size(&self) -> (u32, u32) {
        match self {
            Self::Gbm(bo) => (bo.width(), bo.height()),
            Self::Dumb(dumb) => buffer::Buffer::size(dumb.buffer()),
        }
    }

    fn add_fb(&self, card: &Card) -> Result<Fb, KmsError> {
        match self {
            Self::Gbm(bo) => add_fb2(
                card,
                &Planar {
                    size: (bo.width(), bo.height()),
                    format: DrmFourcc::Xrgb8888,
                    modifier: None,
                    handles: [Some(buffer::Buffer::handle(bo)), None, None, None],
                    pitches: [bo.stride(), 0, 0, 0],
                    offsets: [0; 4],
                },
            ),
            Self::Dumb(dumb) => dumb.add_fb(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The presenter.

/// What is on (or was last on) the plane.
#[derive(Debug)]
struct Scanout {
    buffer_id: BufferId,
    generation: u64,
    /// The export, kept alive while its pages are scanned out (direct path only).
    export: Option<ExportedFramebuffer>,
    // Field order is drop order: the FB goes before the GEM handle / buffer it uses.
    fb: Fb,
    _gem: Option<Gem>,
    _copy: Option<CopyBuffer>,
    placement: Placement,
    rotation: Option<u64>,
    path: ScanoutPath,
}

/// The last frame presented, as reported by [`KmsPresenter::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentStatus {
    /// The buffer shown.
    pub buffer_id: BufferId,
    /// Its generation.
    pub generation: u64,
    /// Direct or copy, and why.
    pub path: ScanoutPath,
    /// The fill used on the copy path (`None` on the direct path).
    pub fill: Option<&'static str>,
    /// Direct scanout of pages pinned without a long-term pin, allowed by the policy's
    /// opt-in (old kernels).
    pub without_longterm_pin: bool,
    /// Whether the plane scales.
    pub scaled: bool,
    /// Source rectangle and CRTC rectangle.
    pub placement: Placement,
}

/// What [`KmsPresenter::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The presenter did not hold that buffer generation.
    NotHeld,
    /// It was the previous frame (not on screen); its framebuffer was closed.
    Dropped,
    /// It was on screen through the copy path: no guest pages are scanned, kept.
    CopyKept,
    /// The plane now shows the previous frame.
    MovedToPrevious,
    /// The plane now shows a black buffer.
    MovedToBlack,
    /// The plane was disabled.
    PlaneDisabled,
}

/// DRM_MODE_ROTATE_0.
const ROTATE_0: u64 = 1 << 0;
/// DRM_MODE_REFLECT_Y.
const REFLECT_Y: u64 = 1 << 5;

/// Shows exported framebuffers on a KMS plane. See the [module docs](self).
pub struct KmsPresenter {
    // Drop order: scanouts (FBs, GEM handles) before the mode blob, gbm and the card.
    current: Option<Scanout>,
    previous: Option<Scanout>,
    black: Option<(Fb, Dumb)>,
    mode_blob: Option<Blob>,
    gbm: Option<gbm::Device<Card>>,
    gbm_failed: Option<String>,
    fill: Box<dyn FrameFill>,
    /// No fill was chosen by the caller: the first copy-path frame picks one.
    fill_auto: bool,
    card: Card,
    pipe: Pipe,
    kernel: String,
    allow_without_longterm: bool,
    vmap_quirk: bool,
    flip_timeout: Duration,
    status: Option<PresentStatus>,
    log: Vec<String>,
}

impl std::fmt::Debug for KmsPresenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsPresenter")
            .field("card", &self.card.path())
            .field("connector", &self.pipe.connector_name)
            .field("crtc", &self.pipe.crtc)
            .field("plane", &self.pipe.plane)
            .field("status", &self.status)
            .finish()
    }
}

impl KmsPresenter {
    /// Opens `path` (or the first card with a connected connector) and sets up a pipe
    /// for exports of `pins`.
    pub fn open(path: Option<&Path>, pins: &PinManager) -> Result<Self, KmsError> {
        let card = match path {
            Some(path) => Card::open(path)?,
            None => Card::open_first()?,
        };
        Self::new(card, None, pins)
    }

    /// A presenter on `card`, driving `connector` (e.g. `Virtual-1`; `None`: the first
    /// connected one). Nothing is shown until [`KmsPresenter::present`].
    pub fn new(card: Card, connector: Option<&str>, pins: &PinManager) -> Result<Self, KmsError> {
        let pipe = Pipe::find(&card, connector)?;
        let semantics = pins.semantics();
        Ok(Self {
            current: None,
            previous: None,
            black: None,
            mode_blob: None,
            gbm: None,
            gbm_failed: None,
            fill: Box::new(CpuFill),
            fill_auto: true,
            card,
            pipe,
            kernel: semantics.kernel.clone(),
            allow_without_longterm: pins.policy().allow_without_longterm,
            vmap_quirk: semantics.quirks.contains(&Quirk::HugetlbVmapHeadPage),
            flip_timeout: Duration::from_secs(5),
            status: None,
            log: Vec::new(),
        })
    }

    /// The card (shared: writeback captures go through the same DRM master).
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The CRTC driven.
    pub fn crtc(&self) -> crtc::Handle {
        self.pipe.crtc
    }

    /// The primary plane used.
    pub fn plane(&self) -> plane::Handle {
        self.pipe.plane
    }

    /// The connector's name, e.g. `Virtual-1`.
    pub fn connector_name(&self) -> &str {
        &self.pipe.connector_name
    }

    /// The mode's size.
    pub fn mode_size(&self) -> (u32, u32) {
        self.pipe.mode_size()
    }

    /// The framebuffer on the plane now, as the kernel reports it.
    pub fn plane_framebuffer(&self) -> Result<Option<framebuffer::Handle>, KmsError> {
        Ok(self
            .card
            .get_plane(self.pipe.plane)
            .map_err(ioctl("DRM_IOCTL_MODE_GETPLANE"))?
            .framebuffer())
    }

    /// The framebuffer the presenter has on the plane (`None` after a release to black
    /// or before the first present).
    pub fn current_framebuffer(&self) -> Option<framebuffer::Handle> {
        self.current.as_ref().map(|scanout| scanout.fb.handle)
    }

    /// Replaces the fill the copy path uses. Without a call, the first copy-path frame
    /// picks one: [`GlFill`] where a headless EGL display imports and renders (feature
    /// `egl`), else [`CpuFill`]; the choice is in [`KmsPresenter::log`].
    pub fn set_fill(&mut self, fill: Box<dyn FrameFill>) {
        self.fill = fill;
        self.fill_auto = false;
    }

    /// The fill the copy path uses now (`"cpu"` until an automatic choice was made).
    pub fn fill_name(&self) -> &'static str {
        self.fill.name()
    }

    /// Picks the copy path's fill on first use (see [`KmsPresenter::set_fill`]).
    fn choose_fill(&mut self) {
        if !self.fill_auto {
            return;
        }
        self.fill_auto = false;
        #[cfg(feature = "egl")]
        match GlFill::new() {
            Ok(fill) => {
                self.note(format!(
                    "copy path fill: gl (EGL dma-buf import on {:?})",
                    fill.platform()
                ));
                self.fill = Box::new(fill);
            }
            Err(error) => self.note(format!(
                "copy path fill: cpu (GL fill unavailable: {error})"
            )),
        }
        #[cfg(not(feature = "egl"))]
        self.note("copy path fill: cpu (built without feature egl)".into());
    }

    /// How long to wait for a page-flip event.
    pub fn set_flip_timeout(&mut self, timeout: Duration) {
        self.flip_timeout = timeout;
    }

    /// Whether hugetlb-backed exports avoid direct scanout (the vmap quirk).
    pub fn avoids_hugetlb_scanout(&self) -> bool {
        self.vmap_quirk
    }

    /// Runs [`probe_hugetlb_vmap_quirk`] on this presenter's card and remembers the
    /// answer (a found quirk is added to what [`crate::export::PinSemantics`] said).
    /// The probe takes over the pipe; the next present does a full modeset.
    pub fn probe_vmap_quirk(&mut self) -> Result<bool, KmsError> {
        let found = probe_hugetlb_vmap_quirk(&self.card)?;
        self.note(format!(
            "hugetlb vmap probe: quirk {}",
            if found { "present" } else { "absent" }
        ));
        self.vmap_quirk |= found;
        self.mode_blob = None;
        Ok(found)
    }

    /// The last frame presented.
    pub fn status(&self) -> Option<&PresentStatus> {
        self.status.as_ref()
    }

    /// Decisions worth telling a user (copy path taken and why, probe results…).
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Logs `line` unless it is among the last few lines (a decision repeated every
    /// frame, possibly between other per-frame lines, is told once).
    fn note(&mut self, line: String) {
        if !self.log.iter().rev().take(8).any(|seen| *seen == line) {
            eprintln!("guestfb kms: {line}");
            self.log.push(line);
        }
    }

    /// Decides how `export` reaches the plane.
    fn choose_path(&self, export: &ExportedFramebuffer) -> Result<ScanoutPath, KmsError> {
        let layout = export.layout();
        if !export.has_dmabuf()? {
            return Ok(ScanoutPath::Copy(CopyReason::NoDmabuf));
        }
        if !self
            .pipe
            .formats
            .takes(layout.format().fourcc() as u32, layout.modifier())
        {
            return Ok(ScanoutPath::Copy(CopyReason::FormatNotOnPlane));
        }
        if !layout.y0_top() && !self.pipe.plane_props.by_name.contains_key("rotation") {
            return Ok(ScanoutPath::Copy(CopyReason::BottomUpWithoutReflect));
        }
        if self.vmap_quirk {
            match export.large_folios() {
                Some(true) => return Ok(ScanoutPath::Copy(CopyReason::HugetlbVmapQuirk)),
                None => return Ok(ScanoutPath::Copy(CopyReason::PeerPagesUnknown)),
                Some(false) => {}
            }
        }
        Ok(ScanoutPath::Direct)
    }

    fn gbm_device(&mut self) -> Option<&gbm::Device<Card>> {
        if self.gbm.is_none() && self.gbm_failed.is_none() {
            match gbm::Device::new(self.card.clone()) {
                Ok(device) => self.gbm = Some(device),
                Err(error) => {
                    let line = format!("gbm unavailable ({error}); copy path uses dumb buffers");
                    self.gbm_failed = Some(line.clone());
                    self.note(line);
                }
            }
        }
        self.gbm.as_ref()
    }

    fn copy_buffer(&mut self, width: u32, height: u32) -> Result<CopyBuffer, KmsError> {
        if let Some(device) = self.gbm_device() {
            match device.create_buffer_object::<()>(
                width,
                height,
                gbm::Format::Xrgb8888,
                gbm::BufferObjectFlags::SCANOUT | gbm::BufferObjectFlags::LINEAR,
            ) {
                Ok(bo) => return Ok(CopyBuffer::Gbm(bo)),
                Err(source) => {
                    self.note(format!(
                        "gbm_bo_create {width}x{height} XRGB8888 SCANOUT|LINEAR failed ({source}); \
                         using a dumb buffer"
                    ));
                }
            }
        }
        Ok(CopyBuffer::Dumb(Dumb::new(&self.card, width, height)?))
    }

    fn direct_scanout(&self, export: &ExportedFramebuffer) -> Result<(Fb, Gem), KmsError> {
        let layout = export.layout();
        let gem = export.with_dmabuf(|dmabuf| {
            let dmabuf = dmabuf.expect("checked by choose_path");
            self.card
                .prime_fd_to_buffer(dmabuf.as_fd())
                .map(|handle| Gem {
                    card: self.card.clone(),
                    handle,
                })
                .map_err(|source| self.card.classify("DRM_IOCTL_PRIME_FD_TO_HANDLE", source))
        })??;
        let mut planar = Planar {
            size: (layout.width(), layout.height()),
            format: layout.format().fourcc(),
            modifier: match layout.modifier() {
                Modifier::Implicit => None,
                Modifier::Explicit(modifier) => Some(modifier),
            },
            handles: [None; 4],
            pitches: [0; 4],
            offsets: [0; 4],
        };
        for (index, plane) in layout.planes().iter().enumerate().take(4) {
            planar.handles[index] = Some(gem.handle);
            planar.pitches[index] = plane.stride;
            planar.offsets[index] = u32::try_from(plane.offset).map_err(|_| KmsError::Ioctl {
                what: format!("ADDFB2: plane {index} offset {} over 32 bits", plane.offset),
                source: io::Error::from_raw_os_error(libc::EOVERFLOW),
            })?;
        }
        let fb = add_fb2(&self.card, &planar)?;
        Ok((fb, gem))
    }

    /// Shows `export`: the first call does a modeset, later ones a page flip whose event
    /// is awaited before returning.
    pub fn present(&mut self, export: &ExportedFramebuffer) -> Result<PresentStatus, KmsError> {
        if export.is_revoked() {
            return Err(export.revoked_error().into());
        }
        let path = self.choose_path(export)?;
        let mut without_longterm_pin = false;
        if path == ScanoutPath::Direct && !export.is_longterm() {
            if !self.allow_without_longterm {
                return Err(KmsError::NotLongterm {
                    buffer_id: export.buffer_id(),
                    generation: export.generation(),
                    kernel: self.kernel.clone(),
                });
            }
            without_longterm_pin = true;
            self.note(format!(
                "buffer {} scanned out without a long-term pin (policy opt-in, kernel {})",
                export.buffer_id(),
                self.kernel
            ));
        }
        let layout = export.layout();
        let visible = layout.visible();
        let mode = self.pipe.mode_size();
        let scanout = match path {
            ScanoutPath::Direct => {
                let (fb, gem) = self.direct_scanout(export)?;
                let rotation = if layout.y0_top() {
                    None
                } else {
                    Some(ROTATE_0 | REFLECT_Y)
                };
                // The plane reads framebuffer rows; for a bottom-up picture, REFLECT_Y
                // turns it, and the visible rect is counted from the bottom row.
                let src = if layout.y0_top() {
                    visible
                } else {
                    Rect {
                        y: layout.height() - visible.y - visible.height,
                        ..visible
                    }
                };
                Scanout {
                    buffer_id: export.buffer_id(),
                    generation: export.generation(),
                    export: Some(export.clone()),
                    fb,
                    _gem: Some(gem),
                    _copy: None,
                    placement: Placement::fit(src, mode),
                    rotation,
                    path,
                }
            }
            ScanoutPath::Copy(reason) => {
                self.choose_fill();
                self.note(format!(
                    "buffer {} ({} {}x{}): copy path ({reason:?}), fill {}",
                    export.buffer_id(),
                    layout.format(),
                    layout.width(),
                    layout.height(),
                    self.fill.name()
                ));
                let mut copy = self.copy_buffer(visible.width, visible.height)?;
                let filled = self.fill.fill(
                    export,
                    &mut FillTarget {
                        inner: &mut copy,
                        card: &self.card,
                    },
                );
                for line in self.fill.take_notes() {
                    self.note(line);
                }
                filled?;
                let fb = copy.add_fb(&self.card)?;
                let src = Rect::full(visible.width, visible.height);
                Scanout {
                    buffer_id: export.buffer_id(),
                    generation: export.generation(),
                    export: None,
                    fb,
                    _gem: None,
                    _copy: Some(copy),
                    placement: Placement::fit(src, mode),
                    rotation: None,
                    path,
                }
            }
        };
        let scanout = self.show(scanout)?;
        let status = PresentStatus {
            buffer_id: scanout.buffer_id,
            generation: scanout.generation,
            path: scanout.path,
            fill: match scanout.path {
                ScanoutPath::Direct => None,
                ScanoutPath::Copy(_) => Some(self.fill.last_used()),
            },
            without_longterm_pin,
            scaled: scanout.placement.is_scaled(),
            placement: scanout.placement,
        };
        self.previous = self.current.replace(scanout);
        self.status = Some(status.clone());
        Ok(status)
    }

    /// Puts `scanout` on the plane (scaled to fit first, then 1:1 centred if the plane
    /// refused to scale), returns it with the placement that was accepted.
    ///
    /// No TEST_ONLY commit first: vkms on 6.12 answered EINVAL to a TEST_ONLY modeset
    /// that the same commit without the flag accepted.
    fn show(&mut self, mut scanout: Scanout) -> Result<Scanout, KmsError> {
        let mut placements = vec![scanout.placement];
        if scanout.placement.is_scaled() {
            placements.push(Placement::centre(
                scanout.placement.src,
                self.pipe.mode_size(),
            ));
        }
        let mut last_error = None;
        for placement in placements {
            scanout.placement = placement;
            match self.commit_scanout(&scanout, false) {
                Ok(()) => return Ok(scanout),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one placement"))
    }

    /// Commits `scanout` to the plane; `test`: TEST_ONLY.
    fn commit_scanout(&mut self, scanout: &Scanout, test: bool) -> Result<(), KmsError> {
        let mut req = AtomicModeReq::new();
        self.pipe.add_plane(
            &mut req,
            Some(scanout.fb.handle),
            Some(scanout.placement),
            scanout.rotation.or(Some(ROTATE_0)),
        )?;
        let modeset = self.mode_blob.is_none();
        if modeset {
            let blob = self.pipe.mode_blob(&self.card)?;
            self.pipe.add_modeset(&mut req, &blob)?;
            if !test {
                self.mode_blob = Some(blob);
            }
        }
        let what = format!(
            "atomic {} of FB {:?} on plane {:?} CRTC {:?} connector {} ({:?})",
            if modeset { "modeset" } else { "page flip" },
            scanout.fb.handle,
            self.pipe.plane,
            self.pipe.crtc,
            self.pipe.connector_name,
            scanout.placement
        );
        let flags = match (test, modeset) {
            (true, true) => AtomicCommitFlags::TEST_ONLY | AtomicCommitFlags::ALLOW_MODESET,
            (true, false) => AtomicCommitFlags::TEST_ONLY,
            (false, true) => AtomicCommitFlags::ALLOW_MODESET,
            (false, false) => AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT,
        };
        if let Err(error) = self.card.atomic_commit(flags, req) {
            if !test && modeset {
                self.mode_blob = None;
            }
            return Err(self.commit_error(&what, error));
        }
        if !test && !modeset {
            self.wait_flip()?;
        }
        Ok(())
    }

    /// Master loss, hot-unplug, or a plain failure.
    fn commit_error(&self, what: &str, source: io::Error) -> KmsError {
        let errno = source.raw_os_error();
        if matches!(errno, Some(libc::ENOENT) | Some(libc::EINVAL)) {
            let connected = self
                .card
                .get_connector(self.pipe.connector, false)
                .map(|info| info.state() == connector::State::Connected)
                .unwrap_or(false);
            if !connected {
                return KmsError::Disconnected {
                    connector: self.pipe.connector_name.clone(),
                    what: what.to_string(),
                    source,
                };
            }
        }
        self.card.classify(what, source)
    }

    /// Waits for the page-flip event of the CRTC.
    fn wait_flip(&mut self) -> Result<(), KmsError> {
        let start = Instant::now();
        let crtc = self.pipe.crtc;
        loop {
            let left = self.flip_timeout.saturating_sub(start.elapsed());
            if left.is_zero()
                || !crate::sys::poll_readable(self.card.as_fd(), left).map_err(ioctl("poll"))?
            {
                return Err(KmsError::FlipTimeout {
                    crtc: crtc.into(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            let events = self
                .card
                .receive_events()
                .map_err(ioctl("read of DRM events"))?;
            for event in events {
                if let drm::control::Event::PageFlip(flip) = event {
                    if flip.crtc == crtc {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Stops scanning out buffer `buffer_id` generation `generation` before returning:
    /// the plane moves to the previous frame (if it is another, live buffer), else to a
    /// black buffer, else it is disabled, with a blocking commit; then the framebuffer
    /// and GEM handle are closed, so the kernel holds no reference to the pages.
    ///
    /// Call it from a [`PinManager::on_revoke`] listener (the presenter behind an
    /// `Arc<Mutex<_>>`): the listener runs before the discard punches the hole.
    pub fn release(&mut self, buffer_id: BufferId, generation: u64) -> Result<Released, KmsError> {
        self.fill.forget(buffer_id, generation);
        let matches = |scanout: &Option<Scanout>| {
            scanout.as_ref().is_some_and(|scanout| {
                scanout.buffer_id == buffer_id && scanout.generation == generation
            })
        };
        if matches(&self.previous) {
            self.previous = None;
            return Ok(Released::Dropped);
        }
        if !matches(&self.current) {
            return Ok(Released::NotHeld);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|scanout| scanout.export.is_none())
        {
            return Ok(Released::CopyKept);
        }
        // 1. The previous frame, if it is a different, live buffer.
        if let Some(previous) = self.previous.take() {
            let live = previous
                .export
                .as_ref()
                .is_none_or(|export| !export.is_revoked())
                && !(previous.buffer_id == buffer_id && previous.generation == generation);
            if live && self.commit_blocking(Some(&previous)).is_ok() {
                self.current = Some(previous);
                self.note(format!(
                    "released buffer {buffer_id} generation {generation}: plane shows the previous frame"
                ));
                return Ok(Released::MovedToPrevious);
            }
        }
        // 2. Black.
        let (width, height) = self.pipe.mode_size();
        if self.black.is_none() {
            if let Ok(dumb) = Dumb::new(&self.card, width, height) {
                if let Ok(fb) = dumb.add_fb() {
                    self.black = Some((fb, dumb));
                }
            }
        }
        if let Some((fb, _)) = &self.black {
            let black = fb.handle;
            let full = Rect::full(width, height);
            let mut req = AtomicModeReq::new();
            self.pipe.add_plane(
                &mut req,
                Some(black),
                Some(Placement {
                    src: full,
                    dst: full,
                }),
                Some(ROTATE_0),
            )?;
            if self
                .card
                .commit(AtomicCommitFlags::empty(), req, "atomic commit of black FB")
                .is_ok()
            {
                self.current = None;
                self.note(format!(
                    "released buffer {buffer_id} generation {generation}: plane shows black"
                ));
                return Ok(Released::MovedToBlack);
            }
        }
        // 3. Plane off.
        self.commit_blocking(None)?;
        self.current = None;
        self.note(format!(
            "released buffer {buffer_id} generation {generation}: plane disabled"
        ));
        Ok(Released::PlaneDisabled)
    }

    /// A blocking plane commit (no event): `None` disables the plane.
    fn commit_blocking(&self, scanout: Option<&Scanout>) -> Result<(), KmsError> {
        let mut req = AtomicModeReq::new();
        match scanout {
            Some(scanout) => self.pipe.add_plane(
                &mut req,
                Some(scanout.fb.handle),
                Some(scanout.placement),
                scanout.rotation.or(Some(ROTATE_0)),
            )?,
            None => self.pipe.add_plane(&mut req, None, None, None)?,
        }
        let what = format!("blocking atomic commit on plane {:?}", self.pipe.plane);
        self.card
            .atomic_commit(AtomicCommitFlags::empty(), req)
            .map_err(|error| self.commit_error(&what, error))
    }

    /// Turns the pipe off and drops every buffer.
    pub fn shutdown(&mut self) -> Result<(), KmsError> {
        let result = self.pipe.disable_all(&self.card);
        self.current = None;
        self.previous = None;
        self.mode_blob = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_letterboxes_and_centre_crops() {
        let src = Rect::full(640, 480);
        let fit = Placement::fit(src, (1920, 1080));
        assert_eq!(
            fit.dst,
            Rect {
                x: 240,
                y: 0,
                width: 1440,
                height: 1080
            }
        );
        let same = Placement::fit(
            Rect {
                width: 1024,
                height: 768,
                ..src
            },
            (1024, 768),
        );
        assert!(!same.is_scaled());
        let big = Rect {
            x: 10,
            y: 0,
            width: 2000,
            height: 500,
        };
        let centre = Placement::centre(big, (1024, 768));
        assert_eq!(
            centre.src,
            Rect {
                x: 10 + 488,
                y: 0,
                width: 1024,
                height: 500
            }
        );
        assert_eq!(centre.dst.y, 134);
    }

    #[test]
    fn in_formats_blob_parses() {
        // version 1, 2 formats, 1 modifier (LINEAR) covering both.
        let mut blob = Vec::new();
        for value in [1u32, 0, 2, 24, 1, 32] {
            blob.extend_from_slice(&value.to_ne_bytes());
        }
        blob.extend_from_slice(&0x3432_5258u32.to_ne_bytes()); // XR24
        blob.extend_from_slice(&0x3631_4752u32.to_ne_bytes()); // RG16
        blob.extend_from_slice(&0b11u64.to_ne_bytes());
        blob.extend_from_slice(&0u32.to_ne_bytes());
        blob.extend_from_slice(&0u32.to_ne_bytes());
        blob.extend_from_slice(&0u64.to_ne_bytes());
        let pairs = parse_in_formats(&blob).unwrap();
        assert_eq!(pairs, vec![(0x3432_5258, 0), (0x3631_4752, 0)]);
        let formats = PlaneFormats {
            formats: vec![0x3432_5258, 0x3631_4752],
            pairs: Some(pairs),
        };
        assert!(formats.takes(0x3432_5258, Modifier::LINEAR));
        assert!(formats.takes(0x3432_5258, Modifier::Implicit));
        assert!(!formats.takes(0x3432_5258, Modifier::from_raw(1 << 56 | 1)));
        assert!(!formats.takes(0x3432_4742, Modifier::LINEAR));
        assert!(parse_in_formats(&blob[..20]).is_none());
    }
}
