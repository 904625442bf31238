/*
 * fbtest: /init (PID 1) of the nested guest's initramfs (scripts/guest/nested-setup.sh).
 *
 * Loads the virtio-gpu DRM modules listed in /lib/modules/load, opens /dev/dri/card0,
 * and draws a known picture on every head with KMS dumb buffers (blob resources when the
 * device has blob=true and no virgl), page-flipping between two buffers per head.
 * Raw ioctls only (no libdrm).
 *
 * PICTURE (exact; a test recomputes it). For head h (0-based, in connector order), mode
 * width W, height H, frame f, pixel (x, y), 0 <= x < W, 0 <= y < H:
 *
 *   rect(f)  = RX, RY, RW, RH  with  RW = W / 8, RH = H / 8,
 *              RX = (f * 40) % (W - RW),  RY = (f * 30) % (H - RH)       (integer maths)
 *   inside   = RX <= x < RX + RW  and  RY <= y < RY + RH
 *   if inside:  R = 255,  G = (f * 20) % 256,  B = (255 - 100 * h) % 256 (h < 3)
 *   else:       R = x * 255 / (W - 1),  G = y * 255 / (H - 1),  B = (64 + 128 * h) % 256
 *   the pixel is the 32-bit value 0xFF000000 | R << 16 | G << 8 | B (DRM XRGB8888,
 *   little-endian: bytes in memory B, G, R, 0xFF); pitch as the kernel chose (the
 *   picture itself is W x H).
 *
 * SEQUENCE (console lines on /dev/console, fallback /dev/kmsg):
 *   phase 1: frames 0..9 at the connector's first (preferred) mode:
 *            draw frame f into the back buffer, PAGE_FLIP to it (with an event; the
 *            event is read before the next flip), then DIRTYFB on it with two clips,
 *            rect(f-1) and rect(f) (the whole screen for the first frame of a mode).
 *            Prints "fbtest: head H frame F WxH damage X,Y,W,H" (X,Y,W,H = rect(f)).
 *            Frame 0 is shown with SETCRTC instead of a flip.
 *   phase 2: every head switches to a second mode ("800x600" if listed, else the
 *            connector's second mode), with new dumb buffers of that size:
 *            "fbtest: head H mode WxH"; frame 10 is shown with SETCRTC, frame 11 with
 *            PAGE_FLIP (lines as in phase 1).
 *   phase 3: frame 11 is drawn into the other buffer too, "fbtest: done" is printed,
 *            and the two (identical) buffers are flipped forever, one flip per head
 *            every ~300 ms. FINAL PICTURE of head h = frame 11 at the second mode.
 *   Any failure: "fbtest: ERROR <what>: <strerror> (errno N)", then sleeps forever
 *   (PID 1 must never exit).
 *
 * Heads: the connected connectors, in the order GETRESOURCES lists them. With
 * "fbtest.heads=N" on the kernel command line, the first N connectors are used even if
 * some are disconnected (a disconnected virtio-gpu output has no modes: it borrows the
 * mode list of the first connected one).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <drm/drm.h>
#include <drm/drm_mode.h>
#include <drm/drm_fourcc.h>

#define MAX_HEADS 4
#define MAX_MODES 64
#define FINAL_FRAME 11

static int con_fd = -1;

static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    if (con_fd >= 0)
        (void)!write(con_fd, buf, n);
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void __attribute__((noreturn)) hang(void)
{
    for (;;)
        sleep(3600);
}

static void __attribute__((noreturn)) fail(const char *what)
{
    int e = errno;
    say("fbtest: ERROR %s: %s (errno %d)", what, strerror(e), e);
    hang();
}

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r;
}

struct buf {
    uint32_t handle, fb_id, pitch;
    uint64_t size;
    uint32_t *map;
};

struct head {
    int index;
    uint32_t conn_id, crtc_id;
    struct drm_mode_modeinfo modes[MAX_MODES];
    int nmodes;
    struct drm_mode_modeinfo mode;
    uint32_t w, h;
    struct buf b[2];
    int front; /* index of the buffer on screen */
    int last_frame; /* frame on screen, -1 after a mode change */
};

