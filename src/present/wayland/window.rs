//! The window the Wayland presenters share: an xdg-toplevel, its configure and close
//! bookkeeping, frame-callback pacing, the event list and, for the wl_shm and
//! passthrough presenters, the letterbox (a black 1×1 background stretched by a viewport
//! to the window, and a desynchronised subsurface showing the picture, scaled by its own
//! viewport to fit and centred).
//!
//! Each presenter's `App` holds a [`WindowCore`] and gets the repetitive sctk handler
//! impls from [`window_handlers!`].

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use smithay_client_toolkit::compositor::{CompositorState, Region, SurfaceData};
use smithay_client_toolkit::globals::GlobalData;
use smithay_client_toolkit::output::{OutputData, OutputState};
use smithay_client_toolkit::reexports::protocols::xdg::decoration::zv1::client::{
    zxdg_decoration_manager_v1, zxdg_toplevel_decoration_v1,
};
use smithay_client_toolkit::reexports::protocols::xdg::dialog::v1::client::xdg_wm_dialog_v1;
use smithay_client_toolkit::reexports::protocols::xdg::shell::client::{
    xdg_surface, xdg_toplevel, xdg_wm_base,
};
use smithay_client_toolkit::reexports::protocols::xdg::xdg_output::zv1::client::{
    zxdg_output_manager_v1, zxdg_output_v1,
};
use smithay_client_toolkit::registry::RegistryState;
use smithay_client_toolkit::shell::xdg::window::{
    Window, WindowConfigure, WindowData, WindowDecorations, WindowHandler,
};
use smithay_client_toolkit::shell::xdg::XdgShell;
use smithay_client_toolkit::shell::WaylandSurface;
use smithay_client_toolkit::shm::slot::{Buffer, SlotPool};
use smithay_client_toolkit::shm::Shm;
use smithay_client_toolkit::subcompositor::{SubcompositorState, SubsurfaceData};
use wayland_client::backend::WaylandError;
use wayland_client::globals::{
    registry_queue_init, BindError, GlobalError, GlobalList, GlobalListContents,
};
use wayland_client::protocol::{
    wl_output, wl_registry, wl_shm, wl_subcompositor, wl_subsurface, wl_surface,
};
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::viewporter::client::{wp_viewport, wp_viewporter};

use super::damage::{fit_letterbox, Placement};
use super::{PresentError, PresenterEvent};

/// Maps a failed global bind to [`PresentError::MissingGlobal`].
pub(crate) fn missing(interface: &'static str) -> impl FnOnce(BindError) -> PresentError {
    move |error| PresentError::MissingGlobal {
        interface,
        reason: error.to_string(),
    }
}

/// Connects to the compositor socket at `socket`, or to the one `WAYLAND_DISPLAY` names.
pub(crate) fn connect(socket: Option<&Path>) -> Result<Connection, PresentError> {
    let Some(socket) = socket else {
        return Ok(Connection::connect_to_env()?);
    };
    let stream = UnixStream::connect(socket).map_err(|source| PresentError::Socket {
        path: socket.to_owned(),
        source,
    })?;
    Ok(Connection::from_socket(stream)?)
}

/// A new connection as a presenter's constructor starts from: the connection (see
/// [`connect`]), the registry's globals, and an event queue for `D` with its handle.
pub(crate) type Opened<D> = (Connection, GlobalList, EventQueue<D>, QueueHandle<D>);

/// Connects and makes the registry's globals and an event queue for `D`.
pub(crate) fn open<D>(socket: Option<&Path>) -> Result<Opened<D>, PresentError>
where
    D: Dispatch<wl_registry::WlRegistry, GlobalListContents> + 'static,
{
    let conn = connect(socket)?;
    let (globals, queue) = init_queue::<D>(&conn)?;
    let qh = queue.handle();
    Ok((conn, globals, queue, qh))
}

