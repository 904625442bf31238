//! The Wayland state of the wl_shm window and its input handlers (seat, pointer,
//! keyboard, cursor surface).

use smithay_client_toolkit::shell::WaylandSurface;
use smithay_client_toolkit::shm::slot::{Buffer, SlotPool};
use smithay_client_toolkit::shm::Shm;
use wayland_client::protocol::{wl_compositor, wl_keyboard, wl_pointer, wl_seat, wl_surface};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle, WEnum};

use crate::present::wayland::window::{window_handlers, WindowCore};
use crate::present::wayland::PresenterEvent;

use super::frames::{FrameBuffer, FrameSpec};

/// The Wayland-side state the event queue dispatches into.
#[derive(Debug)]
pub(super) struct App {
    /// The window; its letterbox's picture is the frame size.
    pub(super) core: WindowCore,
    /// Frame buffers' pool, sized for all of them up front and replaced, never grown, when
    /// the frame size changes (see [`frame_pool`]).
    pub(super) pool: SlotPool,
    pub(super) buffers: Vec<FrameBuffer>,
    pub(super) spec: FrameSpec,
    /// The child shows a buffer of the current spec (so partial damage is meaningful).
    pub(super) child_current: bool,
    pub(super) input: Input,
}

/// Seat input and the guest's cursor.
#[derive(Debug)]
pub(super) struct Input {
    pub(super) compositor: wl_compositor::WlCompositor,
    pub(super) pointer: Option<wl_pointer::WlPointer>,
    pub(super) keyboard: Option<wl_keyboard::WlKeyboard>,
    /// The serial of the pointer's `enter` while it is over the window.
    pub(super) pointer_serial: Option<u32>,
    pub(super) cursor: Option<CursorBuffer>,
    pub(super) cursor_visible: bool,
}

/// The guest's cursor image in its own surface and pool.
#[derive(Debug)]
pub(super) struct CursorBuffer {
    pub(super) surface: wl_surface::WlSurface,
    pub(super) _pool: SlotPool,
    pub(super) _buffer: Buffer,
    pub(super) hot_x: i32,
    pub(super) hot_y: i32,
}

impl Input {
    /// Shows the guest's cursor (or hides the pointer) while the pointer is over the
    /// window. Without a guest cursor the compositor's stays.
    pub(super) fn apply_cursor(&self) {
        let (Some(pointer), Some(serial)) = (&self.pointer, self.pointer_serial) else {
            return;
        };
        match (&self.cursor, self.cursor_visible) {
            (Some(cursor), true) => {
                pointer.set_cursor(serial, Some(&cursor.surface), cursor.hot_x, cursor.hot_y)
            }
            (_, false) => pointer.set_cursor(serial, None, 0, 0),
            (None, true) => {}
        }
    }
}

impl App {
    pub(super) fn shm(&self) -> &Shm {
        &self.core.letterbox().shm
    }

    pub(super) fn child(&self) -> &wl_surface::WlSurface {
        &self.core.letterbox().child
    }

    pub(super) fn has_buffer_for_next_frame(&self, max_buffers: usize) -> bool {
        self.buffers.len() < max_buffers || self.buffers.iter().any(FrameBuffer::is_free)
    }
}

window_handlers!(App, core, shm);

impl Dispatch<wl_seat::WlSeat, ()> for App {
    fn event(
        app: &mut Self,
        seat: &wl_seat::WlSeat,
        event: wl_seat::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        let wl_seat::Event::Capabilities {
            capabilities: WEnum::Value(caps),
        } = event
        else {
            return;
        };
        let input = &mut app.input;
        if caps.contains(wl_seat::Capability::Pointer) {
            if input.pointer.is_none() {
                input.pointer = Some(seat.get_pointer(qh, ()));
            }
        } else if let Some(pointer) = input.pointer.take() {
            if pointer.version() >= 3 {
                pointer.release();
            }
            input.pointer_serial = None;
        }
        if caps.contains(wl_seat::Capability::Keyboard) {
            if input.keyboard.is_none() {
                input.keyboard = Some(seat.get_keyboard(qh, ()));
            }
        } else if let Some(keyboard) = input.keyboard.take() {
            if keyboard.version() >= 3 {
                keyboard.release();
            }
        }
    }
}

impl App {
    /// Reports pointer motion at window position (`x`, `y`) in frame pixels, if over the
    /// picture.
    pub(super) fn pointer_at(&mut self, x: f64, y: f64) {
        let Some(place) = self.core.placement() else {
            return;
        };
        let fx = (x - f64::from(place.x)) * f64::from(self.spec.width) / f64::from(place.width);
        let fy = (y - f64::from(place.y)) * f64::from(self.spec.height) / f64::from(place.height);
        if fx < 0.0 || fy < 0.0 {
            return;
        }
        let (fx, fy) = (fx.floor() as u32, fy.floor() as u32);
        if fx < self.spec.width && fy < self.spec.height {
            self.core
                .events
                .push(PresenterEvent::PointerMotion { x: fx, y: fy });
        }
    }
}

impl Dispatch<wl_pointer::WlPointer, ()> for App {
    fn event(
        app: &mut Self,
        pointer: &wl_pointer::WlPointer,
        event: wl_pointer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            wl_pointer::Event::Enter {
                serial,
                surface,
                surface_x,
                surface_y,
            } if surface == *app.core.window.wl_surface() || surface == *app.child() => {
                app.input.pointer_serial = Some(serial);
                app.input.apply_cursor();
                app.pointer_at(surface_x, surface_y);
            }
            wl_pointer::Event::Leave { .. } => app.input.pointer_serial = None,
            wl_pointer::Event::Motion {
                surface_x,
                surface_y,
                ..
            } if app.input.pointer_serial.is_some() => app.pointer_at(surface_x, surface_y),
            wl_pointer::Event::Button { button, state, .. } => {
                let pressed = matches!(state, WEnum::Value(wl_pointer::ButtonState::Pressed));
                app.core.events.push(PresenterEvent::Button {
                    code: button,
                    pressed,
                });
            }
            // Version 5+ sends discrete steps beside the continuous value: use those.
            wl_pointer::Event::AxisDiscrete {
                axis: WEnum::Value(wl_pointer::Axis::VerticalScroll),
                discrete,
            } if discrete != 0 => app.core.events.push(PresenterEvent::Axis {
                vertical_steps: discrete,
            }),
            wl_pointer::Event::Axis {
                axis: WEnum::Value(wl_pointer::Axis::VerticalScroll),
                value,
                ..
            } if pointer.version() < 5 => {
                // One wheel notch is 10 surface units in most compositors.
                let steps = (value / 10.0).round() as i32;
                if steps != 0 {
                    app.core.events.push(PresenterEvent::Axis {
                        vertical_steps: steps,
                    });
                }
            }
            _ => {}
        }
    }
}

impl Dispatch<wl_keyboard::WlKeyboard, ()> for App {
    fn event(
        app: &mut Self,
        _: &wl_keyboard::WlKeyboard,
        event: wl_keyboard::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // The keymap's fd is dropped (closed) with the event: the guest gets raw codes.
        if let wl_keyboard::Event::Key { key, state, .. } = event {
            let pressed = matches!(state, WEnum::Value(wl_keyboard::KeyState::Pressed));
            app.core
                .events
                .push(PresenterEvent::Key { code: key, pressed });
        }
    }
}

impl Dispatch<wl_surface::WlSurface, ()> for App {
    fn event(
        _: &mut Self,
        _: &wl_surface::WlSurface,
        _: wl_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        // The cursor surface's enter/leave events do not matter.
    }
}
