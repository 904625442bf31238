//! The linux-dmabuf passthrough presenter: the export's dma-buf becomes a `wl_buffer`
//! (`zwp_linux_dmabuf_v1`) that the compositor samples or scans out itself. No GL of
//! ours, no copy.
//!
//! Formats come from the compositor's default feedback (v4) where offered, else from the
//! `modifier` events (v3). A format/modifier the compositor does not list is refused
//! with [`PassthroughError::NotOffered`] before anything is sent, so the caller can fall
//! back to the EGL or shm path. Buffers are created with `create` and the
//! `created`/`failed` answer is awaited (one round trip per new generation), so an
//! import failure is an error value, not a protocol error that kills the connection.
//!
//! Surfaces as in the shm presenter: the toplevel shows one black pixel stretched by a
//! viewport (the bars); a desynchronised subsurface shows the frame, cropped to the
//! visible rect and scaled to fit by its own viewport. `y0_top == false` is shown with
//! the `flipped_180` buffer transform (a vertical flip). Host-only fallback: without `/dev/udmabuf` a single-piece
//! memfd export is sent as a linear dma-buf (see [`crate::import::dmabuf`]).
//!
//! Back-pressure: the compositor reads the guest's memory itself, whenever it repaints
//! (weston's GL renderer samples the dma-buf at repaint, after our frame callback), so a
//! frame callback does not mean the buffer is free. A buffer is free once the compositor
//! sends `wl_buffer.release`: [`DmaBufPresenter::is_released`] says so per buffer id and
//! [`PresenterEvent::BufferReleased`] reports it. A guest that double-buffers draws only
//! into a released buffer; one live buffer, attached again and again, is never released
//! and tears.

use std::collections::{BTreeSet, HashMap};

use smithay_client_toolkit::compositor::{CompositorState, FrameCallbackData};
use smithay_client_toolkit::dmabuf::{DmabufFeedback, DmabufHandler, DmabufState};
use smithay_client_toolkit::shm::Shm;
use wayland_client::backend::ObjectId;
use wayland_client::protocol::{wl_buffer, wl_output};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1, zwp_linux_dmabuf_feedback_v1,
};

use super::presenter::sealed::impl_window;
use super::window::{self, missing, window_handlers, Client, CoreOptions, WindowCore};
use super::{
    PresentError, PresentPath, Presenter, PresenterEvent, PresenterOptions, ShowError, Shown,
};
use crate::export::ExportedFramebuffer;
use crate::format::{Modifier, PixelFormat};
use crate::import::dmabuf::{with_export_image, DmaBufImageError};
use crate::rect::Rect;

/// `DRM_FORMAT_MOD_INVALID`: the compositor takes the buffer with an implicit layout.
const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// Why the passthrough presenter could not show a frame.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// The Wayland side failed.
    #[error(transparent)]
    Wayland(#[from] PresentError),
    /// The export could not be lent as a dma-buf.
    #[error(transparent)]
    Source(#[from] DmaBufImageError),
    /// The compositor does not take this format/modifier as a dma-buf: use the EGL or
    /// shm path.
    #[error(
        "the compositor does not offer {format} with modifier {modifier:#x} through \
         zwp_linux_dmabuf_v1 (offered: {offered})"
    )]
    NotOffered {
        /// The format.
        format: PixelFormat,
        /// The raw modifier asked for.
        modifier: u64,
        /// What the compositor offers, as text.
        offered: String,
    },
    /// The compositor answered `failed` to the buffer's creation.
    #[error("the compositor refused {format} {width}x{height} as a dma-buf buffer (failed)")]
    CreateFailed {
        /// Format.
        format: PixelFormat,
        /// Backing width.
        width: u32,
        /// Backing height.
        height: u32,
    },
    /// A size that does not fit the protocol's i32.
    #[error("backing size {width}x{height} does not fit the protocol")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// What a `create` request turned into.
#[derive(Debug)]
enum Creation {
    Pending,
    Created(wl_buffer::WlBuffer),
    Failed,
}

/// A cached `wl_buffer` of one export generation.
#[derive(Debug)]
struct CachedBuffer {
    generation: u64,
    buffer: wl_buffer::WlBuffer,
}

#[derive(Debug)]
struct App {
    /// The window; its letterbox's picture is the visible rect now shown.
    core: WindowCore,
    dmabuf: DmabufState,
    /// (fourcc, modifier) pairs from the v4 default feedback, once it arrived.
    feedback_formats: Option<BTreeSet<(u32, u64)>>,
    feedback: Option<zwp_linux_dmabuf_feedback_v1::ZwpLinuxDmabufFeedbackV1>,
    creations: HashMap<u32, Creation>,
    /// wl_buffers attached and not yet released by the compositor: (buffer id,
    /// generation).
    held: HashMap<ObjectId, (u64, u64)>,
}