/// The registry's globals and a fresh event queue for `D`.
pub(crate) fn init_queue<D>(conn: &Connection) -> Result<(GlobalList, EventQueue<D>), PresentError>
where
    D: Dispatch<wl_registry::WlRegistry, GlobalListContents> + 'static,
{
    registry_queue_init::<D>(conn).map_err(|error| match error {
        GlobalError::Backend(backend) => PresentError::from(backend),
        GlobalError::InvalidId(id) => PresentError::Protocol(id.to_string()),
    })
}

/// Sends buffered requests to the compositor.
pub(crate) fn flush(conn: &Connection) -> Result<(), PresentError> {
    match conn.flush() {
        Ok(()) => Ok(()),
        // The socket is full; the rest goes with the next flush.
        Err(WaylandError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Dispatches events into `state`, waiting up to `timeout` (`None`: forever), until
/// `done(state)` after a dispatch or the timeout.
pub(crate) fn dispatch_until<D>(
    conn: &Connection,
    queue: &mut EventQueue<D>,
    state: &mut D,
    timeout: Option<Duration>,
    mut done: impl FnMut(&D) -> bool,
) -> Result<(), PresentError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        queue.dispatch_pending(state)?;
        // Handlers may have sent requests (acks, commits).
        flush(conn)?;
        if done(state) {
            return Ok(());
        }
        let Some(guard) = queue.prepare_read() else {
            continue;
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if !poll_readable(guard.connection_fd(), remaining)? {
            return Ok(()); // timed out; dropping the guard cancels the read
        }
        match guard.read() {
            Ok(_) => {}
            Err(WaylandError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// The state a presenter's event queue dispatches into (its `App`): it holds the
/// window. [`window_handlers!`] implements it.
pub(crate) trait WindowApp: Sized + 'static {
    fn core(&self) -> &WindowCore;
    fn core_mut(&mut self) -> &mut WindowCore;
}

/// A presenter's end of the connection: the state its queue dispatches into, the queue
/// and the connection. Dropped after whatever the presenter drops first (imports, GL
/// objects): the letterbox's surfaces are destroyed and the last requests flushed.
#[derive(Debug)]
pub(crate) struct Client<A: WindowApp> {
    pub(crate) app: A,
    pub(crate) queue: EventQueue<A>,
    pub(crate) qh: QueueHandle<A>,
    pub(crate) conn: Connection,
}

impl<A: WindowApp> Client<A> {
    /// A client of `conn` dispatching `queue` into `app`.
    pub(crate) fn new(conn: Connection, queue: EventQueue<A>, app: A) -> Self {
        let qh = queue.handle();
        Self {
            app,
            queue,
            qh,
            conn,
        }
    }

    /// Sends what is buffered and dispatches until the compositor answered it.
    pub(crate) fn roundtrip(&mut self) -> Result<(), PresentError> {
        self.queue.roundtrip(&mut self.app)?;
        Ok(())
    }

    /// Dispatches events, waiting up to `timeout` (`None`: forever) until the window
    /// has events or `wake(app)`, and returns the window's events.
    pub(crate) fn dispatch(
        &mut self,
        timeout: Option<Duration>,
        mut wake: impl FnMut(&A) -> bool,
    ) -> Result<Vec<PresenterEvent>, PresentError> {
        dispatch_until(&self.conn, &mut self.queue, &mut self.app, timeout, |app| {
            !app.core().events.is_empty() || wake(app)
        })?;
        Ok(self.app.core_mut().take_events())
    }

    /// The window and the connection, for [`Presenter`](super::Presenter)'s provided
    /// methods.
    pub(crate) fn window(&self) -> (&WindowCore, &Connection) {
        (self.app.core(), &self.conn)
    }
}

impl<A: WindowApp> Drop for Client<A> {
    fn drop(&mut self) {
        self.app.core_mut().destroy();
        // The window and buffers destroy themselves; a dead connection makes all no-ops.
        let _ = self.conn.flush();
    }
}

/// Waits until `fd` is readable; false on timeout.
pub(crate) fn poll_readable(
    fd: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> Result<bool, PresentError> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let timespec = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, timespec.as_ref()) {
            Ok(0) => return Ok(false),
            // Readable, or hung up / errored: the read reports which.
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(PresentError::ConnectionLost(errno.into())),
        }
    }
}

/// The picture's subsurface over a black background, both scaled by viewports.
#[derive(Debug)]
pub(crate) struct Letterbox {
    pub(crate) shm: Shm,
    parent_viewport: wp_viewport::WpViewport,
    pub(crate) child: wl_surface::WlSurface,
    subsurface: wl_subsurface::WlSubsurface,
    pub(crate) child_viewport: wp_viewport::WpViewport,
    /// The black pixel's own pool, never resized (held for the presenter's lifetime).
    _background_pool: SlotPool,
    background: Buffer,
    background_attached: bool,
    /// Size of the picture now shown, for the layout.
    pub(crate) picture: Option<(u32, u32)>,
}

/// `Shm::bind` for the presenter's state.
pub(crate) type BindShm<D> = fn(&GlobalList, &QueueHandle<D>) -> Result<Shm, BindError>;

/// How the window is set up.
#[derive(Debug)]
pub(crate) struct CoreOptions {
    pub(crate) title: String,
    pub(crate) app_id: String,
    /// The window size when the compositor lets the client choose.
    pub(crate) default_size: (u32, u32),
    /// Report a changed output scale as [`PresenterEvent::Configure`].
    pub(crate) report_scale: bool,
}

/// The window state shared by the presenters.
#[derive(Debug)]
pub struct WindowCore {
    pub(crate) registry: RegistryState,
    pub(crate) outputs: OutputState,
    pub(crate) window: Window,
    pub(crate) letterbox: Option<Letterbox>,
    pub(crate) default_size: (u32, u32),
    pub(crate) window_size: Option<(u32, u32)>,
    pub(crate) scale: u32,
    report_scale: bool,
    pub(crate) configured: bool,
    pub(crate) frame_pending: bool,
    pub(crate) closed: bool,
    /// The window changed size or scale since the presenter last cleared this.
    pub(crate) resized: bool,
    pub(crate) events: Vec<PresenterEvent>,
}

impl WindowCore {
    /// Creates the window and commits it once without a buffer, so the compositor
    /// answers with a configure. With `bind_shm` (`Shm::bind`) the picture is shown in a
    /// letterbox (wl_shm and wp_viewporter are bound).
    pub(crate) fn new<D>(
        globals: &GlobalList,
        qh: &QueueHandle<D>,
        compositor: &CompositorState,
        bind_shm: Option<BindShm<D>>,
        options: CoreOptions,
    ) -> Result<Self, PresentError>
    where
        D: Dispatch<wl_subcompositor::WlSubcompositor, GlobalData>
            + Dispatch<xdg_wm_base::XdgWmBase, GlobalData>
            + Dispatch<xdg_wm_dialog_v1::XdgWmDialogV1, GlobalData>
            + Dispatch<zxdg_decoration_manager_v1::ZxdgDecorationManagerV1, GlobalData>
            + Dispatch<wl_surface::WlSurface, SurfaceData<()>>
            + Dispatch<wl_subsurface::WlSubsurface, SubsurfaceData>
            + Dispatch<xdg_surface::XdgSurface, WindowData>
            + Dispatch<xdg_toplevel::XdgToplevel, WindowData>
            + Dispatch<zxdg_toplevel_decoration_v1::ZxdgToplevelDecorationV1, WindowData>
            + Dispatch<wp_viewporter::WpViewporter, ()>
            + Dispatch<wp_viewport::WpViewport, ()>
            + Dispatch<wl_output::WlOutput, OutputData>
            + Dispatch<zxdg_output_v1::ZxdgOutputV1, OutputData>
            + Dispatch<zxdg_output_manager_v1::ZxdgOutputManagerV1, GlobalData>
            + WindowHandler
            + 'static,
    {
        let subcompositor = if let Some(bind_shm) = bind_shm {
            Some((
                SubcompositorState::bind(compositor.wl_compositor().clone(), globals, qh)
                    .map_err(missing("wl_subcompositor"))?,
                bind_shm,
            ))
        } else {
            None
        };
        let xdg_shell = XdgShell::bind(globals, qh).map_err(missing("xdg_wm_base"))?;
        let surface = compositor.create_surface(qh);
        let window = xdg_shell.create_window(surface, WindowDecorations::RequestServer, qh);
        window.set_title(options.title);
        window.set_app_id(options.app_id);
        let letterbox = match subcompositor {
            Some((subcompositor, bind_shm)) => Some(Letterbox::new(
                globals,
                qh,
                compositor,
                &subcompositor,
                bind_shm,
                &window,
            )?),
            None => {
                // The first commit carries no buffer; the compositor answers with a
                // configure.
                window.commit();
                None
            }
        };
        Ok(Self {
            registry: RegistryState::new(globals),
            outputs: OutputState::new(globals, qh),
            window,
            letterbox,
            default_size: options.default_size,
            window_size: None,
            scale: 1,
            report_scale: options.report_scale,
            configured: false,
            frame_pending: false,
            closed: false,
            resized: false,
            events: Vec::new(),
        })
    }

    /// Whether a frame may be presented now: configured, open, and the last frame's
    /// callback has fired.
    pub(crate) fn is_ready(&self) -> bool {
        self.configured && !self.frame_pending && !self.closed
    }

    /// The letterbox (only the presenters that create one call this).
    pub(crate) fn letterbox(&self) -> &Letterbox {
        self.letterbox
            .as_ref()
            .expect("this window has a letterbox")
    }

    /// The letterbox, mutably.
    pub(crate) fn letterbox_mut(&mut self) -> &mut Letterbox {
        self.letterbox
            .as_mut()
            .expect("this window has a letterbox")
    }

    /// The surface whose frame callbacks pace the presenter.
    fn frame_surface(&self) -> &wl_surface::WlSurface {
        match &self.letterbox {
            Some(letterbox) => &letterbox.child,
            None => self.window.wl_surface(),
        }
    }

    /// Where the picture sits in the window (logical pixels), once configured.
    pub(crate) fn placement(&self) -> Option<Placement> {
        let picture = self.letterbox.as_ref()?.picture?;
        Some(fit_letterbox(picture, self.window_size?))
    }

    /// Sets the picture size and lays the window out again where it changed (and the
    /// window is configured).
    pub(crate) fn set_picture(&mut self, picture: (u32, u32)) {
        let letterbox = self.letterbox_mut();
        if letterbox.picture != Some(picture) {
            letterbox.picture = Some(picture);
            self.apply_layout();
        }
    }

    /// Sizes the background to the window and places the picture inside it.
    pub(crate) fn apply_layout(&mut self) {
        let Some((width, height)) = self.window_size else {
            return;
        };
        let place = self.placement();
        let Some(letterbox) = &mut self.letterbox else {
            return;
        };
        if let Some(place) = place {
            // Sizes are at most the compositor's i32 window size or the frame size:
            // casts are lossless.
            letterbox
                .child_viewport
                .set_destination(place.width as i32, place.height as i32);
            // Desynchronised: this applies now and keeps the current buffer.
            letterbox.child.commit();
            letterbox
                .subsurface
                .set_position(place.x as i32, place.y as i32);
        }
        let parent = self.window.wl_surface();
        // A fresh buffer is never active, so attaching cannot fail.
        if !letterbox.background_attached && letterbox.background.attach_to(parent).is_ok() {
            letterbox.background_attached = true;
        }
        parent.damage_buffer(0, 0, 1, 1);
        letterbox
            .parent_viewport
            .set_destination(width as i32, height as i32);
        parent.commit();
    }

    fn push_configure(&mut self) {
        if let Some((width, height)) = self.window_size {
            self.resized = true;
            self.events.push(PresenterEvent::Configure {
                width,
                height,
                scale: self.scale,
            });
        }
    }

    /// `xdg_toplevel.configure` (acked by sctk): size the window and report it.
    pub(crate) fn on_configure(&mut self, configure: WindowConfigure) {
        // Under a desktop shell the first size is often (None, None): the client chooses.
        let (default_width, default_height) = self.window_size.unwrap_or(self.default_size);
        let size = (
            configure.new_size.0.map_or(default_width, |w| w.get()),
            configure.new_size.1.map_or(default_height, |h| h.get()),
        );
        let changed = !self.configured || self.window_size != Some(size);
        self.window_size = Some(size);
        self.configured = true;
        // This commit applies the configure.
        self.apply_layout();
        if changed {
            self.push_configure();
        }
    }

    /// The window surface's preferred scale changed.
    pub(crate) fn on_scale(&mut self, surface: &wl_surface::WlSurface, new_factor: i32) {
        if surface != self.window.wl_surface() {
            return;
        }
        let scale = new_factor.max(1) as u32;
        if !self.report_scale {
            self.scale = scale;
        } else if scale != self.scale {
            self.scale = scale;
            if self.configured {
                self.push_configure();
            }
        }
    }

    /// A frame callback fired.
    pub(crate) fn on_frame(&mut self, surface: &wl_surface::WlSurface, time: u32) {
        if surface == self.frame_surface() {
            self.frame_pending = false;
            self.events
                .push(PresenterEvent::FrameDone { time_ms: time });
        }
    }

    /// The compositor asked to close the window.
    pub(crate) fn on_close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.events.push(PresenterEvent::Close);
        }
    }

    /// The events gathered since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<PresenterEvent> {
        std::mem::take(&mut self.events)
    }

    /// Destroys the letterbox's surfaces (the window destroys itself).
    pub(crate) fn destroy(&mut self) {
        if let Some(letterbox) = &self.letterbox {
            letterbox.child_viewport.destroy();
            letterbox.parent_viewport.destroy();
            letterbox.subsurface.destroy();
            letterbox.child.destroy();
        }
    }
}

