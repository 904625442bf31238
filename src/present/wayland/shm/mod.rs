//! The wl_shm presenter: CPU-written frames in shared memory.
//!
//! Surfaces: the xdg-toplevel surface shows one black pixel scaled by a viewport to the
//! whole window (the bars); a desynchronised subsurface above it shows the frame buffer,
//! scaled by its own viewport to the largest aspect-preserving rectangle and centred.
//! Buffers come from an sctk [`SlotPool`]; each carries the region in which it lags behind
//! the picture on screen, so the caller repaints only what that buffer needs.

mod app;
mod frames;

use std::time::{Duration, Instant};

use smithay_client_toolkit::compositor::{CompositorState, FrameCallbackData};
use smithay_client_toolkit::shm::slot::SlotPool;
use smithay_client_toolkit::shm::Shm;
use wayland_client::protocol::{wl_seat, wl_shm};
use wayland_client::Proxy;

use crate::export::ExportedFramebuffer;
use crate::format::PixelFormat;
use crate::import::convert::{Dest, DestFormat};
use crate::import::CpuMapping;
use crate::rect::Rect;

use super::damage::{Placement, StaleRegion};
use super::presenter::sealed::impl_window;
use super::window::{self, missing, Client, CoreOptions, WindowCore};
use super::{
    PresentError, PresentPath, Presenter, PresenterEvent, PresenterOptions, ShowError, Shown,
};

use app::{App, CursorBuffer, Input};
use frames::{frame_pool, FrameBuffer, FrameSpec};

/// Shows CPU-written frames in a Wayland window through wl_shm.
///
/// Typical loop (here on a headless weston the example starts; a viewer calls
/// [`connect`](Self::connect), which follows `WAYLAND_DISPLAY`):
/// ```
/// # use guestfb::present::wayland::{Presenter, PresenterEvent, PresenterOptions, ShmPresenter};
/// # use guestfb::rect::Rect;
/// # use std::time::Duration;
/// # let runtime = std::env::temp_dir().join(format!("guestfb-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&runtime)?;
/// # let mut weston = std::process::Command::new("weston")
/// #     .args(["--backend=headless", "--renderer=pixman", "--socket=doc", "--no-config"])
/// #     .args(["--idle-time=0", "--width=320", "--height=240"])
/// #     .env("XDG_RUNTIME_DIR", &runtime)
/// #     .stderr(std::process::Stdio::null())
/// #     .spawn()
/// #     .expect("weston (scripts/setup-host.sh installs it)");
/// # let socket = runtime.join("doc");
/// # while std::os::unix::net::UnixStream::connect(&socket).is_err() {
/// #     std::thread::sleep(Duration::from_millis(20));
/// # }
/// let mut presenter = ShmPresenter::connect(PresenterOptions::new(64, 48).with_socket(socket))?;
/// let mut damage = vec![Rect::full(64, 48)]; // coalesced until a frame is possible
/// let mut shown = 0;
/// while shown < 3 {
///     for event in presenter.dispatch(Some(Duration::from_millis(16)))? {
///         if event == PresenterEvent::Close {
///             return Ok(());
///         }
///     }
///     // ... add the guest's new damage to `damage` ...
///     if damage.is_empty() {
///         damage.push(Rect::new(0, 0, 8, 8));
///     }
///     if let Some(mut frame) = presenter.next_buffer()? {
///         let stride = frame.stride() as usize;
///         for rect in frame.repair_rects(&damage) {
///             // The guest's pixels of `rect` go here; this example paints them grey.
///             for y in rect.y as usize..(rect.y + rect.height) as usize {
///                 let row = y * stride + rect.x as usize * 4;
///                 frame.pixels()[row..row + rect.width as usize * 4].fill(0x80);
///             }
///         }
///         frame.present(&damage)?;
///         damage.clear();
///         shown += 1;
///     }
/// }
/// # drop(presenter);
/// # weston.kill()?;
/// # weston.wait()?;
/// # std::fs::remove_dir_all(&runtime)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ShmPresenter {
    client: Client<App>,
    max_buffers: usize,
}

