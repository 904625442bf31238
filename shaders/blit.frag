#version 300 es
// Samples an imported framebuffer bound as GL_TEXTURE_2D. EGL maps the DRM fourcc to
// R, G, B(, A) already; u_opaque = 1.0 forces alpha to 1 for formats without alpha.
precision highp float;

uniform sampler2D u_tex;
uniform float u_opaque;
in vec2 v_uv;
out vec4 frag_color;

void main() {
    vec4 c = texture(u_tex, v_uv);
    frag_color = vec4(c.rgb, mix(c.a, 1.0, u_opaque));
}