static int drm_fd = -1;

/* ---- picture ------------------------------------------------------------------------ */

static void rect_of(uint32_t w, uint32_t h, int f, uint32_t r[4])
{
    r[2] = w / 8;
    r[3] = h / 8;
    r[0] = ((uint32_t)f * 40) % (w - r[2]);
    r[1] = ((uint32_t)f * 30) % (h - r[3]);
}

static void draw(struct head *hd, struct buf *b, int f)
{
    uint32_t w = hd->w, h = hd->h, hi = (uint32_t)hd->index;
    static uint32_t row[8192];
    uint32_t r[4];
    rect_of(w, h, f, r);
    uint32_t bg_b = (64 + 128 * hi) % 256;
    uint32_t fill = 0xFF000000u | 255u << 16 | (((uint32_t)f * 20) % 256) << 8
        | ((255 + 256 * 3 - 100 * hi) % 256);
    for (uint32_t y = 0; y < h; y++) {
        uint32_t g = y * 255 / (h - 1);
        for (uint32_t x = 0; x < w; x++)
            row[x] = 0xFF000000u | (x * 255 / (w - 1)) << 16 | g << 8 | bg_b;
        if (y >= r[1] && y < r[1] + r[3])
            for (uint32_t x = r[0]; x < r[0] + r[2]; x++)
                row[x] = fill;
        memcpy((char *)b->map + (size_t)y * b->pitch, row, (size_t)w * 4);
    }
}

/* ---- KMS ---------------------------------------------------------------------------- */

static void create_buf(struct buf *b, uint32_t w, uint32_t h)
{
    struct drm_mode_create_dumb cd = { .height = h, .width = w, .bpp = 32 };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_CREATE_DUMB, &cd) < 0)
        fail("CREATE_DUMB");
    b->handle = cd.handle;
    b->pitch = cd.pitch;
    b->size = cd.size;
    struct drm_mode_fb_cmd2 fb = {
        .width = w, .height = h, .pixel_format = DRM_FORMAT_XRGB8888,
        .handles = { cd.handle }, .pitches = { cd.pitch }, .offsets = { 0 },
    };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_ADDFB2, &fb) < 0)
        fail("ADDFB2");
    b->fb_id = fb.fb_id;
    struct drm_mode_map_dumb md = { .handle = cd.handle };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_MAP_DUMB, &md) < 0)
        fail("MAP_DUMB");
    b->map = mmap(NULL, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, drm_fd, md.offset);
    if (b->map == MAP_FAILED)
        fail("mmap dumb");
}

static void destroy_buf(struct buf *b)
{
    munmap(b->map, b->size);
    uint32_t id = b->fb_id;
    if (xioctl(drm_fd, DRM_IOCTL_MODE_RMFB, &id) < 0)
        fail("RMFB");
    struct drm_mode_destroy_dumb dd = { .handle = b->handle };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_DESTROY_DUMB, &dd) < 0)
        fail("DESTROY_DUMB");
}

static void set_crtc(struct head *hd, int bi)
{
    struct drm_mode_crtc c = {
        .set_connectors_ptr = (uintptr_t)&hd->conn_id, .count_connectors = 1,
        .crtc_id = hd->crtc_id, .fb_id = hd->b[bi].fb_id, .mode_valid = 1, .mode = hd->mode,
    };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_SETCRTC, &c) < 0)
        fail("SETCRTC");
    hd->front = bi;
}

static void wait_flip_event(void)
{
    char ev[1024];
    for (;;) {
        struct pollfd p = { .fd = drm_fd, .events = POLLIN };
        int r = poll(&p, 1, 120000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail("poll for the flip event");
        if (r == 0) {
            errno = ETIMEDOUT;
            fail("no flip event within 120 s");
        }
        ssize_t n = read(drm_fd, ev, sizeof ev);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < (ssize_t)sizeof(struct drm_event))
            fail("read flip event");
        for (ssize_t off = 0; off + (ssize_t)sizeof(struct drm_event) <= n;) {
            struct drm_event *e = (struct drm_event *)(ev + off);
            if (e->type == DRM_EVENT_FLIP_COMPLETE)
                return;
            if (e->length == 0)
                break;
            off += e->length;
        }
    }
}