impl ShmPresenter {
    /// Connects to the compositor of [`PresenterOptions::socket`] and opens the window.
    ///
    /// The window is not configured yet: call [`dispatch`](Self::dispatch) until
    /// [`is_ready`](Self::is_ready) (the first [`PresenterEvent::Configure`]).
    pub fn connect(options: PresenterOptions) -> Result<Self, PresentError> {
        let spec = FrameSpec::new(options.width, options.height, options.format)?;
        let (conn, globals, queue, qh) = window::open::<App>(options.socket.as_deref())?;
        let compositor = CompositorState::bind(&globals, &qh).map_err(missing("wl_compositor"))?;
        let mut core = WindowCore::new(
            &globals,
            &qh,
            &compositor,
            Some(Shm::bind),
            CoreOptions {
                title: options.title,
                app_id: options.app_id,
                default_size: (spec.width, spec.height),
                report_scale: true,
            },
        )?;
        core.letterbox_mut().picture = Some((spec.width, spec.height));
        // Input is optional: a compositor without a seat still shows the picture.
        let _seat: Option<wl_seat::WlSeat> = globals.bind(&qh, 1..=5, ()).ok();

        let max_buffers = options.max_buffers.clamp(2, 3);
        let pool = frame_pool(&core.letterbox().shm, spec, max_buffers)?;
        let app = App {
            core,
            pool,
            buffers: Vec::new(),
            spec,
            child_current: false,
            input: Input {
                compositor: compositor.wl_compositor().clone(),
                pointer: None,
                keyboard: None,
                pointer_serial: None,
                cursor: None,
                cursor_visible: true,
            },
        };
        let mut client = Client::new(conn, queue, app);
        // Learn the wl_shm formats (and usually get the first configure).
        client.roundtrip()?;
        let presenter = Self {
            client,
            max_buffers,
        };
        presenter.check_format(spec)?;
        Ok(presenter)
    }

    fn check_format(&self, spec: FrameSpec) -> Result<(), PresentError> {
        let always = matches!(
            spec.shm_format,
            wl_shm::Format::Argb8888 | wl_shm::Format::Xrgb8888
        );
        if always || self.client.app.shm().formats().contains(&spec.shm_format) {
            Ok(())
        } else {
            Err(PresentError::UnsupportedFormat {
                format: spec.format.name(),
                reason: "not in the compositor's wl_shm format list",
            })
        }
    }

    /// Changes the frame size or format. Buffers of the old size are dropped (each when the
    /// compositor releases it); the next frame is a fresh buffer needing a full repaint.
    pub fn set_frame(
        &mut self,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), PresentError> {
        let spec = FrameSpec::new(width, height, format)?;
        self.check_format(spec)?;
        if spec == self.client.app.spec {
            return Ok(());
        }
        // A new pool rather than a grown one: the old buffers keep the old pool alive on the
        // compositor's side until it releases them.
        self.client.app.pool = frame_pool(self.client.app.shm(), spec, self.max_buffers)?;
        self.client.app.buffers.clear();
        self.client.app.spec = spec;
        self.client.app.child_current = false;
        self.client.app.core.default_size = (width, height);
        self.client.app.core.letterbox_mut().picture = Some((width, height));
        if self.client.app.core.configured {
            self.client.app.core.apply_layout();
        }
        self.flush()
    }

