// One pass of the separable gaussian blur (reflect padding), with solarize fused into the
// vertical pass. CPU reference: `blur_solarize_reference` in crates/augment/src/blur_solarize.rs.
//
// One invocation per output element. Per-sample parameters used (layout of `ViewParams::pack`):
//   [19] blur sigma (<= 0: this pass copies)
//   [20] solarize threshold (> 1: off)

// Input images, f32: [num, channels, height, width].
@group(0) @binding(0) var<storage, read_write> input: array<f32>;
// Output images, same shape.
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
// Per-sample parameters: [num, param_stride].
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
// [num, channels, height, width, param_stride, radius, vertical (0/1), solarize (0/1)]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

fn reflect(i: i32, n: i32) -> i32 {
    if (n == 1) {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = ((i % period) + period) % period;
    return select(period - m, m, m < n);
}

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let num = info[0];
    let channels = info[1];
    let height = info[2];
    let width = info[3];
    let stride = info[4];
    let radius = i32(info[5]);
    let vertical = info[6] == 1u;
    let solarize = info[7] == 1u;

    let id = gid.x + gid.y * groups.x * {{ workgroup_size }}u;
    let hw = height * width;
    if (id >= num * channels * hw) {
        return;
    }
    let s = id / (channels * hw);
    let plane = id - id % hw;
    let p = id % hw;
    let x = i32(p % width);
    let y = i32(p / width);
    let sigma = params[s * stride + 19u];

    var value: f32;
    if (sigma <= 0.0) {
        value = input[id];
    } else {
        var norm = 0.0;
        for (var d = -radius; d <= radius; d++) {
            let t = f32(d) / sigma;
            norm += exp(-0.5 * t * t);
        }
        var acc = 0.0;
        for (var d = -radius; d <= radius; d++) {
            let t = f32(d) / sigma;
            let w = exp(-0.5 * t * t) / norm;
            var src: u32;
            if (vertical) {
                src = plane + u32(reflect(y + d, i32(height))) * width + u32(x);
            } else {
                src = plane + u32(y) * width + u32(reflect(x + d, i32(width)));
            }
            acc += w * input[src];
        }
        value = acc;
    }
    let threshold = params[s * stride + 20u];
    if (solarize && threshold <= 1.0 && value >= threshold) {
        value = 1.0 - value;
    }
    output[id] = value;
}
