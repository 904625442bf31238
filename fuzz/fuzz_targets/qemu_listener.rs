//! Fuzzes what a peer claiming to be QEMU can send the listener: a sequence of method
//! calls (every method the listener serves, on the right interface or another, with
//! arguments of its signature or of another method's) whose numbers lean to the edges
//! (0, 1, sizes around the limits, u32::MAX) and whose fds are of every kind (memfds
//! sealed, unsealed and empty, a pipe, /dev/null, a directory). Each call must be
//! answered or refused with an error; never a panic, a SIGBUS or unbounded memory.
#![no_main]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use guestfb::source::qemu::{
    ListenerOptions, DMABUF2_IFACE, LISTENER_IFACE, LISTENER_PATH, MAP_IFACE,
};
use guestfb::sys::memfd::{Memfd, Seals};
use guestfb::testing::ListenerHarness;
use libfuzzer_sys::fuzz_target;
use zbus::zvariant::Fd;

/// Largest pixel data a call carries: small surfaces find the same bugs as large ones,
/// and zvariant's (instrumented) byte loops make big data slow.
const MAX_DATA: usize = 4096;

/// The fds a call can carry.
fn fds() -> &'static [OwnedFd] {
    static FDS: OnceLock<Vec<OwnedFd>> = OnceLock::new();
    FDS.get_or_init(|| {
        let sealed = Memfd::create("fuzz-sealed").expect("memfd");
        sealed.set_size(256 << 10).expect("size");
        sealed.add_seals(Seals::SHRINK | Seals::GROW).expect("seal");
        let unsealed = Memfd::create("fuzz-unsealed").expect("memfd");
        unsealed.set_size(64 << 10).expect("size");
        let empty = Memfd::create("fuzz-empty").expect("memfd");
        let (reader, _writer) = std::io::pipe().expect("pipe");
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().expect("dup");
        vec![
            dup(sealed.as_fd()),
            dup(unsealed.as_fd()),
            dup(empty.as_fd()),
            reader.into(),
            std::fs::File::open("/dev/null").expect("/dev/null").into(),
            std::fs::File::open("/").expect("/").into(),
        ]
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        first
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
    /// Mostly values near the edges, sometimes anything.
    fn u32(&mut self) -> u32 {
        const EDGES: [u32; 12] = [0, 1, 2, 4, 8, 16, 32, 64, 16384, 16385, 1 << 31, u32::MAX];
        match self.byte() % 4 {
            0 => self.u64() as u32,
            1 => u32::from(self.byte()) * 4,
            _ => EDGES[usize::from(self.byte()) % EDGES.len()],
        }
    }
    fn i32(&mut self) -> i32 {
        match self.byte() % 8 {
            0 => -(i32::from(self.byte())),
            7 => i32::MIN,
            _ => self.u32() as i32,
        }
    }
    fn pixman(&mut self) -> u32 {
        const PIXMAN: [u32; 4] = [0x2002_0888, 0x2002_8888, 0x1002_0565, 0x1803_0888];
        match self.byte() % 6 {
            0 => self.u32(),
            index => PIXMAN[usize::from(index - 1) % PIXMAN.len()],
        }
    }
    fn fourcc(&mut self) -> u32 {
        const FOURCC: [&[u8; 4]; 5] = [b"XR24", b"AR24", b"XB24", b"NV12", b"RG16"];
        match self.byte() % 7 {
            0 => self.u32(),
            index => u32::from_le_bytes(*FOURCC[usize::from(index - 1) % FOURCC.len()]),
        }
    }
    fn data(&mut self) -> Vec<u8> {
        let len = match self.byte() % 4 {
            0 => usize::from(self.byte()),
            1 => 16 * 16 * 4,
            2 => 8 * 8 * 4,
            _ => (self.u32() as usize) % MAX_DATA,
        };
        vec![self.byte(); len]
    }
    fn fd(&mut self) -> Fd<'static> {
        let fds = fds();
        Fd::from(fds[usize::from(self.byte()) % fds.len()].as_fd())
    }
}

