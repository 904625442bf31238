//! A built-in demo guest: memfd-backed "guest RAM" with a framebuffer that it draws an
//! animated, easy-to-check test pattern into, reporting damage like a guest display
//! driver would.
//!
//! The pattern: eight colour bars (white, yellow, cyan, green, magenta, red, blue,
//! black) down the frame, an orange block that moves one step per frame along a diagonal,
//! and the frame counter as 16 binary cells (white = 1) along the bottom-left.
//!
//! With [`Buffering::Double`] the guest double-buffers like a virtio-gpu driver
//! with two resources: [`DemoGuest::step`] draws the next frame into the back buffer
//! and then flips, so the buffer on display is never written. The caller must only
//! step once the display has let go of the back buffer (the compositor released its
//! `wl_buffer`, our GL draw finished, or a KMS flip away from it completed); see
//! [`DemoGuest::back_buffer_id`].

use std::sync::Arc;

use crate::export::pin::kernel::populate;
use crate::export::{ExportError, FramebufferDesc, GuestMemory, GuestRange, PlaneDesc};
use crate::format::PixelFormat;
use crate::rect::Rect;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::memfd::{Memfd, Seals};
use crate::sys::{self, SysError};

/// Guest-physical address of the (first) demo framebuffer (2 MiB aligned for hugetlb).
/// With two buffers the second follows the first, page aligned.
pub const FRAMEBUFFER_BASE: u64 = 2 << 20;

/// The buffer id of the first framebuffer; the second (with [`Buffering::Double`]) is
/// `FIRST_BUFFER_ID + 1`. Pass these to [`crate::export::Exporter::export`] so that each
/// guest buffer is exported (and cached by presenters) once.
pub const FIRST_BUFFER_ID: u64 = 1;

/// How the demo guest is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoConfig {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format of the guest framebuffer.
    pub format: PixelFormat,
    /// Extra bytes at the end of each row (a padded stride).
    pub stride_padding: u32,
    /// True: memory row 0 is the top of the picture; false: the bottom (GL style).
    pub y0_top: bool,
    /// Guest RAM in hugetlb pages of this size (e.g. 2 MiB); `None` for base pages.
    pub hugetlb: Option<u64>,
    /// Describe the framebuffer as two ranges in reverse guest order (a scatter list).
    pub scattered: bool,
    /// One live framebuffer redrawn in place, or two (draw the back, then flip).
    pub buffering: Buffering,
}

/// How many framebuffers the demo guest keeps in its RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Buffering {
    /// One framebuffer, redrawn in place (a display copying it sees no tearing; one
    /// reading it live can).
    #[default]
    Single,
    /// Two framebuffers: the next frame is drawn into the back one, then they flip,
    /// like a guest driver with two scanout resources.
    Double,
}

impl Buffering {
    /// Number of framebuffers.
    pub fn count(self) -> u32 {
        match self {
            Self::Single => 1,
            Self::Double => 2,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            format: PixelFormat::Xrgb8888,
            stride_padding: 0,
            y0_top: true,
            hugetlb: None,
            scattered: false,
            buffering: Buffering::Single,
        }
    }
}

/// The colour bars, as (R, G, B).
pub const BARS: [[u8; 3]; 8] = [
    [255, 255, 255],
    [255, 255, 0],
    [0, 255, 255],
    [0, 255, 0],
    [255, 0, 255],
    [255, 0, 0],
    [0, 0, 255],
    [0, 0, 0],
];

/// The moving block's colour.
pub const BLOCK: [u8; 3] = [255, 128, 0];

/// Side of the moving block and of a counter cell, in pixels, for a frame size.
fn block_size(width: u32, height: u32) -> u32 {
    (width.min(height) / 8).max(2)
}

fn cell_size(width: u32, height: u32) -> u32 {
    (width.min(height) / 40).max(1)
}

/// Counter bits drawn.
const COUNTER_BITS: u32 = 16;

/// The pattern's colour at picture pixel (x, y) for frame `frame`.
pub fn pattern_rgb(width: u32, height: u32, frame: u64, x: u32, y: u32) -> [u8; 3] {
    let block = block_rect(width, height, frame);
    if contains(block, x, y) {
        return BLOCK;
    }
    let counter = counter_rect(width, height);
    if contains(counter, x, y) {
        let bit = (x - counter.x) / cell_size(width, height);
        let on = (frame >> (COUNTER_BITS - 1 - bit)) & 1 == 1;
        return if on { [255, 255, 255] } else { [32, 32, 32] };
    }
    let bar = (u64::from(x) * 8 / u64::from(width)) as usize;
    BARS[bar.min(7)]
}

