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
//! sends `wl_buffer.release`: [`DmabufPresenter::is_released`] says so per buffer id and
//! [`PresenterEvent::BufferReleased`] reports it. A guest that double-buffers draws only
//! into a released buffer; one live buffer, attached again and again, is never released
//! and tears.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use smithay_client_toolkit::compositor::{
    CompositorHandler, CompositorState, FrameCallbackData, Region,
};
use smithay_client_toolkit::dmabuf::{DmabufFeedback, DmabufHandler, DmabufState};
use smithay_client_toolkit::output::{OutputHandler, OutputState};
use smithay_client_toolkit::registry::{ProvidesRegistryState, RegistryState};
use smithay_client_toolkit::shell::xdg::window::{
    Window, WindowConfigure, WindowDecorations, WindowHandler,
};
use smithay_client_toolkit::shell::xdg::XdgShell;
use smithay_client_toolkit::shell::WaylandSurface;
use smithay_client_toolkit::shm::slot::{Buffer, SlotPool};
use smithay_client_toolkit::shm::{Shm, ShmHandler};
use smithay_client_toolkit::subcompositor::SubcompositorState;
use smithay_client_toolkit::{delegate_dispatch2, delegate_registry, registry_handlers};
use wayland_client::backend::{ObjectId, WaylandError};
use wayland_client::globals::{registry_queue_init, GlobalError};
use wayland_client::protocol::{wl_buffer, wl_output, wl_shm, wl_subsurface, wl_surface};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1, zwp_linux_dmabuf_feedback_v1,
};
use wayland_protocols::wp::viewporter::client::{wp_viewport, wp_viewporter};

use super::damage::{fit_letterbox, Placement};
use super::shm::poll_readable;
use super::{PresentError, PresenterEvent, WindowOptions};
use crate::export::ExportedFramebuffer;
use crate::format::{Modifier, PixelFormat};
use crate::import::dmabuf::{with_export_image, ExportImageError};
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
    Source(#[from] ExportImageError),
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
    registry: RegistryState,
    outputs: OutputState,
    shm: Shm,
    dmabuf: DmabufState,
    /// (fourcc, modifier) pairs from the v4 default feedback, once it arrived.
    feedback_formats: Option<BTreeSet<(u32, u64)>>,
    feedback: Option<zwp_linux_dmabuf_feedback_v1::ZwpLinuxDmabufFeedbackV1>,
    creations: HashMap<u32, Creation>,
    /// wl_buffers attached and not yet released by the compositor: (buffer id,
    /// generation).
    held: HashMap<ObjectId, (u64, u64)>,
    window: Window,
    parent_viewport: wp_viewport::WpViewport,
    child: wl_surface::WlSurface,
    subsurface: wl_subsurface::WlSubsurface,
    child_viewport: wp_viewport::WpViewport,
    _background_pool: SlotPool,
    background: Buffer,
    background_attached: bool,
    default_size: (u32, u32),
    /// Size of the picture (visible rect) now shown, for the letterbox.
    picture: Option<(u32, u32)>,
    window_size: Option<(u32, u32)>,
    scale: u32,
    configured: bool,
    frame_pending: bool,
    closed: bool,
    events: Vec<PresenterEvent>,
}

impl App {
    fn placement(&self) -> Option<Placement> {
        Some(fit_letterbox(self.picture?, self.window_size?))
    }

    fn apply_layout(&mut self) {
        let Some((width, height)) = self.window_size else {
            return;
        };
        if let Some(place) = self.placement() {
            self.child_viewport
                .set_destination(place.width as i32, place.height as i32);
            self.child.commit();
            self.subsurface.set_position(place.x as i32, place.y as i32);
        }
        let parent = self.window.wl_surface();
        if !self.background_attached && self.background.attach_to(parent).is_ok() {
            self.background_attached = true;
        }
        parent.damage_buffer(0, 0, 1, 1);
        self.parent_viewport
            .set_destination(width as i32, height as i32);
        parent.commit();
    }

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
pub struct DmabufPresenter {
    cache: HashMap<u64, CachedBuffer>,
    transform: Option<wl_output::Transform>,
    queue: EventQueue<App>,
    qh: QueueHandle<App>,
    app: App,
    conn: Connection,
}

fn missing(
    interface: &'static str,
) -> impl FnOnce(wayland_client::globals::BindError) -> PresentError {
    move |error| PresentError::MissingGlobal {
        interface,
        reason: error.to_string(),
    }
}

impl DmabufPresenter {
    /// Connects to the compositor named by `WAYLAND_DISPLAY` and opens the window.
    pub fn connect(options: WindowOptions) -> Result<Self, PresentError> {
        Self::from_connection(Connection::connect_to_env()?, options)
    }