/// The listener's methods, each with its interface and the arguments of its signature.
fn call(input: &mut Reader<'_>) -> Option<zbus::Message> {
    let method = input.byte() % 13;
    let (member, iface) = match method {
        0 => ("Scanout", LISTENER_IFACE),
        1 => ("Update", LISTENER_IFACE),
        2 => ("ScanoutDMABUF", LISTENER_IFACE),
        3 => ("ScanoutDMABUF2", DMABUF2_IFACE),
        4 => ("UpdateDMABUF", LISTENER_IFACE),
        5 => ("ScanoutMap", MAP_IFACE),
        6 => ("UpdateMap", MAP_IFACE),
        7 => ("Disable", LISTENER_IFACE),
        8 => ("MouseSet", LISTENER_IFACE),
        9 => ("CursorDefine", LISTENER_IFACE),
        10 => ("Get", "org.freedesktop.DBus.Properties"),
        11 => ("GetAll", "org.freedesktop.DBus.Properties"),
        _ => ("Introspect", "org.freedesktop.DBus.Introspectable"),
    };
    // Now and then the wrong interface, or another method's arguments.
    let iface = match input.byte() % 16 {
        0 => MAP_IFACE,
        1 => DMABUF2_IFACE,
        2 => "org.example.Nothing",
        _ => iface,
    };
    let args = if input.byte() % 16 == 0 {
        input.byte() % 13
    } else {
        method
    };
    let builder = zbus::Message::method_call(LISTENER_PATH, member)
        .ok()?
        .interface(iface)
        .ok()?;
    let built = match args {
        0 => builder.build(&(
            input.u32(),
            input.u32(),
            input.u32(),
            input.pixman(),
            input.data(),
        )),
        1 => builder.build(&(
            input.i32(),
            input.i32(),
            input.i32(),
            input.i32(),
            input.u32(),
            input.pixman(),
            input.data(),
        )),
        2 => builder.build(&(
            input.fd(),
            input.u32(),
            input.u32(),
            input.u32(),
            input.fourcc(),
            input.u64(),
            input.byte() % 2 == 0,
        )),
        3 => {
            let planes = usize::from(input.byte() % 6);
            let fds: Vec<Fd<'static>> = (0..planes).map(|_| input.fd()).collect();
            let offsets: Vec<u32> = (0..usize::from(input.byte() % 6))
                .map(|_| input.u32())
                .collect();
            let strides: Vec<u32> = (0..usize::from(input.byte() % 6))
                .map(|_| input.u32())
                .collect();
            builder.build(&(
                fds,
                input.u32(),
                input.u32(),
                input.u32(),
                input.u32(),
                offsets,
                strides,
                input.u32(),
                input.fourcc(),
                input.u32(),
                input.u32(),
                input.u64(),
                input.byte() % 2 == 0,
            ))
        }
        4 | 6 => builder.build(&(input.i32(), input.i32(), input.i32(), input.i32())),
        5 => builder.build(&(
            input.fd(),
            input.u32(),
            input.u32(),
            input.u32(),
            input.u32(),
            input.pixman(),
        )),
        7 | 12 => builder.build(&()),
        8 => builder.build(&(input.i32(), input.i32(), input.i32())),
        9 => builder.build(&(
            input.i32(),
            input.i32(),
            input.i32(),
            input.i32(),
            input.data(),
        )),
        10 => builder.build(&(LISTENER_IFACE, "Interfaces")),
        _ => builder.build(&(LISTENER_IFACE,)),
    };
    built.ok()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader(data);
    let options = ListenerOptions {
        map: input.byte() % 4 != 0,
        dmabuf2: input.byte() % 4 != 0,
    };
    let Ok(mut listener) = ListenerHarness::new(options) else {
        return;
    };
    // A session of up to 16 calls: a scanout, then updates of it, a Disable…
    for _ in 0..(input.byte() % 16) + 1 {
        if input.0.is_empty() {
            break;
        }
        if let Some(message) = call(&mut input) {
            let _ = listener.call(&message);
        }
    }
});
