#version 300 es
// Samples an imported framebuffer bound as GL_TEXTURE_EXTERNAL_OES (YUV formats: the
// driver converts to RGB using the EGLImage's colour space hints).
#extension GL_OES_EGL_image_external_essl3 : require
precision highp float;

uniform samplerExternalOES u_tex;
uniform float u_opaque;
in vec2 v_uv;
out vec4 frag_color;

void main() {
    vec4 c = texture(u_tex, v_uv);
    frag_color = vec4(c.rgb, mix(c.a, 1.0, u_opaque));
}