    /// Sets the pointer image shown over the window: `argb` holds `width` × `height`
    /// ARGB8888 pixels (bytes B G R A, rows of `width * 4` bytes), `(hot_x, hot_y)` is
    /// the hot spot. Shown 1:1 (not scaled with the picture) whenever the pointer is
    /// over the window and the cursor is visible.
    pub fn set_cursor_image(
        &mut self,
        width: u32,
        height: u32,
        hot_x: i32,
        hot_y: i32,
        argb: &[u8],
    ) -> Result<(), PresentError> {
        let bad = PresentError::BadFrameSize { width, height };
        if !(1..=1024).contains(&width) || !(1..=1024).contains(&height) {
            return Err(bad);
        }
        let stride = width as usize * 4;
        let len = stride * height as usize;
        if argb.len() < len {
            return Err(bad);
        }
        // A fresh pool per image: never grown while a buffer of it is attached.
        let mut pool = SlotPool::new(len, self.client.app.shm())
            .map_err(|e| PresentError::Pool(e.to_string()))?;
        let (buffer, pixels) = pool
            .create_buffer(
                width as i32,
                height as i32,
                stride as i32,
                wl_shm::Format::Argb8888,
            )
            .map_err(|e| PresentError::Pool(e.to_string()))?;
        pixels[..len].copy_from_slice(&argb[..len]);
        let surface = match self.client.app.input.cursor.take() {
            Some(old) => old.surface,
            None => self
                .client
                .app
                .input
                .compositor
                .create_surface(&self.client.qh, ()),
        };
        buffer
            .attach_to(&surface)
            .map_err(|e| PresentError::Pool(e.to_string()))?;
        if surface.version() >= 4 {
            surface.damage_buffer(0, 0, width as i32, height as i32);
        } else {
            surface.damage(0, 0, width as i32, height as i32);
        }
        surface.commit();
        self.client.app.input.cursor = Some(CursorBuffer {
            surface,
            _pool: pool,
            _buffer: buffer,
            hot_x,
            hot_y,
        });
        self.client.app.input.apply_cursor();
        self.flush()
    }

    /// Shows or hides the pointer over the window (the guest's `MouseSet` visibility).
    pub fn set_cursor_visible(&mut self, visible: bool) -> Result<(), PresentError> {
        if self.client.app.input.cursor_visible != visible {
            self.client.app.input.cursor_visible = visible;
            self.client.app.input.apply_cursor();
        }
        self.flush()
    }

    /// Sets the window title.
    pub fn set_title(&self, title: &str) {
        self.client.app.core.window.set_title(title);
    }

    /// Frame width in pixels.
    pub fn frame_width(&self) -> u32 {
        self.client.app.spec.width
    }

    /// Frame height in pixels.
    pub fn frame_height(&self) -> u32 {
        self.client.app.spec.height
    }

    /// Pixel format of the buffers.
    pub fn format(&self) -> PixelFormat {
        self.client.app.spec.format
    }

    /// Integer scale of the output(s) the window is on (device pixels per logical pixel).
    ///
    /// The frame is scaled by a viewport to logical size × scale device pixels, so a frame
    /// of [`preferred_frame_size`](Self::preferred_frame_size) is shown 1:1.
    pub fn scale(&self) -> u32 {
        self.client.app.core.scale
    }

    /// The frame size that fills the window pixel for pixel (window size × scale): what a
    /// viewer may ask the guest to switch to.
    pub fn preferred_frame_size(&self) -> Option<(u32, u32)> {
        let (width, height) = self.client.app.core.window_size?;
        Some((
            width.saturating_mul(self.client.app.core.scale),
            height.saturating_mul(self.client.app.core.scale),
        ))
    }

    /// Where the picture sits in the window (logical pixels), once configured.
    pub fn placement(&self) -> Option<Placement> {
        self.client.app.core.placement()
    }

    /// Whether [`next_buffer`](Self::next_buffer) would find (or may create) a buffer.
    fn has_buffer_for_next_frame(&self) -> bool {
        self.client.app.has_buffer_for_next_frame(self.max_buffers)
    }