impl Letterbox {
    fn new<D>(
        globals: &GlobalList,
        qh: &QueueHandle<D>,
        compositor: &CompositorState,
        subcompositor: &SubcompositorState,
        bind_shm: BindShm<D>,
        window: &Window,
    ) -> Result<Self, PresentError>
    where
        D: Dispatch<wl_surface::WlSurface, SurfaceData<()>>
            + Dispatch<wl_subsurface::WlSubsurface, SubsurfaceData>
            + Dispatch<wp_viewporter::WpViewporter, ()>
            + Dispatch<wp_viewport::WpViewport, ()>
            + 'static,
    {
        let shm = bind_shm(globals, qh).map_err(missing("wl_shm"))?;
        let viewporter: wp_viewporter::WpViewporter = globals
            .bind(qh, 1..=1, ())
            .map_err(missing("wp_viewporter"))?;
        let (subsurface, child) = subcompositor.create_subsurface(window.wl_surface().clone(), qh);
        subsurface.set_desync();
        // Pointer input goes to the parent, whose coordinates cover the whole window.
        if let Ok(region) = Region::new(compositor) {
            child.set_input_region(Some(region.wl_region()));
        }
        let parent_viewport = viewporter.get_viewport(window.wl_surface(), qh, ());
        let child_viewport = viewporter.get_viewport(&child, qh, ());
        // The first commit carries no buffer; the compositor answers with a configure.
        window.commit();
        let mut background_pool =
            SlotPool::new(64, &shm).map_err(|error| PresentError::Pool(error.to_string()))?;
        let (background, pixel) = background_pool
            .create_buffer(1, 1, 4, wl_shm::Format::Xrgb8888)
            .map_err(|error| PresentError::Pool(error.to_string()))?;
        pixel.fill(0);
        Ok(Self {
            shm,
            parent_viewport,
            child,
            subsurface,
            child_viewport,
            _background_pool: background_pool,
            background,
            background_attached: false,
            picture: None,
        })
    }
}