static void page_flip(struct head *hd, int bi)
{
    struct drm_mode_crtc_page_flip pf = {
        .crtc_id = hd->crtc_id, .fb_id = hd->b[bi].fb_id,
        .flags = DRM_MODE_PAGE_FLIP_EVENT, .user_data = (uint64_t)hd->index,
    };
    int tries = 0;
    while (ioctl(drm_fd, DRM_IOCTL_MODE_PAGE_FLIP, &pf) < 0) {
        if ((errno == EBUSY || errno == EINTR || errno == EAGAIN) && ++tries < 1000) {
            sleep_ms(10);
            continue;
        }
        fail("PAGE_FLIP");
    }
    wait_flip_event();
    hd->front = bi;
}

static void dirty(struct head *hd, int f)
{
    struct drm_clip_rect clips[2];
    unsigned n = 0;
    uint32_t r[4];
    if (hd->last_frame < 0) {
        clips[n++] = (struct drm_clip_rect){ 0, 0, hd->w, hd->h };
    } else {
        rect_of(hd->w, hd->h, hd->last_frame, r);
        clips[n++] = (struct drm_clip_rect){ r[0], r[1], r[0] + r[2], r[1] + r[3] };
        rect_of(hd->w, hd->h, f, r);
        clips[n++] = (struct drm_clip_rect){ r[0], r[1], r[0] + r[2], r[1] + r[3] };
    }
    struct drm_mode_fb_dirty_cmd d = {
        .fb_id = hd->b[hd->front].fb_id, .num_clips = n, .clips_ptr = (uintptr_t)clips,
    };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_DIRTYFB, &d) < 0 && errno != ENOSYS)
        fail("DIRTYFB");
}

/* Shows frame f on head hd: SETCRTC for the first frame of a mode, else a page flip. */
static void show_frame(struct head *hd, int f, int first)
{
    int bi = first ? 0 : 1 - hd->front;
    draw(hd, &hd->b[bi], f);
    if (first)
        set_crtc(hd, bi);
    else
        page_flip(hd, bi);
    dirty(hd, f);
    hd->last_frame = f;
    uint32_t r[4];
    rect_of(hd->w, hd->h, f, r);
    say("fbtest: head %d frame %d %ux%u damage %u,%u,%u,%u", hd->index, f, hd->w, hd->h,
        r[0], r[1], r[2], r[3]);
}

static int get_connector(uint32_t id, struct drm_mode_get_connector *gc,
                         struct drm_mode_modeinfo *modes, uint32_t *encoders, int max)
{
    /* First call: counts (with probing). Second: the arrays. */
    for (int attempt = 0; attempt < 5; attempt++) {
        memset(gc, 0, sizeof *gc);
        gc->connector_id = id;
        if (xioctl(drm_fd, DRM_IOCTL_MODE_GETCONNECTOR, gc) < 0)
            return -1;
        uint32_t nm = gc->count_modes, ne = gc->count_encoders;
        if (nm > (uint32_t)max || ne > 8) {
            errno = E2BIG;
            return -1;
        }
        memset(gc, 0, sizeof *gc);
        gc->connector_id = id;
        gc->count_modes = nm;
        gc->modes_ptr = (uintptr_t)modes;
        gc->count_encoders = ne;
        gc->encoders_ptr = (uintptr_t)encoders;
        if (xioctl(drm_fd, DRM_IOCTL_MODE_GETCONNECTOR, gc) < 0)
            return -1;
        if (gc->count_modes == nm && gc->count_encoders == ne)
            return 0;
    }
    errno = EAGAIN;
    return -1;
}

static int pick_second_mode(struct head *hd)
{
    for (int i = 0; i < hd->nmodes; i++)
        if (hd->modes[i].hdisplay == 800 && hd->modes[i].vdisplay == 600)
            return i;
    for (int i = 1; i < hd->nmodes; i++)
        if (hd->modes[i].hdisplay != hd->modes[0].hdisplay
            || hd->modes[i].vdisplay != hd->modes[0].vdisplay)
            return i;
    return -1;
}