impl App {
    fn offers(&self, fourcc: u32, modifier: u64) -> bool {
        match &self.feedback_formats {
            Some(formats) => formats.contains(&(fourcc, modifier)),
            None => self
                .dmabuf
                .modifiers()
                .iter()
                .any(|f| f.format == fourcc && f.modifier == modifier),
        }
    }

    fn offered(&self) -> Vec<(u32, u64)> {
        match &self.feedback_formats {
            Some(formats) => formats.iter().copied().collect(),
            None => {
                let set: BTreeSet<(u32, u64)> = self
                    .dmabuf
                    .modifiers()
                    .iter()
                    .map(|f| (f.format, f.modifier))
                    .collect();
                set.into_iter().collect()
            }
        }
    }
}

/// Shows exports by handing their dma-buf to the compositor (passthrough).
#[derive(Debug)]
pub struct DmaBufPresenter {
    cache: HashMap<u64, CachedBuffer>,
    transform: Option<wl_output::Transform>,
    client: Client<App>,
}

impl DmaBufPresenter {
    /// Connects to the compositor of [`PresenterOptions::socket`] and opens the window.
    /// Fails with [`PresentError::MissingGlobal`] when the compositor has no
    /// `zwp_linux_dmabuf_v1` (v3 or later).
    pub fn connect(options: PresenterOptions) -> Result<Self, PresentError> {
        let (conn, globals, queue, qh) = window::open::<App>(options.socket.as_deref())?;
        let dmabuf = DmabufState::new(&globals, &qh);
        let Some(version) = dmabuf.version() else {
            return Err(PresentError::MissingGlobal {
                interface: "zwp_linux_dmabuf_v1",
                reason: "not advertised (version 3 or later needed)".to_owned(),
            });
        };
        let compositor = CompositorState::bind(&globals, &qh).map_err(missing("wl_compositor"))?;
        let core = WindowCore::new(
            &globals,
            &qh,
            &compositor,
            Some(Shm::bind),
            CoreOptions {
                title: options.title,
                app_id: options.app_id,
                default_size: (options.width.max(1), options.height.max(1)),
                report_scale: false,
            },
        )?;
        // v4: the default feedback's format table; v3: the modifier events.
        let feedback = if version >= 4 {
            dmabuf.get_default_feedback(&qh).ok()
        } else {
            None
        };
        let app = App {
            core,
            dmabuf,
            feedback_formats: None,
            feedback,
            creations: HashMap::new(),
            held: HashMap::new(),
        };
        let mut client = Client::new(conn, queue, app);
        // Formats (v3 events or v4 feedback) and usually the first configure.
        client.roundtrip()?;
        client.roundtrip()?;
        Ok(Self {
            cache: HashMap::new(),
            transform: None,
            client,
        })
    }

    /// The (fourcc, modifier) pairs the compositor takes as dma-bufs.
    pub fn offered_formats(&self) -> Vec<(u32, u64)> {
        self.client.app.offered()
    }

    /// The modifier to send for `format` with the export's `modifier`, if the compositor
    /// takes it: the same explicit modifier, or (for LINEAR or implicit) the implicit
    /// `INVALID` where that is what the compositor lists.
    pub fn accepts(&self, format: PixelFormat, modifier: Modifier) -> Option<u64> {
        let fourcc = format.fourcc() as u32;
        let raw = modifier.raw();
        if self.client.app.offers(fourcc, raw) {
            return Some(raw);
        }
        if (modifier.is_linear() || raw == MOD_INVALID)
            && self.client.app.offers(fourcc, MOD_INVALID)
        {
            return Some(MOD_INVALID);
        }
        if raw == MOD_INVALID && self.client.app.offers(fourcc, 0) {
            return Some(0);
        }
        None
    }

    /// Number of cached `wl_buffer`s.
    pub fn cached_count(&self) -> usize {
        self.cache.len()
    }

    /// Whether the compositor holds no `wl_buffer` of `buffer_id`: never attached, or
    /// released (`wl_buffer.release`) since it was last attached, or forgotten. A guest
    /// buffer may be drawn into only then; the compositor may read it until then.
    pub fn is_released(&self, buffer_id: u64) -> bool {
        !self
            .client
            .app
            .held
            .values()
            .any(|&(id, _)| id == buffer_id)
    }