    /// Connects to the compositor socket at `socket`.
    pub fn connect_to(socket: &Path, options: WindowOptions) -> Result<Self, PresentError> {
        let stream = UnixStream::connect(socket).map_err(|source| PresentError::Socket {
            path: socket.to_owned(),
            source,
        })?;
        Self::from_connection(Connection::from_socket(stream)?, options)
    }

    /// Opens the window on an existing connection. Fails with
    /// [`PresentError::MissingGlobal`] when the compositor has no `zwp_linux_dmabuf_v1`
    /// (v3 or later).
    pub fn from_connection(conn: Connection, options: WindowOptions) -> Result<Self, PresentError> {
        let (globals, mut queue) =
            registry_queue_init::<App>(&conn).map_err(|error| match error {
                GlobalError::Backend(backend) => PresentError::from(backend),
                GlobalError::InvalidId(id) => PresentError::Protocol(id.to_string()),
            })?;
        let qh = queue.handle();
        let dmabuf = DmabufState::new(&globals, &qh);
        let Some(version) = dmabuf.version() else {
            return Err(PresentError::MissingGlobal {
                interface: "zwp_linux_dmabuf_v1",
                reason: "not advertised (version 3 or later needed)".to_owned(),
            });
        };
        let compositor = CompositorState::bind(&globals, &qh).map_err(missing("wl_compositor"))?;
        let subcompositor =
            SubcompositorState::bind(compositor.wl_compositor().clone(), &globals, &qh)
                .map_err(missing("wl_subcompositor"))?;
        let xdg_shell = XdgShell::bind(&globals, &qh).map_err(missing("xdg_wm_base"))?;
        let shm = Shm::bind(&globals, &qh).map_err(missing("wl_shm"))?;
        let viewporter: wp_viewporter::WpViewporter = globals
            .bind(&qh, 1..=1, ())
            .map_err(missing("wp_viewporter"))?;
        let surface = compositor.create_surface(&qh);
        let window = xdg_shell.create_window(surface, WindowDecorations::RequestServer, &qh);
        window.set_title(options.title);
        window.set_app_id(options.app_id);
        let (subsurface, child) = subcompositor.create_subsurface(window.wl_surface().clone(), &qh);
        subsurface.set_desync();
        if let Ok(region) = Region::new(&compositor) {
            child.set_input_region(Some(region.wl_region()));
        }
        let parent_viewport = viewporter.get_viewport(window.wl_surface(), &qh, ());
        let child_viewport = viewporter.get_viewport(&child, &qh, ());
        window.commit();
        let mut background_pool =
            SlotPool::new(64, &shm).map_err(|error| PresentError::Pool(error.to_string()))?;
        let (background, pixel) = background_pool
            .create_buffer(1, 1, 4, wl_shm::Format::Xrgb8888)
            .map_err(|error| PresentError::Pool(error.to_string()))?;
        pixel.fill(0);
        // v4: the default feedback's format table; v3: the modifier events.
        let feedback = if version >= 4 {
            dmabuf.get_default_feedback(&qh).ok()
        } else {
            None
        };
        let mut app = App {
            registry: RegistryState::new(&globals),
            outputs: OutputState::new(&globals, &qh),
            shm,
            dmabuf,
            feedback_formats: None,
            feedback,
            creations: HashMap::new(),
            held: HashMap::new(),
            window,
            parent_viewport,
            child,
            subsurface,
            child_viewport,
            _background_pool: background_pool,
            background,
            background_attached: false,
            default_size: (options.width.max(1), options.height.max(1)),
            picture: None,
            window_size: None,
            scale: 1,
            configured: false,
            frame_pending: false,
            closed: false,
            events: Vec::new(),
        };
        // Formats (v3 events or v4 feedback) and usually the first configure.
        queue.roundtrip(&mut app)?;
        queue.roundtrip(&mut app)?;
        Ok(Self {
            cache: HashMap::new(),
            transform: None,
            queue,
            qh,
            app,
            conn,
        })
    }

