#version 300 es
// A quad covering the viewport, drawn as a 4-vertex triangle strip without vertex
// buffers. u_src holds texture coordinates: (u_left, v_top, u_right, v_bottom), where
// "top" is the picture's top row, so flipping for y0_top is a matter of the uniform.
precision highp float;

uniform vec4 u_src;
out vec2 v_uv;

void main() {
    vec2 corner = vec2(float(gl_VertexID & 1), float((gl_VertexID >> 1) & 1));
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
    // corner.y == 1.0 is the top of the viewport.
    v_uv = vec2(mix(u_src.x, u_src.z, corner.x), mix(u_src.w, u_src.y, corner.y));
}