    /// A buffer to draw the next frame into, or `None` when no frame may be presented now
    /// (not [ready](Self::is_ready), or every buffer is still held by the compositor).
    ///
    /// The buffer lags behind the screen by [`ShmFrame::stale`]; the caller writes the new
    /// damage plus that region ([`ShmFrame::repair_rects`]) and presents.
    pub fn next_buffer(&mut self) -> Result<Option<ShmFrame<'_>>, PresentError> {
        if !self.is_ready() {
            return Ok(None);
        }
        let best = self
            .client
            .app
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_free())
            .min_by_key(|(_, b)| b.stale.cost())
            .map(|(index, _)| index);
        let index = match best {
            Some(index) => index,
            None if self.client.app.buffers.len() < self.max_buffers => {
                let spec = self.client.app.spec;
                let (buffer, _) = self
                    .client
                    .app
                    .pool
                    .create_buffer(
                        spec.width as i32,
                        spec.height as i32,
                        spec.stride as i32,
                        spec.shm_format,
                    )
                    .map_err(|error| PresentError::Pool(error.to_string()))?;
                self.client.app.buffers.push(FrameBuffer {
                    buffer,
                    stale: StaleRegion::fresh(spec.width, spec.height),
                });
                self.client.app.buffers.len() - 1
            }
            None => return Ok(None),
        };
        Ok(Some(ShmFrame {
            presenter: self,
            index,
        }))
    }

    fn present_buffer(&mut self, index: usize, damage: &[Rect]) -> Result<(), PresentError> {
        let app = &mut self.client.app;
        let spec = app.spec;
        let damage: Vec<Rect> = damage
            .iter()
            .filter_map(|r| r.clip(spec.width, spec.height))
            .collect();
        let child = &app.core.letterbox().child;
        if child.version() < 4 {
            // No damage_buffer (wl_surface < 4): damage the whole surface.
            child.damage(0, 0, i32::MAX, i32::MAX);
        } else if app.child_current && damage.is_empty() {
            // Nothing changed, but a commit without damage may never be repainted, and
            // then its frame callback never fires: damage one (unchanged) pixel.
            child.damage_buffer(0, 0, 1, 1);
        } else if app.child_current {
            for r in &damage {
                child.damage_buffer(r.x as i32, r.y as i32, r.width as i32, r.height as i32);
            }
        } else {
            // Nothing of this size was shown yet: all of it is new.
            child.damage_buffer(0, 0, spec.width as i32, spec.height as i32);
        }
        child.frame(&self.client.qh, FrameCallbackData(child.clone()));
        app.buffers[index]
            .buffer
            .attach_to(child)
            .map_err(|error| PresentError::Pool(error.to_string()))?;
        child.commit();
        app.core.frame_pending = true;
        app.child_current = true;
        for (i, buffer) in app.buffers.iter_mut().enumerate() {
            if i == index {
                buffer.stale.clear();
            } else {
                buffer.stale.add(&damage);
            }
        }
        self.flush()
    }
}

impl_window!(ShmPresenter);

impl Presenter for ShmPresenter {
    fn path(&self) -> PresentPath {
        PresentPath::ShmCopy
    }

    fn dispatch(&mut self, timeout: Option<Duration>) -> Result<Vec<PresenterEvent>, PresentError> {
        // A caller that is ready but found every buffer held waits for a release, which
        // sctk handles without an event: wake it when one comes.
        let starved = self.is_ready() && !self.has_buffer_for_next_frame();
        let max_buffers = self.max_buffers;
        self.client.dispatch(timeout, |app| {
            starved && app.has_buffer_for_next_frame(max_buffers)
        })
    }

