//! Opens a window with [`ShmPresenter`] and animates a square over a gradient, sending only
//! the damaged rectangles each frame. A stepping stone for the viewer.
//!
//! ```text
//! eval "$(scripts/weston-headless.sh start --kiosk --width 800 --height 600)"
//! cargo run --example shm_demo -- --frames 120 --screenshot /tmp/demo.png
//! scripts/weston-headless.sh stop "$XDG_RUNTIME_DIR"
//! ```

#[cfg(feature = "wayland")]
mod demo {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use clap::Parser;
    use guestfb::present::wayland::{PresenterEvent, PresenterOptions, ShmPresenter};
    use guestfb::rect::Rect;

    /// Animate a pattern in a wl_shm window.
    #[derive(Debug, Parser)]
    struct Args {
        /// Frame width in pixels.
        #[arg(long, default_value_t = 640)]
        width: u32,
        /// Frame height in pixels.
        #[arg(long, default_value_t = 480)]
        height: u32,
        /// Frames to present before exiting (0: until the window is closed).
        #[arg(long, default_value_t = 300)]
        frames: u64,
        /// After the last frame, save the compositor's screenshot here (weston with
        /// --debug and weston-screenshooter needed).
        #[arg(long)]
        screenshot: Option<PathBuf>,
    }

    /// The picture at one moment: a gradient with a square at `square`.
    struct Scene {
        width: u32,
        height: u32,
        square: Rect,
    }

    impl Scene {
        fn at(width: u32, height: u32, frame: u64) -> Self {
            let side = (width.min(height) / 6).max(1);
            let span_x = u64::from(width - side).max(1);
            let span_y = u64::from(height - side).max(1);
            // Bounce along both axes.
            let bounce = |t: u64, span: u64| {
                let p = t % (2 * span);
                (if p < span { p } else { 2 * span - p }) as u32
            };
            Self {
                width,
                height,
                square: Rect::new(
                    bounce(frame * 5, span_x),
                    bounce(frame * 3, span_y),
                    side,
                    side,
                ),
            }
        }

        fn pixel(&self, x: u32, y: u32) -> u32 {
            let s = self.square;
            if x >= s.x && u64::from(x) < s.right() && y >= s.y && u64::from(y) < s.bottom() {
                0xffff_d040
            } else {
                let r = x * 255 / self.width.max(1);
                let g = y * 255 / self.height.max(1);
                0xff00_0000 | r << 16 | g << 8 | 0x60
            }
        }

        fn paint(&self, pixels: &mut [u8], stride: u32, rects: &[Rect]) {
            for rect in rects {
                for y in rect.y..rect.y + rect.height {
                    let row = &mut pixels[(y * stride) as usize..];
                    for x in rect.x..rect.x + rect.width {
                        row[x as usize * 4..][..4].copy_from_slice(&self.pixel(x, y).to_le_bytes());
                    }
                }
            }
        }
    }

    fn screenshot(to: &Path) -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("shm_demo-shot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let status = Command::new("weston-screenshooter")
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("weston-screenshooter: {e}"))?;
        // It exits 0 even when weston refuses (no --debug): look for the file.
        let png = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .ok_or(format!(
                "weston-screenshooter ({status}) wrote no PNG; is weston running with --debug?"
            ))?;
        std::fs::copy(&png, to).map_err(|e| format!("{}: {e}", to.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let args = Args::parse();
        let mut options = PresenterOptions::new(args.width, args.height);
        options.title = "guestfb shm demo".to_owned();
        let mut presenter = ShmPresenter::connect(options)?;

        let start = Instant::now();
        let mut shown: Option<Scene> = None;
        let mut frame_no = 0u64;
        let mut skipped = 0u64;
        loop {
            for event in presenter.dispatch(Some(Duration::from_millis(100)))? {
                match event {
                    PresenterEvent::Close => return Ok(()),
                    PresenterEvent::Configure {
                        width,
                        height,
                        scale,
                    } => {
                        eprintln!(
                            "window {width}x{height} at scale {scale}, picture {:?}",
                            presenter.placement()
                        );
                    }
                    PresenterEvent::FrameDone { .. } => {}
                }
            }
            if args.frames != 0 && frame_no >= args.frames {
                break;
            }
            let Some(mut frame) = presenter.next_buffer()? else {
                skipped += 1;
                continue;
            };
            let scene = Scene::at(args.width, args.height, frame_no);
            // What changed on screen: the old and the new square (or everything at first).
            let damage = match &shown {
                Some(old) => vec![old.square, scene.square],
                None => vec![Rect::full(args.width, args.height)],
            };
            let stride = frame.stride();
            let rects = frame.repair_rects(&damage);
            scene.paint(frame.pixels(), stride, &rects);
            frame.present(&damage)?;
            shown = Some(scene);
            frame_no += 1;
        }
        // Let the last frame reach the screen before capturing it.
        while !presenter.is_ready() {
            presenter.dispatch(Some(Duration::from_millis(100)))?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        eprintln!(
            "{frame_no} frames in {elapsed:.2} s ({:.1} fps), {skipped} waits for the compositor",
            frame_no as f64 / elapsed
        );
        if let Some(path) = &args.screenshot {
            screenshot(path)?;
            eprintln!("screenshot: {}", path.display());
        }
        Ok(())
    }
}

#[cfg(feature = "wayland")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    demo::main()
}

#[cfg(not(feature = "wayland"))]
fn main() {
    eprintln!("shm_demo needs the `wayland` feature");
    std::process::exit(1);
}