fn contains(rect: Rect, x: u32, y: u32) -> bool {
    x >= rect.x && x - rect.x < rect.width && y >= rect.y && y - rect.y < rect.height
}

/// Where the moving block is in frame `frame`.
pub fn block_rect(width: u32, height: u32, frame: u64) -> Rect {
    let side = block_size(width, height).min(width).min(height);
    let span_x = u64::from(width - side + 1);
    let span_y = u64::from(height - side + 1);
    let step = frame * u64::from(side / 4).max(1);
    Rect {
        x: (step % span_x) as u32,
        y: ((step / 2) % span_y) as u32,
        width: side,
        height: side,
    }
}

/// Where the frame counter is.
pub fn counter_rect(width: u32, height: u32) -> Rect {
    let cell = cell_size(width, height);
    let cells = COUNTER_BITS.min(width / cell);
    Rect {
        x: 0,
        y: height - cell.min(height),
        width: cells * cell,
        height: cell.min(height),
    }
}

/// Encodes one pixel of a packed format into `out` (its bytes per pixel long).
fn encode_packed(format: PixelFormat, [r, g, b]: [u8; 3], out: &mut [u8]) {
    match format {
        PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => out.copy_from_slice(&[b, g, r, 0xFF]),
        PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 => out.copy_from_slice(&[r, g, b, 0xFF]),
        PixelFormat::Bgr888 => out.copy_from_slice(&[r, g, b]),
        PixelFormat::Rgb888 => out.copy_from_slice(&[b, g, r]),
        PixelFormat::Rgb565 => {
            let value = (u16::from(r >> 3) << 11) | (u16::from(g >> 2) << 5) | u16::from(b >> 3);
            out.copy_from_slice(&value.to_le_bytes());
        }
        PixelFormat::Nv12 => unreachable!("NV12 is planar"),
    }
}