    fn show(&mut self, export: &ExportedFramebuffer, damage: &[Rect]) -> Result<Shown, ShowError> {
        let format = match self.format() {
            PixelFormat::Xrgb8888 => DestFormat::Xrgb8888,
            PixelFormat::Argb8888 => DestFormat::Argb8888,
            other => {
                return Err(ShowError::Refused(
                    format!(
                        "exports are copied into XRGB8888 or ARGB8888 wl_shm buffers, \
                         this window's are {other}"
                    )
                    .into(),
                ))
            }
        };
        let Some(mut frame) = self.next_buffer().map_err(ShowError::failed)? else {
            return Ok(Shown::NotNow);
        };
        // A fresh or stale buffer needs more than this frame's damage.
        let repair = frame.repair_rects(damage);
        let stride = frame.stride() as usize;
        let started = Instant::now();
        let blit = CpuMapping::new(export.clone())
            .blit(
                &mut Dest {
                    data: frame.pixels(),
                    stride,
                    format,
                },
                &repair,
            )
            .map_err(ShowError::failed)?;
        let copy_time = started.elapsed();
        frame.present(damage).map_err(ShowError::failed)?;
        Ok(Shown::Presented {
            bytes_copied: blit.bytes,
            copy_time,
        })
    }
}

/// A buffer lent by [`ShmPresenter::next_buffer`]: write pixels, then
/// [`present`](Self::present). Dropping it without presenting shows nothing; pixels
/// written stay in the buffer, so keep the damage and present it later.
#[derive(Debug)]
pub struct ShmFrame<'a> {
    presenter: &'a mut ShmPresenter,
    index: usize,
}

impl ShmFrame<'_> {
    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.presenter.client.app.spec.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.presenter.client.app.spec.height
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        self.presenter.client.app.spec.stride
    }

    /// Pixel format of the buffer.
    pub fn format(&self) -> PixelFormat {
        self.presenter.client.app.spec.format
    }

    /// The buffer's pixels: `height` rows of `stride` bytes. Not cleared: a reused buffer
    /// holds the frame it last showed.
    ///
    /// A plain slice, unlike guest memory's [`VolatileSliceMut`](crate::sys::volatile::VolatileSliceMut):
    /// the pool is shared with the compositor, which only reads a buffer it holds, and
    /// a buffer is lent here only while the compositor does not hold it, so guestfb's
    /// writes are the only accesses while the slice lives.
    pub fn pixels(&mut self) -> &mut [u8] {
        let len = self.presenter.client.app.spec.len();
        let app = &mut self.presenter.client.app;
        // The buffer was free when lent, and only `present` hands it to the compositor.
        let slot = app.buffers[self.index].buffer.slot();
        &mut app.pool.raw_data_mut(&slot)[..len]
    }

    /// Where this buffer lags behind the screen, beyond the new damage: the whole frame for
    /// a fresh buffer, else the damage of the frames presented since it was last shown.
    pub fn stale(&self) -> &[Rect] {
        self.presenter.client.app.buffers[self.index].stale.rects()
    }

    /// Whether the buffer was never shown (it must be written in full).
    pub fn is_fresh(&self) -> bool {
        self.presenter.client.app.buffers[self.index]
            .stale
            .is_full()
    }

    /// The rectangles to write for a frame with `damage`: [`stale`](Self::stale) plus
    /// `damage`, clipped to the frame (they may overlap).
    pub fn repair_rects(&self, damage: &[Rect]) -> Vec<Rect> {
        let (width, height) = (self.width(), self.height());
        let stale = self.stale();
        if stale
            .first()
            .is_some_and(|r| r.contains(&Rect::full(width, height)))
        {
            return vec![Rect::full(width, height)];
        }
        stale
            .iter()
            .chain(damage)
            .filter_map(|r| r.clip(width, height))
            .collect()
    }

    /// Shows the buffer. `damage` is what changed since the previous frame (the caller
    /// must have written it and [`stale`](Self::stale)); only it is sent as
    /// `wl_surface.damage_buffer` (a fresh frame size sends the whole buffer; empty damage
    /// sends one pixel so the frame callback still fires). The presenter is not ready
    /// again until the compositor's frame callback ([`PresenterEvent::FrameDone`]); it
    /// never comes while the window is hidden, so keep coalescing damage until then.
    pub fn present(self, damage: &[Rect]) -> Result<(), PresentError> {
        self.presenter.present_buffer(self.index, damage)
    }
}
