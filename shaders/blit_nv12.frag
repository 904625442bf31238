#version 300 es
// Converts NV12 imported as two GL_TEXTURE_2D planes: u_tex is the luma plane (R8,
// width x height), u_chroma the CbCr plane (GR88, ceil(w/2) x ceil(h/2): Cb in R, Cr in
// G). Texels are fetched without filtering: each pixel takes its own luma sample and
// the chroma sample at (x/2, y/2) of memory coordinates, whatever the orientation.
// BT.601 limited range with exactly the integer math of guestfb's CPU converter
// (src/import/convert.rs, nv12_to_rgb), so the picture is bit-exact with it:
//   C = Y - 16, D = Cb - 128, E = Cr - 128
//   R = clamp((298 C + 409 E + 128) >> 8)
//   G = clamp((298 C - 100 D - 208 E + 128) >> 8)
//   B = clamp((298 C + 516 D + 128) >> 8)
precision highp float;
precision highp int;

uniform highp sampler2D u_tex;
uniform highp sampler2D u_chroma;
in vec2 v_uv;
out vec4 frag_color;

int byte_of(float unorm) {
    return int(floor(unorm * 255.0 + 0.5));
}

void main() {
    ivec2 size = textureSize(u_tex, 0);
    ivec2 csize = textureSize(u_chroma, 0);
    ivec2 pos = clamp(ivec2(floor(v_uv * vec2(size))), ivec2(0), size - 1);
    ivec2 cpos = min(pos / 2, csize - 1);
    int y = byte_of(texelFetch(u_tex, pos, 0).r);
    vec2 cbcr = texelFetch(u_chroma, cpos, 0).rg;
    int d = byte_of(cbcr.r) - 128;
    int e = byte_of(cbcr.g) - 128;
    int c = 298 * (y - 16) + 128;
    ivec3 rgb = clamp(ivec3(c + 409 * e, c - 100 * d - 208 * e, c + 516 * d) >> 8,
                      ivec3(0), ivec3(255));
    frag_color = vec4(vec3(rgb) / 255.0, 1.0);
}
