#!/usr/bin/python3
"""QMP screendump of the nested guest, and a check against fbtest's final picture.

  qmp-shot.py SOCKET OUT.png [--head N] [--check H W HEIGHT]

Takes a PNG (for people) and a PPM (for the check) screendump of head N (default 0)
through the QMP socket. With --check, compares the PPM with fbtest's final picture of
head H at W x HEIGHT (frame 11; formula in fbtest.c / README.md) and prints the number
of mismatching pixels; exit status 1 when any differ. Standard library only.
"""
import json
import os
import socket
import sys
import time

FINAL_FRAME = 11


def expected_pixel_fn(head, w, h, f=FINAL_FRAME):
    rw, rh = w // 8, h // 8
    rx, ry = (f * 40) % (w - rw), (f * 30) % (h - rh)
    fill = (255, (f * 20) % 256, (255 - 100 * head) % 256)
    bg_b = (64 + 128 * head) % 256

    def px(x, y):
        if rx <= x < rx + rw and ry <= y < ry + rh:
            return fill
        return (x * 255 // (w - 1), y * 255 // (h - 1), bg_b)

    return px


def expected_rgb(head, w, h, f=FINAL_FRAME):
    px = expected_pixel_fn(head, w, h, f)
    out = bytearray()
    for y in range(h):
        for x in range(w):
            out += bytes(px(x, y))
    return bytes(out)


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(120)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("QMP closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.f.write(json.dumps(req).encode() + b"\n")
        self.f.flush()
        rep = self._read()
        if "error" in rep:
            raise RuntimeError(f"QMP {name}: {rep['error']}")
        return rep["return"]


def read_ppm(path):
    data = open(path, "rb").read()
    fields = []
    pos = 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    pos += 1
    assert fields[0] == b"P6" and fields[3] == b"255", fields
    return int(fields[1]), int(fields[2]), data[pos:]


def main(argv):
    sock, png = argv[1], argv[2]
    head, check = 0, None
    i = 3
    while i < len(argv):
        if argv[i] == "--head":
            head = int(argv[i + 1])
            i += 2
        elif argv[i] == "--check":
            check = tuple(int(v) for v in argv[i + 1:i + 4])
            i += 4
        else:
            raise SystemExit(f"unknown argument {argv[i]}")
    q = Qmp(sock)
    # The console of head N of the device with id "gpu" (run-nested.sh names it so).
    extra = {"device": "gpu", "head": head} if head else {}
    t = time.monotonic()
    q.cmd("screendump", filename=png, format="png", **extra)
    ppm = os.path.splitext(png)[0] + ".ppm"
    q.cmd("screendump", filename=ppm, format="ppm", **extra)
    print(f"qmp-shot: {png} and {ppm} in {time.monotonic() - t:.1f} s")
    if check is None:
        return 0
    eh, ew, ehh = check
    w, h, rgb = read_ppm(ppm)
    print(f"qmp-shot: screendump is {w}x{h}, expected {ew}x{ehh} (head {eh})")
    if (w, h) != (ew, ehh):
        return 1
    exp = expected_rgb(eh, w, h)
    bad = sum(1 for p in range(w * h) if rgb[3 * p:3 * p + 3] != exp[3 * p:3 * p + 3])
    if bad:
        first = next(p for p in range(w * h) if rgb[3 * p:3 * p + 3] != exp[3 * p:3 * p + 3])
        print(f"qmp-shot: first mismatch at ({first % w},{first // w}): got "
              f"{tuple(rgb[3 * first:3 * first + 3])}, expected {tuple(exp[3 * first:3 * first + 3])}")
    print(f"qmp-shot: {bad} of {w * h} pixels differ from fbtest's final picture")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