/// BT.601 limited-range RGB → YCbCr.
fn rgb_to_ycbcr([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let cb = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let cr = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [y as u8, cb as u8, cr as u8]
}

/// The demo guest.
#[derive(Debug)]
pub struct DemoGuest {
    config: DemoConfig,
    memory: Arc<GuestMemory>,
    memfd: Arc<Memfd>,
    ram: Mapping,
    stride: u32,
    /// Per plane: offset of the plane in the framebuffer bytes and its stride.
    planes: Vec<PlaneDesc>,
    fb_len: u64,
    /// Distance in guest RAM between the framebuffers (page multiple).
    fb_slot: u64,
    frame: u64,
    /// Index of the buffer on display (0 or 1).
    front: usize,
    /// Per buffer: the frame it holds (`None`: never drawn).
    holds: [Option<u64>; 2],
}

impl DemoGuest {
    /// Creates guest RAM and draws frame 0 into the front buffer (buffer id
    /// [`FIRST_BUFFER_ID`]).
    pub fn new(config: DemoConfig) -> Result<Self, ExportError> {
        let bytes_per_pixel = config.format.bytes_per_pixel();
        let stride = config.width * bytes_per_pixel + config.stride_padding;
        let mut planes = vec![PlaneDesc { offset: 0, stride }];
        let mut fb_len = u64::from(stride) * u64::from(config.height);
        if config.format == PixelFormat::Nv12 {
            let chroma_stride = config.width.div_ceil(2) * 2 + config.stride_padding;
            planes.push(PlaneDesc {
                offset: fb_len,
                stride: chroma_stride,
            });
            fb_len += u64::from(chroma_stride) * u64::from(config.height.div_ceil(2));
        }
        let page = config.hugetlb.unwrap_or_else(sys::page_size);
        // RAM: 2 MiB before the framebuffers, the framebuffers (each starting on a
        // page), one spare page after.
        let fb_slot = fb_len.next_multiple_of(page);
        let last_base = FRAMEBUFFER_BASE + fb_slot * u64::from(config.buffering.count() - 1);
        let ram_size = (last_base + fb_len).next_multiple_of(page) + page;
        if let Some(page_size) = config.hugetlb {
            check_pool(page_size, ram_size / page_size)?;
        }
        let memfd = match config.hugetlb {
            Some(page_size) => Memfd::create_hugetlb("guestfb-demo-ram", page_size)?,
            None => Memfd::create("guestfb-demo-ram")?,
        };
        memfd.set_size(ram_size)?;
        memfd.add_seals(Seals::SHRINK | Seals::GROW)?;
        if config.hugetlb.is_some() {
            // Take the pool's pages now, as the pin manager does before pinning: an
            // empty pool is `PoolExhausted` here, not a SIGBUS. (Checked above; another
            // process may have taken them since.)
            populate(&memfd, 0, ram_size)?;
        }
        let ram_len = usize::try_from(ram_size).map_err(|_| SysError::OutOfBounds {
            offset: 0,
            len: ram_size,
            size: usize::MAX as u64,
        })?;
        let ram = Mapping::new(
            std::os::fd::AsFd::as_fd(&memfd),
            0,
            ram_len,
            Access::ReadWrite,
        )?;
        let memfd = Arc::new(memfd);
        let mut memory = GuestMemory::new();
        memory.add_region(0, ram_size, memfd.clone(), 0)?;
        let mut guest = Self {
            config,
            memory: Arc::new(memory),
            memfd,
            ram,
            stride,
            planes,
            fb_len,
            fb_slot,
            frame: 0,
            front: 0,
            holds: [None, None],
        };
        guest.draw(0, &[guest.full_rect()]);
        guest.holds[0] = Some(0);
        Ok(guest)
    }

    /// The configuration.
    pub fn config(&self) -> DemoConfig {
        self.config
    }

    /// Guest RAM.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// The memfd behind guest RAM (for discards).
    pub fn memfd(&self) -> &Arc<Memfd> {
        &self.memfd
    }

    /// The frame number now shown.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Number of framebuffers (1 or 2).
    pub fn buffer_count(&self) -> u32 {
        self.config.buffering.count()
    }

    /// Index (0 or 1) of the buffer on display: the one [`desc`](Self::desc) describes.
    pub fn front_index(&self) -> usize {
        self.front
    }

    /// Buffer id of the buffer on display ([`FIRST_BUFFER_ID`] + [`front_index`]).
    ///
    /// [`front_index`]: Self::front_index
    pub fn front_buffer_id(&self) -> u64 {
        FIRST_BUFFER_ID + self.front as u64
    }

    /// Buffer id of the buffer the next [`step`](Self::step) draws into: the other
    /// buffer with two, the same one (drawn in place) with one. The display must be
    /// done reading it before `step` is called.
    pub fn back_buffer_id(&self) -> u64 {
        FIRST_BUFFER_ID + self.back_index() as u64
    }

    fn back_index(&self) -> usize {
        if self.config.buffering == Buffering::Double {
            1 - self.front
        } else {
            0
        }
    }

    /// The frame number buffer `index` holds (`None` if it was never drawn).
    pub fn frame_in_buffer(&self, index: usize) -> Option<u64> {
        self.holds.get(index).copied().flatten()
    }

    /// Stride of the first plane.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    fn full_rect(&self) -> Rect {
        Rect::full(self.config.width, self.config.height)
    }

    /// The framebuffer description the guest would send its display: that of the
    /// front buffer (the one just flipped to).
    pub fn desc(&self) -> FramebufferDesc {
        self.buffer_desc(self.front)
    }

    /// The description of buffer `index` (0 or 1; 0 only with one buffer).
    ///
    /// # Panics
    /// If `index` is not a buffer of this guest.
    pub fn buffer_desc(&self, index: usize) -> FramebufferDesc {
        assert!(
            index < self.config.buffering.count() as usize,
            "buffer {index} of a {}-buffer guest",
            self.config.buffering.count()
        );
        let base = FRAMEBUFFER_BASE + self.fb_slot * index as u64;
        let ranges = if self.config.scattered {
            // Second half first in guest memory: the scatter list puts it back in order.
            let page = self.config.hugetlb.unwrap_or_else(sys::page_size);
            let first_len = (self.fb_len / 2).next_multiple_of(page).min(self.fb_len);
            let second_len = self.fb_len - first_len;
            let second_addr = base;
            let first_addr = (base + second_len).next_multiple_of(page);
            if second_len == 0 {
                vec![GuestRange {
                    addr: base,
                    len: self.fb_len,
                }]
            } else {
                vec![
                    GuestRange {
                        addr: first_addr,
                        len: first_len,
                    },
                    GuestRange {
                        addr: second_addr,
                        len: second_len,
                    },
                ]
            }
        } else {
            vec![GuestRange {
                addr: base,
                len: self.fb_len,
            }]
        };
        FramebufferDesc {
            fourcc: self.config.format.fourcc() as u32,
            modifier: crate::format::Modifier::LINEAR.raw(),
            width: self.config.width,
            height: self.config.height,
            visible: None,
            planes: self.planes.clone(),
            y0_top: self.config.y0_top,
            ranges,
        }
    }

    /// Draws the next frame and returns its damage (what differs from the previous
    /// frame), in picture coordinates.
    ///
    /// With one buffer the frame is drawn in place. With two it is drawn into the back
    /// buffer, which is first brought up to date (the damage of the frames since it
    /// was last drawn, two with steady flipping, so it then equals the new picture),
    /// and the buffers flip: [`desc`](Self::desc) then describes the new frame's buffer.
    pub fn step(&mut self) -> Vec<Rect> {
        let (width, height) = (self.config.width, self.config.height);
        let old_block = block_rect(width, height, self.frame);
        self.frame += 1;
        let new_block = block_rect(width, height, self.frame);
        let damage = vec![old_block, new_block, counter_rect(width, height)];
        let back = self.back_index();
        let redraw = match self.holds[back] {
            // The buffer lags a few frames: every block position since, and the counter.
            Some(held) if held < self.frame && self.frame - held <= 4 => (held..=self.frame)
                .map(|f| block_rect(width, height, f))
                .chain([counter_rect(width, height)])
                .collect(),
            _ => vec![self.full_rect()],
        };
        self.draw(back, &redraw);
        self.holds[back] = Some(self.frame);
        self.front = back;
        damage
    }

    /// Writes `bytes` at framebuffer offset `offset`, following the scatter list (a
    /// pixel may straddle two ranges).
    fn write_fb(&mut self, ranges: &[GuestRange], mut offset: u64, mut bytes: &[u8]) {
        for range in ranges {
            if bytes.is_empty() {
                return;
            }
            if offset >= range.len {
                offset -= range.len;
                continue;
            }
            let take = (range.len - offset).min(bytes.len() as u64) as usize;
            let at = (range.addr + offset) as usize;
            self.ram
                .bytes_mut()
                .and_then(|ram| ram.write_at(at, &bytes[..take]))
                .expect("the demo's RAM is mapped writable and its ranges lie inside it");
            bytes = &bytes[take..];
            offset = 0;
        }
    }

    /// Redraws `rects` (picture coordinates) of the current frame into buffer `index`.
    fn draw(&mut self, index: usize, rects: &[Rect]) {
        let desc = self.buffer_desc(index);
        let DemoConfig {
            width,
            height,
            format,
            y0_top,
            ..
        } = self.config;
        let row_in_memory = |y: u32| if y0_top { y } else { height - 1 - y };
        for rect in rects {
            for y in rect.y..rect.y + rect.height {
                let mem_row = u64::from(row_in_memory(y));
                for x in rect.x..rect.x + rect.width {
                    let rgb = pattern_rgb(width, height, self.frame, x, y);
                    let bpp = format.bytes_per_pixel() as usize;
                    let fb_offset = mem_row * u64::from(self.stride) + u64::from(x) * bpp as u64;
                    let mut pixel = [0u8; 4];
                    if format == PixelFormat::Nv12 {
                        pixel[0] = rgb_to_ycbcr(rgb)[0];
                    } else {
                        encode_packed(format, rgb, &mut pixel[..bpp]);
                    }
                    self.write_fb(&desc.ranges, fb_offset, &pixel[..bpp]);
                }
            }
            if format == PixelFormat::Nv12 {
                self.draw_chroma(&desc, *rect);
            }
        }
    }

    /// Chroma of the 2×2 blocks touching `rect`: the top-left pixel's colour (in memory
    /// order), which keeps single-colour areas exact.
    fn draw_chroma(&mut self, desc: &FramebufferDesc, rect: Rect) {
        let DemoConfig {
            width,
            height,
            y0_top,
            ..
        } = self.config;
        let chroma = self.planes[1];
        let (mem_top, mem_bottom) = if y0_top {
            (rect.y, rect.y + rect.height)
        } else {
            (height - rect.y - rect.height, height - rect.y)
        };
        for mem_cy in (mem_top / 2)..mem_bottom.div_ceil(2) {
            for cx in (rect.x / 2)..(rect.x + rect.width).div_ceil(2) {
                // Chroma rows follow memory rows: chroma row r covers memory rows 2r, 2r+1.
                let mem_row = (mem_cy * 2).min(height - 1);
                let picture_row = if y0_top {
                    mem_row
                } else {
                    height - 1 - mem_row
                };
                let x = (cx * 2).min(width - 1);
                let [_, cb, cr] =
                    rgb_to_ycbcr(pattern_rgb(width, height, self.frame, x, picture_row));
                let fb_offset = chroma.offset
                    + u64::from(mem_cy) * u64::from(chroma.stride)
                    + u64::from(cx) * 2;
                self.write_fb(&desc.ranges, fb_offset, &[cb, cr]);
            }
        }
    }
}

