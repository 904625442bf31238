//! The KMS presenter: chooses the direct or copy path per frame, commits atomically,
//! waits for page flips and releases buffers a revocation takes away.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, AtomicCommitFlags,
    Device as ControlDevice,
};

use crate::export::Quirk;
use crate::export::{BufferId, ExportedFramebuffer, PinManager};
use crate::format::Modifier;
use crate::import::dmabuf::{with_export_image, DmaBufImageError, ImageSource};
use crate::rect::Rect;

use super::card::{add_fb2, Blob, Card, Dumb, Fb, Gem, Planar};
use super::copy::{CopyBuffer, CopyReason, CpuFill, FillTarget, FrameFill};
use super::error::{ioctl, KmsError};
#[cfg(feature = "egl")]
use super::glfill::GlFill;
use super::pipe::Pipe;
use super::placement::Placement;
use super::probe::probe_hugetlb_vmap_quirk;

/// How a frame reaches the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "path", content = "reason", rename_all = "snake_case")]
pub enum ScanoutPath {
    /// The guest's pages are scanned out (zero copy).
    Direct,
    /// The frame is drawn into a scanout buffer first.
    Copy(CopyReason),
}

/// What is on (or was last on) the plane.
#[derive(Debug)]
pub(super) struct Scanout {
    pub(super) buffer_id: BufferId,
    pub(super) generation: u64,
    /// The export, kept alive while its pages are scanned out (direct path only).
    pub(super) export: Option<ExportedFramebuffer>,
    // Field order is drop order: the FB goes before the GEM handle / buffer it uses.
    pub(super) fb: Fb,
    pub(super) _gem: Option<Gem>,
    pub(super) _copy: Option<CopyBuffer>,
    pub(super) placement: Placement,
    pub(super) rotation: Option<u64>,
    pub(super) path: ScanoutPath,
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
pub(super) const ROTATE_0: u64 = 1 << 0;

/// DRM_MODE_REFLECT_Y.
pub(super) const REFLECT_Y: u64 = 1 << 5;

/// Shows exported framebuffers on a KMS plane. See the [module docs](super).
pub struct KmsPresenter {
    // Drop order: scanouts (FBs, GEM handles) before the mode blob, gbm and the card.
    pub(super) current: Option<Scanout>,
    pub(super) previous: Option<Scanout>,
    pub(super) black: Option<(Fb, Dumb)>,
    pub(super) mode_blob: Option<Blob>,
    pub(super) gbm: Option<gbm::Device<Card>>,
    pub(super) gbm_failed: Option<String>,
    pub(super) fill: Box<dyn FrameFill>,
    /// No fill was chosen by the caller: the first copy-path frame picks one.
    pub(super) fill_auto: bool,
    pub(super) card: Card,
    pub(super) pipe: Pipe,
    pub(super) kernel: String,
    pub(super) allow_without_longterm: bool,
    pub(super) vmap_quirk: bool,
    pub(super) flip_timeout: Duration,
    pub(super) status: Option<PresentStatus>,
    pub(super) log: Vec<String>,
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
    pub(super) fn choose_fill(&mut self) {
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
    pub(super) fn note(&mut self, line: String) {
        if !self.log.iter().rev().take(8).any(|seen| *seen == line) {
            eprintln!("guestfb kms: {line}");
            self.log.push(line);
        }
    }

    /// Decides how `export` reaches the plane.
    pub(super) fn choose_path(
        &self,
        export: &ExportedFramebuffer,
    ) -> Result<ScanoutPath, KmsError> {
        let layout = export.layout();
        if !export.has_dmabuf()? {
            return Ok(ScanoutPath::Copy(CopyReason::NoDmaBuf));
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

    pub(super) fn gbm_device(&mut self) -> Option<&gbm::Device<Card>> {
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

    pub(super) fn copy_buffer(&mut self, width: u32, height: u32) -> Result<CopyBuffer, KmsError> {
        if let Some(device) = self.gbm_device() {
            match device.create_buffer_object::<()>(
                width,
                height,
                gbm::Format::Xrgb8888,
                gbm::BufferObjectFlags::SCANOUT | gbm::BufferObjectFlags::LINEAR,
            ) {
                Ok(bo) => {
                    self.note(format!(
                        "copy path: gbm buffer object {width}x{height} XRGB8888 SCANOUT|LINEAR"
                    ));
                    return Ok(CopyBuffer::Gbm(bo));
                }
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

    pub(super) fn direct_scanout(
        &self,
        export: &ExportedFramebuffer,
    ) -> Result<(Fb, Gem, Rect), KmsError> {
        with_export_image(export, |image, source| {
            if source != ImageSource::DmaBuf {
                // choose_path took the copy path for an export without a udmabuf.
                return Err(KmsError::Ioctl {
                    what: format!("buffer {} has no dma-buf to scan out", export.buffer_id()),
                    source: io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            // The planes of an export share its one udmabuf: one GEM handle for all.
            let gem = self
                .card
                .prime_fd_to_buffer(image.planes[0].fd)
                .map(|handle| Gem {
                    card: self.card.clone(),
                    handle,
                })
                .map_err(|source| self.card.classify("DRM_IOCTL_PRIME_FD_TO_HANDLE", source))?;
            let mut planar = Planar {
                size: (image.width, image.height),
                format: image.format.fourcc(),
                modifier: match image.modifier {
                    Modifier::Implicit => None,
                    Modifier::Explicit(modifier) => Some(modifier),
                },
                handles: [None; 4],
                pitches: [0; 4],
                offsets: [0; 4],
            };
            for (index, plane) in image.planes.iter().enumerate().take(4) {
                planar.handles[index] = Some(gem.handle);
                planar.pitches[index] = plane.stride;
                planar.offsets[index] = plane.offset;
            }
            let fb = add_fb2(&self.card, &planar)?;
            // The plane reads framebuffer rows: its source rect is the visible rect in
            // memory rows (REFLECT_Y turns a bottom-up picture).
            Ok((fb, gem, image.visible_in_memory()))
        })
        .map_err(|error| match error {
            DmaBufImageError::Export(error) => KmsError::from(error),
            other => KmsError::Ioctl {
                what: format!("ADDFB2: {other}"),
                source: io::Error::from_raw_os_error(libc::EOVERFLOW),
            },
        })?
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
                let (fb, gem, src) = self.direct_scanout(export)?;
                let rotation = if layout.y0_top() {
                    None
                } else {
                    Some(ROTATE_0 | REFLECT_Y)
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
    pub(super) fn show(&mut self, mut scanout: Scanout) -> Result<Scanout, KmsError> {
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
    pub(super) fn commit_scanout(&mut self, scanout: &Scanout, test: bool) -> Result<(), KmsError> {
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
    pub(super) fn commit_error(&self, what: &str, source: io::Error) -> KmsError {
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
    pub(super) fn wait_flip(&mut self) -> Result<(), KmsError> {
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
    pub(super) fn commit_blocking(&self, scanout: Option<&Scanout>) -> Result<(), KmsError> {
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