/// Implements the sctk handler traits every presenter's `App` shares by delegating to its
/// [`WindowCore`] field, plus the registry and `Dispatch` glue (like sctk's `delegate_*`
/// macros). `window_handlers!(App, core, shm)` also implements `ShmHandler` with the
/// letterbox's wl_shm.
macro_rules! window_handlers {
    ($app:ty, $core:ident) => {
        impl $crate::present::wayland::window::WindowApp for $app {
            fn core(&self) -> &$crate::present::wayland::window::WindowCore {
                &self.$core
            }

            fn core_mut(&mut self) -> &mut $crate::present::wayland::window::WindowCore {
                &mut self.$core
            }
        }

        impl ::smithay_client_toolkit::compositor::CompositorHandler for $app {
            fn scale_factor_changed(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                surface: &::wayland_client::protocol::wl_surface::WlSurface,
                new_factor: i32,
            ) {
                self.$core.on_scale(surface, new_factor);
            }

            fn transform_changed(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: &::wayland_client::protocol::wl_surface::WlSurface,
                _: ::wayland_client::protocol::wl_output::Transform,
            ) {
            }

            fn frame(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                surface: &::wayland_client::protocol::wl_surface::WlSurface,
                time: u32,
            ) {
                self.$core.on_frame(surface, time);
            }

            fn surface_enter(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: &::wayland_client::protocol::wl_surface::WlSurface,
                _: &::wayland_client::protocol::wl_output::WlOutput,
            ) {
            }

            fn surface_leave(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: &::wayland_client::protocol::wl_surface::WlSurface,
                _: &::wayland_client::protocol::wl_output::WlOutput,
            ) {
            }
        }

        impl ::smithay_client_toolkit::output::OutputHandler for $app {
            fn output_state(&mut self) -> &mut ::smithay_client_toolkit::output::OutputState {
                &mut self.$core.outputs
            }

            fn new_output(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: ::wayland_client::protocol::wl_output::WlOutput,
            ) {
            }

            fn update_output(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: ::wayland_client::protocol::wl_output::WlOutput,
            ) {
            }

            fn output_destroyed(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: ::wayland_client::protocol::wl_output::WlOutput,
            ) {
            }
        }

        impl ::smithay_client_toolkit::shell::xdg::window::WindowHandler for $app {
            fn request_close(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: &::smithay_client_toolkit::shell::xdg::window::Window,
            ) {
                self.$core.on_close();
            }

            fn configure(
                &mut self,
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
                _: &::smithay_client_toolkit::shell::xdg::window::Window,
                configure: ::smithay_client_toolkit::shell::xdg::window::WindowConfigure,
                _: u32,
            ) {
                self.$core.on_configure(configure);
            }
        }

        impl ::smithay_client_toolkit::registry::ProvidesRegistryState for $app {
            fn registry(&mut self) -> &mut ::smithay_client_toolkit::registry::RegistryState {
                &mut self.$core.registry
            }

            ::smithay_client_toolkit::registry_handlers!(
                ::smithay_client_toolkit::output::OutputState
            );
        }

        impl
            ::wayland_client::Dispatch<
                ::wayland_protocols::wp::viewporter::client::wp_viewporter::WpViewporter,
                (),
            > for $app
        {
            fn event(
                _: &mut Self,
                _: &::wayland_protocols::wp::viewporter::client::wp_viewporter::WpViewporter,
                _: ::wayland_protocols::wp::viewporter::client::wp_viewporter::Event,
                _: &(),
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
            ) {
                // wp_viewporter has no events.
            }
        }

        impl
            ::wayland_client::Dispatch<
                ::wayland_protocols::wp::viewporter::client::wp_viewport::WpViewport,
                (),
            > for $app
        {
            fn event(
                _: &mut Self,
                _: &::wayland_protocols::wp::viewporter::client::wp_viewport::WpViewport,
                _: ::wayland_protocols::wp::viewporter::client::wp_viewport::Event,
                _: &(),
                _: &::wayland_client::Connection,
                _: &::wayland_client::QueueHandle<Self>,
            ) {
                // wp_viewport has no events.
            }
        }

        ::smithay_client_toolkit::delegate_registry!($app);
        ::smithay_client_toolkit::delegate_dispatch2!($app);
    };
    ($app:ty, $core:ident, shm) => {
        $crate::present::wayland::window::window_handlers!($app, $core);

        impl ::smithay_client_toolkit::shm::ShmHandler for $app {
            fn shm_state(&mut self) -> &mut ::smithay_client_toolkit::shm::Shm {
                &mut self.$core.letterbox_mut().shm
            }
        }
    };
}

pub(crate) use window_handlers;
