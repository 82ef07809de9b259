// Colour jitter (brightness, contrast, saturation, hue in a per-sample order) then grayscale, one
// workgroup per image. CPU reference: `color_jitter_reference` in
// crates/augment/src/color_jitter.rs (torchvision's functional formulas).
//
// Every thread owns the pixels p = lid, lid + WG, ... of its image (all channels of each), copies
// them to the output and works there, so per-pixel ops need no synchronisation; contrast needs the
// image's mean luma, a workgroup reduction.
//
// Per-sample parameters used (layout of `ViewParams::pack`):
//   [12..16) brightness, contrast, saturation factors, hue shift
//   [16]     order code: op k runs at position j where code = o0 + 4 o1 + 16 o2 + 64 o3
//            (0 brightness, 1 contrast, 2 saturation, 3 hue)
//   [17]     jitter on (1) / off (0)
//   [18]     grayscale on (1) / off (0)

// Input images, f32 in [0, 1]: [num, channels, height, width].
@group(0) @binding(0) var<storage, read_write> input: array<f32>;
// Output images, same shape.
@group(0) @binding(1) var<storage, read_write> image: array<f32>;
// Per-sample parameters: [num, param_stride].
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
// [num, channels, height, width, param_stride]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

const WG: u32 = {{ workgroup_size }}u;

var<workgroup> partial: array<f32, WG>;
// Values that steer control flow around barriers must be workgroup-uniform:
// [sample in range, jitter on, order code, grayscale on]
var<workgroup> steer: array<u32, 4>;

fn luma(r: f32, g: f32, b: f32) -> f32 {
    return 0.2989 * r + 0.587 * g + 0.114 * b;
}

fn blend(x: f32, other: f32, f: f32) -> f32 {
    return clamp(f * x + (1.0 - f) * other, 0.0, 1.0);
}

fn rgb_to_hsv(c: vec3<f32>) -> vec3<f32> {
    let maxc = max(c.r, max(c.g, c.b));
    let minc = min(c.r, min(c.g, c.b));
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / select(maxc, 1.0, eqc);
    let div = select(cr, 1.0, eqc);
    let rc = (maxc - c.r) / div;
    let gc = (maxc - c.g) / div;
    let bc = (maxc - c.b) / div;
    var h: f32;
    if (maxc == c.r) {
        h = bc - gc;
    } else if (maxc == c.g) {
        h = 2.0 + rc - bc;
    } else {
        h = 4.0 + gc - rc;
    }
    let x = h / 6.0 + 1.0;
    return vec3<f32>(x - floor(x), s, maxc);
}

fn hsv_to_rgb(hsv: vec3<f32>) -> vec3<f32> {
    let h = hsv.x;
    let s = hsv.y;
    let v = hsv.z;
    let fi = floor(h * 6.0);
    let f = h * 6.0 - fi;
    let i = ((i32(fi) % 6) + 6) % 6;
    let p = clamp(v * (1.0 - s), 0.0, 1.0);
    let q = clamp(v * (1.0 - s * f), 0.0, 1.0);
    let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
    switch i {
        case 0: { return vec3<f32>(v, t, p); }
        case 1: { return vec3<f32>(q, v, p); }
        case 2: { return vec3<f32>(p, v, t); }
        case 3: { return vec3<f32>(p, q, v); }
        case 4: { return vec3<f32>(t, p, v); }
        default: { return vec3<f32>(v, p, q); }
    }
}

// Mean luma (or mean value for one channel) of image `base`, shared by the workgroup.
fn mean_luma(base: u32, channels: u32, hw: u32, lid: u32) -> f32 {
    var sum = 0.0;
    for (var p = lid; p < hw; p += WG) {
        if (channels == 3u) {
            sum += luma(image[base + p], image[base + hw + p], image[base + 2u * hw + p]);
        } else {
            sum += image[base + p];
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let mean = partial[0] / f32(hw);
    workgroupBarrier();
    return mean;
}

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let sample = wid.x + wid.y * groups.x;
    let num = info[0];
    let channels = info[1];
    let hw = info[2] * info[3];
    let q = min(sample, num - 1u) * info[4];
    if (lid == 0u) {
        steer[0] = select(0u, 1u, sample < num);
        steer[1] = u32(params[q + 17u]);
        steer[2] = u32(params[q + 16u]);
        steer[3] = u32(params[q + 18u]);
    }
    let uniform = workgroupUniformLoad(&steer);
    if (uniform[0] == 0u) {
        return;
    }
    let base = sample * channels * hw;
    let factors = vec4<f32>(params[q + 12u], params[q + 13u], params[q + 14u], params[q + 15u]);
    for (var p = lid; p < hw; p += WG) {
        for (var c = 0u; c < channels; c++) {
            image[base + c * hw + p] = input[base + c * hw + p];
        }
    }

    if (uniform[1] == 1u) {
        for (var j = 0u; j < 4u; j++) {
            let op = (uniform[2] >> (2u * j)) & 3u;
            if (op == 0u || op == 1u) {
                // brightness blends with 0, contrast with the mean luma
                var other = 0.0;
                var f = factors.x;
                if (op == 1u) {
                    other = mean_luma(base, channels, hw, lid);
                    f = factors.y;
                }
                for (var p = lid; p < hw; p += WG) {
                    for (var c = 0u; c < channels; c++) {
                        image[base + c * hw + p] = blend(image[base + c * hw + p], other, f);
                    }
                }
            } else if (channels == 3u) {
                for (var p = lid; p < hw; p += WG) {
                    let rgb = vec3<f32>(image[base + p], image[base + hw + p], image[base + 2u * hw + p]);
                    var out: vec3<f32>;
                    if (op == 2u) {
                        let l = luma(rgb.r, rgb.g, rgb.b);
                        out = vec3<f32>(blend(rgb.r, l, factors.z), blend(rgb.g, l, factors.z), blend(rgb.b, l, factors.z));
                    } else {
                        var hsv = rgb_to_hsv(rgb);
                        let h = hsv.x + factors.w;
                        hsv.x = h - floor(h);
                        out = hsv_to_rgb(hsv);
                    }
                    image[base + p] = out.r;
                    image[base + hw + p] = out.g;
                    image[base + 2u * hw + p] = out.b;
                }
            }
        }
    }
    if (uniform[3] == 1u && channels == 3u) {
        for (var p = lid; p < hw; p += WG) {
            let l = luma(image[base + p], image[base + hw + p], image[base + 2u * hw + p]);
            image[base + p] = l;
            image[base + hw + p] = l;
            image[base + 2u * hw + p] = l;
        }
    }
}