    /// The `wl_buffer` of `export`, created (and awaited) on a cache miss.
    fn buffer_for(
        &mut self,
        export: &ExportedFramebuffer,
    ) -> Result<wl_buffer::WlBuffer, PassthroughError> {
        if let Some(cached) = self.cache.get(&export.buffer_id()) {
            if cached.generation == export.generation() && !export.is_revoked() {
                return Ok(cached.buffer.clone());
            }
        }
        self.forget(export.buffer_id());
        let layout = export.layout();
        let (width, height) = (layout.width(), layout.height());
        if width > i32::MAX as u32 || height > i32::MAX as u32 {
            return Err(PassthroughError::BadSize { width, height });
        }
        let format = layout.format();
        let modifier = self.accepts(format, layout.modifier()).ok_or_else(|| {
            PassthroughError::NotOffered {
                format,
                modifier: layout.modifier().raw(),
                offered: self
                    .offered_formats()
                    .iter()
                    .map(|&(f, m)| format!("{}/{m:#x}", crate::format::fourcc_name(f)))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })?;
        // Bottom-up frames are flipped with the surface's buffer transform, not the
        // buffer's y_invert flag: weston 14's GL renderer drew y_invert dma-bufs with the
        // memory rows at the picture's bottom edge missing (seen in the host test).
        let flags = zwp_linux_buffer_params_v1::Flags::empty();
        let dmabuf = &self.client.app.dmabuf;
        let qh = &self.client.qh;
        let params = with_export_image(export, |image, _| {
            let params = dmabuf.create_params(qh).map_err(|e| {
                PassthroughError::Wayland(PresentError::MissingGlobal {
                    interface: "zwp_linux_dmabuf_v1",
                    reason: e.to_string(),
                })
            })?;
            for (i, plane) in image.planes.iter().enumerate() {
                params.add(plane.fd, i as u32, plane.offset, plane.stride, modifier);
            }
            Ok::<_, PassthroughError>(params.create(
                width as i32,
                height as i32,
                format.fourcc() as u32,
                flags,
            ))
        })??;
        let key = params.id().protocol_id();
        self.client.app.creations.insert(key, Creation::Pending);
        // The fds went with the request; wait for created/failed.
        while matches!(self.client.app.creations.get(&key), Some(Creation::Pending)) {
            self.client
                .queue
                .roundtrip(&mut self.client.app)
                .map_err(PresentError::from)?;
        }
        params.destroy();
        match self.client.app.creations.remove(&key) {
            Some(Creation::Created(buffer)) => {
                self.cache.insert(
                    export.buffer_id(),
                    CachedBuffer {
                        generation: export.generation(),
                        buffer: buffer.clone(),
                    },
                );
                Ok(buffer)
            }
            _ => Err(PassthroughError::CreateFailed {
                format,
                width,
                height,
            }),
        }
    }

    /// Shows `export` with `damage` (in picture coordinates, `y` from the picture's top;
    /// flipped here into the buffer's memory rows for a bottom-up export; empty damages
    /// one pixel so the frame callback still fires). Call when [`is_ready`](Self::is_ready);
    /// otherwise returns `Ok(false)` and shows nothing.
    pub fn present(
        &mut self,
        export: &ExportedFramebuffer,
        damage: &[Rect],
    ) -> Result<bool, PassthroughError> {
        if !self.is_ready() {
            return Ok(false);
        }
        let buffer = self.buffer_for(export)?;
        let layout = export.layout();
        let visible = layout.visible();
        let (width, height) = (layout.width(), layout.height());
        // Source crop in buffer coordinates: memory rows (the buffer transform flips a
        // bottom-up picture after the crop).
        let src_y = layout.visible_in_memory().y;
        let child_viewport = &self.client.app.core.letterbox().child_viewport;
        if visible == Rect::full(width, height) {
            child_viewport.set_source(-1.0, -1.0, -1.0, -1.0);
        } else {
            child_viewport.set_source(
                f64::from(visible.x),
                f64::from(src_y),
                f64::from(visible.width),
                f64::from(visible.height),
            );
        }
        self.client
            .app
            .core
            .set_picture((visible.width, visible.height));
        let child = &self.client.app.core.letterbox().child;
        let transform = if layout.y0_top() {
            wl_output::Transform::Normal
        } else {
            // FLIPPED_180: a vertical flip (mirror about the vertical axis, then 180°).
            wl_output::Transform::Flipped180
        };
        if self.transform != Some(transform) {
            child.set_buffer_transform(transform);
            self.transform = Some(transform);
        }
        child.attach(Some(&buffer), 0, 0);
        // Held from this commit until the compositor releases it.
        self.client
            .app
            .held
            .insert(buffer.id(), (export.buffer_id(), export.generation()));
        let clipped: Vec<Rect> = damage
            .iter()
            .filter_map(|r| r.clip(width, height))
            .map(|r| match layout.y0_top() {
                true => r,
                false => Rect {
                    y: height - r.y - r.height,
                    ..r
                },
            })
            .collect();
        if child.version() < 4 {
            child.damage(0, 0, i32::MAX, i32::MAX);
        } else if clipped.is_empty() {
            child.damage_buffer(0, 0, 1, 1);
        } else {
            for r in &clipped {
                // Buffer coordinates: memory rows, whatever the transform.
                child.damage_buffer(r.x as i32, r.y as i32, r.width as i32, r.height as i32);
            }
        }
        child.frame(&self.client.qh, FrameCallbackData(child.clone()));
        child.commit();
        self.client.app.core.frame_pending = true;
        self.flush()?;
        Ok(true)
    }
}

impl_window!(DmaBufPresenter);

impl Presenter for DmaBufPresenter {
    fn path(&self) -> PresentPath {
        PresentPath::DmaBufPassthrough
    }