/// Refuses hugetlb guest RAM of `needed` pages when the pool has fewer free, before
/// any allocation.
fn check_pool(page_size: u64, needed: u64) -> Result<(), ExportError> {
    let free = sys::hugetlb::pool(page_size).map_or(0, |pool| pool.free);
    if free >= needed {
        return Ok(());
    }
    Err(ExportError::PoolExhausted {
        page_size,
        needed,
        free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffer `index`'s picture, as (R, G, B) per pixel (XRGB8888, not scattered).
    fn picture(guest: &DemoGuest, index: usize) -> Vec<[u8; 3]> {
        let desc = guest.buffer_desc(index);
        let base = desc.ranges[0].addr as usize;
        let ram = guest.ram.bytes().to_vec();
        let (width, height) = (guest.config.width, guest.config.height);
        let mut out = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let at = base + (y * guest.stride + x * 4) as usize;
                out.push([ram[at + 2], ram[at + 1], ram[at]]);
            }
        }
        out
    }

    fn expected(width: u32, height: u32, frame: u64) -> Vec<[u8; 3]> {
        (0..height)
            .flat_map(|y| (0..width).map(move |x| pattern_rgb(width, height, frame, x, y)))
            .collect()
    }

    #[test]
    fn double_buffered_guest_draws_into_the_back_buffer_and_flips() {
        let (width, height) = (96, 64);
        let mut guest = DemoGuest::new(DemoConfig {
            width,
            height,
            stride_padding: 16,
            buffering: Buffering::Double,
            ..DemoConfig::default()
        })
        .expect("demo guest");
        assert_eq!(guest.buffer_count(), 2);
        assert_eq!((guest.front_index(), guest.front_buffer_id()), (0, 1));
        assert_eq!(guest.back_buffer_id(), 2);
        let (first, second) = (guest.buffer_desc(0), guest.buffer_desc(1));
        assert!(second.ranges[0].addr >= first.ranges[0].addr + first.ranges[0].len);
        assert_eq!(second.ranges[0].addr % sys::page_size(), 0);
        assert_eq!(picture(&guest, 0), expected(width, height, 0));
        for frame in 1..=9u64 {
            let front_before = picture(&guest, guest.front_index());
            let damage = guest.step();
            assert_eq!(guest.frame(), frame);
            let front = guest.front_index();
            assert_eq!(front, (frame % 2) as usize, "flips every frame");
            assert_eq!(guest.desc(), guest.buffer_desc(front));
            assert_eq!(guest.frame_in_buffer(front), Some(frame));
            assert_eq!(guest.frame_in_buffer(1 - front), Some(frame - 1));
            // The new front buffer is exactly the new picture…
            assert_eq!(picture(&guest, front), expected(width, height, frame));
            // …the old front was not touched…
            assert_eq!(picture(&guest, 1 - front), front_before);
            // …and the damage covers every pixel that changed between the pictures.
            let old = expected(width, height, frame - 1);
            let new = expected(width, height, frame);
            for (i, (a, b)) in old.iter().zip(&new).enumerate() {
                if a != b {
                    let (x, y) = (i as u32 % width, i as u32 / width);
                    assert!(
                        damage.iter().any(|r| contains(*r, x, y)),
                        "frame {frame}: ({x}, {y}) changed outside the damage"
                    );
                }
            }
        }
    }

    #[test]
    fn single_buffered_guest_draws_in_place() {
        let mut guest = DemoGuest::new(DemoConfig {
            width: 64,
            height: 48,
            ..DemoConfig::default()
        })
        .expect("demo guest");
        assert_eq!(guest.back_buffer_id(), guest.front_buffer_id());
        let desc = guest.desc();
        guest.step();
        assert_eq!(guest.desc(), desc);
        assert_eq!(guest.front_index(), 0);
        assert_eq!(picture(&guest, 0), expected(64, 48, 1));
    }
}
