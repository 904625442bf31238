//! The one interface of the Wayland presenters: what a viewer (and the tests) drive,
//! whichever path draws the picture. Each presenter keeps its own richer API beside it
//! (wl_shm frames for pixels that are not an export, the EGL renderer's options, the
//! passthrough buffer cache).
//!
//! Coordinates: every damage rect and size here is in *picture* coordinates, `y` from
//! the picture's top row, whatever the export's `y0_top`; presenters that hand memory
//! rows to the compositor flip them themselves.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::export::ExportedFramebuffer;
use crate::rect::Rect;

use super::window;
use super::{PresentError, PresenterEvent};

pub(super) mod sealed {
    use std::time::Duration;

    use wayland_client::Connection;

    use crate::present::wayland::window::WindowCore;
    use crate::present::wayland::{PresentError, PresenterEvent};

    /// What the provided methods of [`Presenter`](super::Presenter) use: every
    /// presenter has one window on one connection. Sealed: only guestfb's presenters
    /// implement it, through [`impl_window!`].
    pub trait Window {
        /// The window's state and the connection to the compositor.
        fn window(&self) -> (&WindowCore, &Connection);
        /// Dispatches until the window has events or `timeout` passed.
        fn dispatch_window(
            &mut self,
            timeout: Option<Duration>,
        ) -> Result<Vec<PresenterEvent>, PresentError>;
    }

    /// Implements [`Window`] for a presenter that keeps its
    /// [`Client`](crate::present::wayland::window::Client) in the field `client`.
    macro_rules! impl_window {
        ($presenter:ty) => {
            impl $crate::present::wayland::presenter::sealed::Window for $presenter {
                fn window(
                    &self,
                ) -> (
                    &$crate::present::wayland::window::WindowCore,
                    &::wayland_client::Connection,
                ) {
                    self.client.window()
                }

                fn dispatch_window(
                    &mut self,
                    timeout: Option<::std::time::Duration>,
                ) -> Result<
                    Vec<$crate::present::wayland::PresenterEvent>,
                    $crate::present::wayland::PresentError,
                > {
                    self.client.dispatch(timeout, |_| false)
                }
            }
        };
    }
    pub(crate) use impl_window;
}

/// Which way a presenter shows exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresentPath {
    /// gl=off: the CPU copies the picture into wl_shm buffers.
    ShmCopy,
    /// gl=on: imported as an EGLImage and drawn by guestfb's GL renderer.
    EglImport,
    /// gl=on: the dma-buf handed to the compositor as a linux-dmabuf buffer.
    DmaBufPassthrough,
}

impl PresentPath {
    /// What the path is, for logs (`gl=off (wl_shm copy)`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::ShmCopy => "gl=off (wl_shm copy)",
            Self::EglImport => "gl=on (EGL import, GL renderer)",
            Self::DmaBufPassthrough => "gl=on (linux-dmabuf passthrough)",
        }
    }

    /// Whether the path shows exports without a CPU copy.
    pub fn is_zero_copy(self) -> bool {
        self != Self::ShmCopy
    }
}

