//! Guest memory, framebuffer descriptions and their export as udmabufs.