    fn show(&mut self, export: &ExportedFramebuffer, damage: &[Rect]) -> Result<Shown, ShowError> {
        match self.present(export, damage) {
            Ok(presented) => Ok(Shown::zero_copy(presented)),
            Err(PassthroughError::Wayland(error)) => Err(ShowError::failed(error)),
            Err(error) => Err(ShowError::Refused(error.into())),
        }
    }

    fn forget(&mut self, buffer_id: u64) -> bool {
        match self.cache.remove(&buffer_id) {
            Some(cached) => {
                self.client.app.held.remove(&cached.buffer.id());
                cached.buffer.destroy();
                let _ = self.flush();
                true
            }
            None => false,
        }
    }

    fn may_draw_into(&self, buffer_id: u64) -> bool {
        self.is_released(buffer_id)
    }
}

impl Drop for DmaBufPresenter {
    fn drop(&mut self) {
        for (_, cached) in self.cache.drain() {
            cached.buffer.destroy();
        }
        if let Some(feedback) = self.client.app.feedback.take() {
            feedback.destroy();
        }
    }
}

impl DmabufHandler for App {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self.dmabuf
    }

    fn dmabuf_feedback(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &zwp_linux_dmabuf_feedback_v1::ZwpLinuxDmabufFeedbackV1,
        feedback: DmabufFeedback,
    ) {
        let table = feedback.format_table();
        let mut formats = BTreeSet::new();
        for tranche in feedback.tranches() {
            for &index in &tranche.formats {
                if let Some(entry) = table.get(usize::from(index)) {
                    formats.insert((entry.format, entry.modifier));
                }
            }
        }
        self.feedback_formats = Some(formats);
    }

    fn created(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        params: &zwp_linux_buffer_params_v1::ZwpLinuxBufferParamsV1,
        buffer: wl_buffer::WlBuffer,
    ) {
        self.creations
            .insert(params.id().protocol_id(), Creation::Created(buffer));
    }

    fn failed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        params: &zwp_linux_buffer_params_v1::ZwpLinuxBufferParamsV1,
    ) {
        self.creations
            .insert(params.id().protocol_id(), Creation::Failed);
    }

    fn released(&mut self, _: &Connection, _: &QueueHandle<Self>, buffer: &wl_buffer::WlBuffer) {
        // The compositor no longer reads this guest buffer: the guest may draw into it.
        if let Some((buffer_id, generation)) = self.held.remove(&buffer.id()) {
            self.core.events.push(PresenterEvent::BufferReleased {
                buffer_id,
                generation,
            });
        }
    }
}

window_handlers!(App, core, shm);

/// The (fourcc, modifier) pairs a compositor takes as dma-bufs, asked without opening a
/// window (binds `zwp_linux_dmabuf_v1` at version 3, whose `modifier` events list them).
///
/// Viewers decide between passthrough, GL and wl_shm with this before they open the
/// one window they will use: opening and closing trial windows flickers on a desktop
/// (and crashed weston 14's kiosk shell here).
pub fn compositor_dmabuf_formats(conn: &Connection) -> Result<Vec<(u32, u64)>, PresentError> {
    use wayland_client::globals::GlobalListContents;
    use wayland_client::protocol::wl_registry;
    use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::{
        self, ZwpLinuxDmabufV1,
    };

    #[derive(Default)]
    struct Formats(BTreeSet<(u32, u64)>);

    impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for Formats {
        fn event(
            _: &mut Self,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    impl Dispatch<ZwpLinuxDmabufV1, ()> for Formats {
        fn event(
            formats: &mut Self,
            _: &ZwpLinuxDmabufV1,
            event: zwp_linux_dmabuf_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            if let zwp_linux_dmabuf_v1::Event::Modifier {
                format,
                modifier_hi,
                modifier_lo,
            } = event
            {
                let modifier = (u64::from(modifier_hi) << 32) | u64::from(modifier_lo);
                formats.0.insert((format, modifier));
            }
        }
    }

    let (globals, mut queue) = window::init_queue::<Formats>(conn)?;
    let dmabuf: ZwpLinuxDmabufV1 = globals
        .bind(&queue.handle(), 3..=3, ())
        .map_err(missing("zwp_linux_dmabuf_v1"))?;
    let mut formats = Formats::default();
    queue.roundtrip(&mut formats)?;
    dmabuf.destroy();
    Ok(formats.0.into_iter().collect())
}
