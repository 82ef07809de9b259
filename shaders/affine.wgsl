// Affine bilinear resampling of a batch: random resized crop + horizontal flip during pretraining,
// rotation / translation / scale / shear / vertical flip for invariance measurement.
// CPU reference: `affine_reference` in crates/augment/src/affine.rs (same formulas, same order).
//
// One invocation per output pixel (all channels). Output sample `s` reads source image
// `s % num_src`, so the two views of a batch are one dispatch.
//
// Per-sample parameters (f32, `param_stride` per sample; layout of `ViewParams::pack`):
//   [0..6)  a b c d e f   source position = (a x + b y + c, d x + e y + f) for output pixel (x, y)
//   [6..10) x0 y0 x1 y1   inclusive source bounds
//   [10]    1 = taps outside the bounds read `fill`, 0 = clamp the position into the bounds
//   [11]    fill value

// Source images: u8 packed four per word (little-endian), or f32 bits when info[8] == 0.
@group(0) @binding(0) var<storage, read_write> source: array<u32>;
// Output images, f32 in [0, 1]: [num_out, channels, out_h, out_w].
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
// Per-sample parameters: [num_out, param_stride].
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
// [num_out, num_src, channels, in_h, in_w, out_h, out_w, param_stride, source_is_u8]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

fn load(i: u32) -> f32 {
    if (info[8] == 1u) {
        let word = source[i >> 2u];
        return f32((word >> ((i & 3u) * 8u)) & 0xffu) / 255.0;
    }
    return bitcast<f32>(source[i]);
}

// Tap (x, y) of channel plane `base` under the fill rule.
fn tap_fill(base: u32, x: f32, y: f32, bounds: vec4<f32>, fill: f32, in_h: u32, in_w: u32) -> f32 {
    if (x < bounds.x || x > bounds.z || y < bounds.y || y > bounds.w || x < 0.0 || y < 0.0 ||
        x >= f32(in_w) || y >= f32(in_h)) {
        return fill;
    }
    return load(base + u32(y) * in_w + u32(x));
}

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let num_out = info[0];
    let num_src = info[1];
    let channels = info[2];
    let in_h = info[3];
    let in_w = info[4];
    let out_h = info[5];
    let out_w = info[6];
    let stride = info[7];

    // 2-D dispatch for batches with more than 65535 workgroups of pixels.
    let id = gid.x + gid.y * groups.x * {{ workgroup_size }}u;
    let out_hw = out_h * out_w;
    if (id >= num_out * out_hw) {
        return;
    }
    let s = id / out_hw;
    let p = id % out_hw;
    let x = f32(p % out_w);
    let y = f32(p / out_w);

    let q = s * stride;
    var sx = params[q + 0u] * x + params[q + 1u] * y + params[q + 2u];
    var sy = params[q + 3u] * x + params[q + 4u] * y + params[q + 5u];
    let bounds = vec4<f32>(params[q + 6u], params[q + 7u], params[q + 8u], params[q + 9u]);
    let fill_outside = params[q + 10u] > 0.5;
    let fill = params[q + 11u];

    let src_base = (s % num_src) * channels * in_h * in_w;
    let out_base = s * channels * out_hw;
    if (fill_outside) {
        let x0 = floor(sx);
        let y0 = floor(sy);
        let wx = sx - x0;
        let wy = sy - y0;
        for (var c = 0u; c < channels; c++) {
            let base = src_base + c * in_h * in_w;
            let top = tap_fill(base, x0, y0, bounds, fill, in_h, in_w) * (1.0 - wx)
                + tap_fill(base, x0 + 1.0, y0, bounds, fill, in_h, in_w) * wx;
            let bottom = tap_fill(base, x0, y0 + 1.0, bounds, fill, in_h, in_w) * (1.0 - wx)
                + tap_fill(base, x0 + 1.0, y0 + 1.0, bounds, fill, in_h, in_w) * wx;
            output[out_base + c * out_hw + p] = top * (1.0 - wy) + bottom * wy;
        }
    } else {
        sx = clamp(sx, bounds.x, bounds.z);
        sy = clamp(sy, bounds.y, bounds.w);
        let fx0 = floor(sx);
        let fy0 = floor(sy);
        let wx = sx - fx0;
        let wy = sy - fy0;
        let x0 = u32(fx0);
        let y0 = u32(fy0);
        let x1 = u32(min(fx0 + 1.0, bounds.z));
        let y1 = u32(min(fy0 + 1.0, bounds.w));
        for (var c = 0u; c < channels; c++) {
            let base = src_base + c * in_h * in_w;
            let top = load(base + y0 * in_w + x0) * (1.0 - wx) + load(base + y0 * in_w + x1) * wx;
            let bottom = load(base + y1 * in_w + x0) * (1.0 - wx) + load(base + y1 * in_w + x1) * wx;
            output[out_base + c * out_hw + p] = top * (1.0 - wy) + bottom * wy;
        }
    }
}