    /// The (fourcc, modifier) pairs the compositor takes as dma-bufs.
    pub fn offered_formats(&self) -> Vec<(u32, u64)> {
        self.app.offered()
    }

    /// The modifier to send for `format` with the export's `modifier`, if the compositor
    /// takes it: the same explicit modifier, or (for LINEAR or implicit) the implicit
    /// `INVALID` where that is what the compositor lists.
    pub fn accepts(&self, format: PixelFormat, modifier: Modifier) -> Option<u64> {
        let fourcc = format.fourcc() as u32;
        let raw = modifier.raw();
        if self.app.offers(fourcc, raw) {
            return Some(raw);
        }
        if (modifier.is_linear() || raw == MOD_INVALID) && self.app.offers(fourcc, MOD_INVALID) {
            return Some(MOD_INVALID);
        }
        if raw == MOD_INVALID && self.app.offers(fourcc, 0) {
            return Some(0);
        }
        None
    }

    /// Whether the compositor asked to close the window.
    pub fn is_closed(&self) -> bool {
        self.app.closed
    }

    /// Whether a frame may be presented now.
    pub fn is_ready(&self) -> bool {
        self.app.configured && !self.app.frame_pending && !self.app.closed
    }

    /// The window size in logical pixels, once configured.
    pub fn window_size(&self) -> Option<(u32, u32)> {
        self.app.window_size
    }

    /// The connection's fd, for callers that poll several sources.
    pub fn connection_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }

    /// Number of cached `wl_buffer`s.
    pub fn cached_count(&self) -> usize {
        self.cache.len()
    }

    /// Whether the compositor holds no `wl_buffer` of `buffer_id`: never attached, or
    /// released (`wl_buffer.release`) since it was last attached, or forgotten. A guest
    /// buffer may be drawn into only then; the compositor may read it until then.
    pub fn is_released(&self, buffer_id: u64) -> bool {
        !self.app.held.values().any(|&(id, _)| id == buffer_id)
    }

    /// Destroys the cached `wl_buffer` of a buffer (revoked or replaced export).
    ///
    /// A buffer the compositor still holds counts as released afterwards, though the
    /// compositor may still read its memory until its next repaint.
    pub fn forget(&mut self, buffer_id: u64) -> bool {
        match self.cache.remove(&buffer_id) {
            Some(cached) => {
                self.app.held.remove(&cached.buffer.id());
                cached.buffer.destroy();
                let _ = self.flush();
                true
            }
            None => false,
        }
    }