impl std::fmt::Display for PresentPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A boxed error of a presenter's own type (its inherent methods return it typed).
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Presenter::show`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Nothing: the window is not ready (no frame callback yet) or every buffer is
    /// held. Keep the damage and show again after the next [`Presenter::dispatch`].
    NotNow,
    /// The frame went to the compositor.
    Presented {
        /// Bytes the CPU copied to show it (0 on the zero-copy paths).
        bytes_copied: u64,
        /// Time spent copying.
        copy_time: Duration,
    },
}

/// Why [`Presenter::show`] could not show an export.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// This presenter cannot show this export (the import was refused, the compositor
    /// does not offer the format…); a copy path can.
    #[error("{0}")]
    Refused(BoxedError),
    /// The window or the connection failed, or the copy did.
    #[error("{0}")]
    Failed(BoxedError),
}

impl Shown {
    /// What a zero-copy presenter did: presented, copying nothing, or not now.
    pub(crate) fn zero_copy(presented: bool) -> Self {
        if presented {
            Self::Presented {
                bytes_copied: 0,
                copy_time: Duration::ZERO,
            }
        } else {
            Self::NotNow
        }
    }
}

impl ShowError {
    /// A failure of the window or the connection.
    pub fn failed(error: impl Into<BoxedError>) -> Self {
        Self::Failed(error.into())
    }
}

/// A window showing exports: [`ShmPresenter`](super::ShmPresenter) (gl=off copy),
/// [`EglPresenter`](super::EglPresenter) (gl=on, feature `wayland-egl`),
/// [`DmaBufPresenter`](super::DmaBufPresenter) (linux-dmabuf passthrough).
///
/// ```
/// use guestfb::present::wayland::{Presenter, PresenterEvent, Shown};
/// # use guestfb::export::ExportedFramebuffer;
/// # use guestfb::rect::Rect;
/// # use std::time::Duration;
///
/// /// Shows `export` once in whichever window `presenter` is.
/// fn show_once(presenter: &mut dyn Presenter, export: &ExportedFramebuffer) -> bool {
///     let damage = [Rect::full(export.layout().width(), export.layout().height())];
///     while !presenter.is_closed() {
///         for event in presenter.dispatch(Some(Duration::from_millis(16))).unwrap() {
///             if event == PresenterEvent::Close {
///                 return false;
///             }
///         }
///         if presenter.is_ready() {
///             match presenter.show(export, &damage) {
///                 Ok(Shown::Presented { .. }) => return true,
///                 Ok(Shown::NotNow) => {}
///                 Err(error) => panic!("{}: {error}", presenter.name()),
///             }
///         }
///     }
///     false
/// }
/// ```
pub trait Presenter: sealed::Window {
    /// Which way this presenter shows exports.
    fn path(&self) -> PresentPath;

    /// What the path is, for logs (`gl=off (wl_shm copy)`…).
    fn name(&self) -> &'static str {
        self.path().name()
    }

    /// Whether the path shows exports without a CPU copy.
    fn is_zero_copy(&self) -> bool {
        self.path().is_zero_copy()
    }

    /// Handles compositor events, waiting up to `timeout` (`None`: forever) for some,
    /// and returns what happened. A lost compositor is [`PresentError::ConnectionLost`]
    /// (or [`PresentError::Protocol`]), never a panic.
    fn dispatch(&mut self, timeout: Option<Duration>) -> Result<Vec<PresenterEvent>, PresentError> {
        self.dispatch_window(timeout)
    }

    /// Sends buffered requests to the compositor.
    fn flush(&self) -> Result<(), PresentError> {
        window::flush(self.window().1)
    }

    /// The connection's fd, for callers that poll several sources. After it polls
    /// readable, call [`dispatch`](Self::dispatch) with a zero timeout.
    fn connection_fd(&self) -> BorrowedFd<'_> {
        self.window().1.as_fd()
    }

    /// Whether the window was closed.
    fn is_closed(&self) -> bool {
        self.window().0.closed
    }

    /// Whether a frame may be shown now: configured, open, the last frame's callback
    /// fired. While false, the caller coalesces its damage.
    fn is_ready(&self) -> bool {
        self.window().0.is_ready()
    }

    /// The window size in logical pixels, once configured.
    fn window_size(&self) -> Option<(u32, u32)> {
        self.window().0.window_size
    }

    /// Shows `export`, `damage` in picture coordinates (empty: only the window needs
    /// drawing again, see [`needs_redraw`](Self::needs_redraw)).
    fn show(&mut self, export: &ExportedFramebuffer, damage: &[Rect]) -> Result<Shown, ShowError>;

    /// Drops what the presenter keeps of buffer `buffer_id` (an import, a `wl_buffer`):
    /// its export was revoked or replaced. True when something was dropped.
    fn forget(&mut self, buffer_id: u64) -> bool {
        let _ = buffer_id;
        false
    }

    /// Whether the guest may draw into buffer `buffer_id` now: the display no longer
    /// reads it. True unless the compositor holds it (passthrough, until
    /// `wl_buffer.release`).
    fn may_draw_into(&self, buffer_id: u64) -> bool {
        let _ = buffer_id;
        true
    }

    /// Whether the window needs drawing again without a new guest frame (a resize the
    /// presenter draws itself, the EGL presenter's).
    fn needs_redraw(&self) -> bool {
        false
    }
}