/* ---- boot --------------------------------------------------------------------------- */

static void load_modules(void)
{
    FILE *f = fopen("/lib/modules/load", "r");
    if (!f)
        fail("open /lib/modules/load");
    char name[128];
    while (fscanf(f, "%127s", name) == 1) {
        char path[256];
        snprintf(path, sizeof path, "/lib/modules/%s.ko", name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            fail(path);
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
            char what[300];
            snprintf(what, sizeof what, "finit_module %s", path);
            fail(what);
        }
        close(fd);
        say("fbtest: loaded %s", name);
    }
    fclose(f);
}

static int cmdline_heads(void)
{
    char buf[4096] = { 0 };
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    char *p = strstr(buf, "fbtest.heads=");
    return p ? atoi(p + strlen("fbtest.heads=")) : 0;
}

int main(void)
{
    mkdir("/dev", 0755);
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    con_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (con_fd < 0)
        con_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    say("fbtest: start (uptime-based clock %ld s)", (long)t0.tv_sec);

    load_modules();

    for (int i = 0; i < 600; i++) {
        drm_fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
        if (drm_fd >= 0 || errno != ENOENT)
            break;
        sleep_ms(100);
    }
    if (drm_fd < 0)
        fail("open /dev/dri/card0 (waited 60 s)");
    if (ioctl(drm_fd, DRM_IOCTL_SET_MASTER, 0) < 0)
        say("fbtest: SET_MASTER: %s (continuing; the first opener is master anyway)",
            strerror(errno));
    uint64_t cap = 0;
    struct drm_get_cap gcap = { .capability = DRM_CAP_DUMB_BUFFER };
    if (xioctl(drm_fd, DRM_IOCTL_GET_CAP, &gcap) < 0 || !gcap.value)
        fail("no dumb buffers");
    (void)cap;

    uint32_t conns[16], crtcs[16];
    struct drm_mode_card_res res = { 0 };
    if (xioctl(drm_fd, DRM_IOCTL_MODE_GETRESOURCES, &res) < 0)
        fail("GETRESOURCES");
    if (res.count_connectors > 16 || res.count_crtcs > 16) {
        errno = E2BIG;
        fail("GETRESOURCES: too many objects");
    }
    uint32_t nconn = res.count_connectors, ncrtc = res.count_crtcs;
    memset(&res, 0, sizeof res);
    res.count_connectors = nconn;
    res.connector_id_ptr = (uintptr_t)conns;
    res.count_crtcs = ncrtc;
    res.crtc_id_ptr = (uintptr_t)crtcs;
    if (xioctl(drm_fd, DRM_IOCTL_MODE_GETRESOURCES, &res) < 0)
        fail("GETRESOURCES (2)");

    int want = cmdline_heads();
    static struct head heads[MAX_HEADS];
    int nheads = 0;
    uint32_t used_crtcs = 0;
    int donor = -1; /* a connected head whose modes disconnected ones borrow */
    for (uint32_t i = 0; i < nconn && nheads < MAX_HEADS; i++) {
        struct drm_mode_get_connector gc;
        uint32_t encs[8];
        struct head *hd = &heads[nheads];
        if (get_connector(conns[i], &gc, hd->modes, encs, MAX_MODES) < 0)
            fail("GETCONNECTOR");
        int connected = gc.connection == 1;
        say("fbtest: connector %u (%u) %s, %u modes", i, conns[i],
            connected ? "connected" : "not connected", gc.count_modes);
        if (!connected && (want == 0 || nheads >= want))
            continue;
        hd->nmodes = gc.count_modes;
        /* CRTC: first one allowed by the connector's encoders and not yet used. */
        uint32_t possible = 0;
        for (uint32_t e = 0; e < gc.count_encoders; e++) {
            struct drm_mode_get_encoder ge = { .encoder_id = encs[e] };
            if (xioctl(drm_fd, DRM_IOCTL_MODE_GETENCODER, &ge) < 0)
                fail("GETENCODER");
            possible |= ge.possible_crtcs;
        }
        hd->crtc_id = 0;
        for (uint32_t c = 0; c < ncrtc; c++)
            if ((possible & (1u << c)) && !(used_crtcs & (1u << c))) {
                hd->crtc_id = crtcs[c];
                used_crtcs |= 1u << c;
                break;
            }
        if (!hd->crtc_id) {
            errno = ENODEV;
            fail("no free CRTC for a connector");
        }
        hd->conn_id = conns[i];
        hd->index = nheads;
        if (connected && hd->nmodes > 0 && donor < 0)
            donor = nheads;
        nheads++;
    }
    if (nheads == 0) {
        errno = ENODEV;
        fail("no connected connector");
    }
    for (int i = 0; i < nheads; i++) {
        struct head *hd = &heads[i];
        if (hd->nmodes == 0) {
            if (donor < 0) {
                errno = ENODEV;
                fail("a head without modes and no connected head to borrow from");
            }
            memcpy(hd->modes, heads[donor].modes, sizeof hd->modes);
            hd->nmodes = heads[donor].nmodes;
            say("fbtest: head %d borrows the modes of head %d", i, donor);
        }
        char list[512] = "";
        size_t len = 0;
        for (int m = 0; m < hd->nmodes && len < sizeof list - 16; m++)
            len += snprintf(list + len, sizeof list - len, " %ux%u", hd->modes[m].hdisplay,
                            hd->modes[m].vdisplay);
        say("fbtest: head %d connector %u crtc %u modes:%s", i, hd->conn_id, hd->crtc_id,
            list);
    }

    /* Phase 1: preferred (first) mode, frames 0..9. */
    for (int i = 0; i < nheads; i++) {
        struct head *hd = &heads[i];
        hd->mode = hd->modes[0];
        hd->w = hd->mode.hdisplay;
        hd->h = hd->mode.vdisplay;
        if (hd->w > 8192 || hd->w < 16 || hd->h < 16) {
            errno = EINVAL;
            fail("unusable mode size");
        }
        say("fbtest: head %d mode %ux%u", i, hd->w, hd->h);
        create_buf(&hd->b[0], hd->w, hd->h);
        create_buf(&hd->b[1], hd->w, hd->h);
        hd->last_frame = -1;
    }
    for (int f = 0; f < 10; f++)
        for (int i = 0; i < nheads; i++)
            show_frame(&heads[i], f, f == 0);

    /* Phase 2: a second mode, frames 10..11. */
    for (int i = 0; i < nheads; i++) {
        struct head *hd = &heads[i];
        int m = pick_second_mode(hd);
        if (m < 0) {
            errno = ENOENT;
            fail("no second mode to switch to");
        }
        struct buf old[2] = { hd->b[0], hd->b[1] };
        hd->mode = hd->modes[m];
        hd->w = hd->mode.hdisplay;
        hd->h = hd->mode.vdisplay;
        say("fbtest: head %d mode %ux%u", i, hd->w, hd->h);
        create_buf(&hd->b[0], hd->w, hd->h);
        create_buf(&hd->b[1], hd->w, hd->h);
        hd->last_frame = -1;
        show_frame(hd, 10, 1);
        destroy_buf(&old[0]);
        destroy_buf(&old[1]);
    }
    for (int i = 0; i < nheads; i++)
        show_frame(&heads[i], FINAL_FRAME, 0);

    /* Phase 3: both buffers hold frame 11; flip forever. */
    for (int i = 0; i < nheads; i++)
        draw(&heads[i], &heads[i].b[1 - heads[i].front], FINAL_FRAME);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    say("fbtest: done (%ld s after start)", (long)(t1.tv_sec - t0.tv_sec));
    for (unsigned long n = 0;; n++) {
        sleep_ms(300);
        for (int i = 0; i < nheads; i++)
            page_flip(&heads[i], 1 - heads[i].front);
        if (n % 100 == 99)
            say("fbtest: %lu idle flips", n + 1);
    }
}