    /// Sends buffered requests to the compositor.
    pub fn flush(&self) -> Result<(), PresentError> {
        match self.conn.flush() {
            Ok(()) => Ok(()),
            Err(WaylandError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Handles compositor events, waiting up to `timeout` for one.
    pub fn dispatch(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Vec<PresenterEvent>, PresentError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.queue.dispatch_pending(&mut self.app)?;
            self.flush()?;
            if !self.app.events.is_empty() {
                break;
            }
            let Some(guard) = self.queue.prepare_read() else {
                continue;
            };
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !poll_readable(guard.connection_fd(), remaining)? {
                break;
            }
            match guard.read() {
                Ok(_) => {}
                Err(WaylandError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(std::mem::take(&mut self.app.events))
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
        let dmabuf = &self.app.dmabuf;
        let qh = &self.qh;
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
        self.app.creations.insert(key, Creation::Pending);
        // The fds went with the request; wait for created/failed.
        while matches!(self.app.creations.get(&key), Some(Creation::Pending)) {
            self.queue
                .roundtrip(&mut self.app)
                .map_err(PresentError::from)?;
        }
        params.destroy();
        match self.app.creations.remove(&key) {
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

    /// Shows `export` with `damage` (in memory rows of the backing; empty damages one
    /// pixel so the frame callback still fires). Call when [`is_ready`](Self::is_ready);
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
        // Source crop in surface coordinates (after the flip the picture's top row is
        // the backing's last memory row).
        let src_y = if layout.y0_top() {
            visible.y
        } else {
            height - visible.y - visible.height
        };
        if visible == Rect::full(width, height) {
            self.app.child_viewport.set_source(-1.0, -1.0, -1.0, -1.0);
        } else {
            self.app.child_viewport.set_source(
                f64::from(visible.x),
                f64::from(src_y),
                f64::from(visible.width),
                f64::from(visible.height),
            );
        }
        let picture = (visible.width, visible.height);
        if self.app.picture != Some(picture) {
            self.app.picture = Some(picture);
            self.app.apply_layout();
        }
        let child = &self.app.child;
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
        self.app
            .held
            .insert(buffer.id(), (export.buffer_id(), export.generation()));
        let clipped: Vec<Rect> = damage
            .iter()
            .filter_map(|r| r.clip(width, height))
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
        child.frame(&self.qh, FrameCallbackData(child.clone()));
        child.commit();
        self.app.frame_pending = true;
        self.flush()?;
        Ok(true)
    }
}

impl Drop for DmabufPresenter {
    fn drop(&mut self) {
        for (_, cached) in self.cache.drain() {
            cached.buffer.destroy();
        }
        if let Some(feedback) = self.app.feedback.take() {
            feedback.destroy();
        }
        self.app.child_viewport.destroy();
        self.app.parent_viewport.destroy();
        self.app.subsurface.destroy();
        self.app.child.destroy();
        let _ = self.conn.flush();
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
            self.events.push(PresenterEvent::BufferReleased {
                buffer_id,
                generation,
            });
        }
    }
}

impl CompositorHandler for App {
    fn scale_factor_changed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        surface: &wl_surface::WlSurface,
        new_factor: i32,
    ) {
        if surface == self.window.wl_surface() {
            self.scale = new_factor.max(1) as u32;
        }
    }

    fn transform_changed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: wl_output::Transform,
    ) {
    }

    fn frame(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        surface: &wl_surface::WlSurface,
        time: u32,
    ) {
        if *surface == self.child {
            self.frame_pending = false;
            self.events
                .push(PresenterEvent::FrameDone { time_ms: time });
        }
    }

    fn surface_enter(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }

    fn surface_leave(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }
}

impl OutputHandler for App {
    fn output_state(&mut self) -> &mut OutputState {
        &mut self.outputs
    }

    fn new_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}

    fn update_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}

    fn output_destroyed(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
}

impl WindowHandler for App {
    fn request_close(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &Window) {
        if !self.closed {
            self.closed = true;
            self.events.push(PresenterEvent::Close);
        }
    }

    fn configure(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &Window,
        configure: WindowConfigure,
        _: u32,
    ) {
        let (default_width, default_height) = self.window_size.unwrap_or(self.default_size);
        let size = (
            configure.new_size.0.map_or(default_width, |w| w.get()),
            configure.new_size.1.map_or(default_height, |h| h.get()),
        );
        let changed = !self.configured || self.window_size != Some(size);
        self.window_size = Some(size);
        self.configured = true;
        self.apply_layout();
        if changed {
            self.events.push(PresenterEvent::Configure {
                width: size.0,
                height: size.1,
                scale: self.scale,
            });
        }
    }
}

impl ShmHandler for App {
    fn shm_state(&mut self) -> &mut Shm {
        &mut self.shm
    }
}

impl ProvidesRegistryState for App {
    fn registry(&mut self) -> &mut RegistryState {
        &mut self.registry
    }

    registry_handlers!(OutputState);
}

impl Dispatch<wp_viewporter::WpViewporter, ()> for App {
    fn event(
        _: &mut Self,
        _: &wp_viewporter::WpViewporter,
        _: wp_viewporter::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<wp_viewport::WpViewport, ()> for App {
    fn event(
        _: &mut Self,
        _: &wp_viewport::WpViewport,
        _: wp_viewport::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

delegate_registry!(App);
delegate_dispatch2!(App);

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

    let (globals, mut queue) =
        registry_queue_init::<Formats>(conn).map_err(|error| match error {
            GlobalError::Backend(backend) => PresentError::from(backend),
            GlobalError::InvalidId(id) => PresentError::Protocol(id.to_string()),
        })?;
    let dmabuf: ZwpLinuxDmabufV1 = globals
        .bind(&queue.handle(), 3..=3, ())
        .map_err(missing("zwp_linux_dmabuf_v1"))?;
    let mut formats = Formats::default();
    queue.roundtrip(&mut formats)?;
    dmabuf.destroy();
    Ok(formats.0.into_iter().collect())
}
