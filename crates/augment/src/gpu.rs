//! Launchers of the WGSL kernels in `shaders/` on burn's own wgpu tensors (no host copy): each is
//! a backend-extension op, so it also runs inside burn's fusion stream.
//!
//! Every kernel reads an `info` array of `u32` (sizes) uploaded with the launch, and the per-sample
//! parameter tensor `[num, PARAM_STRIDE]` drawn on the host. All bindings are `read_write` storage
//! buffers, as cubecl sub-allocates handles from shared pools.

use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::KernelId;
use cubecl::server::KernelArguments;
use cubecl::{CubeCount, CubeDim};

use std::sync::atomic::{AtomicU32, Ordering};

use crate::PARAM_STRIDE;

/// Threads per workgroup of every augmentation kernel (substituted for `{{ workgroup_size }}`).
pub const WORKGROUP_SIZE: u32 = 256;

/// The kernels, by file stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    Affine,
    ColorJitter,
    BlurSolarize,
}

impl Shader {
    pub const ALL: [Shader; 3] = [Shader::Affine, Shader::ColorJitter, Shader::BlurSolarize];

    /// The WGSL template, as in `shaders/<stem>.wgsl`.
    pub fn template(self) -> &'static str {
        match self {
            Shader::Affine => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/affine.wgsl")),
            Shader::ColorJitter => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/color_jitter.wgsl"))
            }
            Shader::BlurSolarize => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/blur_solarize.wgsl"))
            }
        }
    }

    pub fn stem(self) -> &'static str {
        match self {
            Shader::Affine => "affine",
            Shader::ColorJitter => "color_jitter",
            Shader::BlurSolarize => "blur_solarize",
        }
    }

    /// The WGSL source with the template values filled in (what the device compiles).
    pub fn source(self) -> String {
        self.source_template().complete()
    }

    fn source_template(self) -> SourceTemplate {
        SourceTemplate::new(self.template()).register("workgroup_size", WORKGROUP_SIZE.to_string())
    }
}

#[derive(Debug)]
struct AugmentKernel {
    shader: Shader,
}

impl KernelSource for AugmentKernel {
    fn source(&self) -> SourceTemplate {
        self.shader.source_template()
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.shader.stem(), WORKGROUP_SIZE))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Most workgroups along x of one dispatch (WebGPU's minimum limit); the rest go along y and the
/// kernels rebuild the linear index from `num_workgroups`. Tests lower it to exercise the 2-D grid.
static MAX_GROUPS_X: AtomicU32 = AtomicU32::new(65_535);

/// Lowers the x-limit of the dispatch grid (tests only: results must not change).
#[doc(hidden)]
pub fn set_max_groups_x(limit: u32) {
    MAX_GROUPS_X.store(limit.clamp(1, 65_535), Ordering::Relaxed);
}

fn grid(groups: usize) -> CubeCount {
    let groups = groups.max(1) as u32;
    let x = groups.min(MAX_GROUPS_X.load(Ordering::Relaxed));
    CubeCount::Static(x, groups.div_ceil(x), 1)
}

fn launch(shader: Shader, groups: usize, buffers: Vec<&CubeTensor>, info: &[u32], any: &CubeTensor) {
    let client = any.client.clone();
    let info_bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
    let info_handle = client.create_from_slice(&info_bytes);
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(info_handle.binding());
    let cube_dim = CubeDim::new_1d(WORKGROUP_SIZE);
    client.launch(
        Box::new(SourceKernel::new(AugmentKernel { shader }, cube_dim)),
        grid(groups),
        KernelArguments::new().with_buffers(bindings),
    );
}

fn f32_output(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// Launches `affine.wgsl`: `dims` = `[num_out, num_src, channels, in_h, in_w, out_h, out_w]`;
/// `source` holds packed `u8` (`source_is_u8`) or f32 images.
fn affine(source: CubeTensor, params: CubeTensor, dims: [u32; 7], source_is_u8: bool) -> CubeTensor {
    let source = into_contiguous(source);
    let params = into_contiguous(params);
    let [num_out, _, channels, _, _, out_h, out_w] = dims;
    let output = f32_output(&params, Shape::new([num_out as usize, channels as usize, out_h as usize, out_w as usize]));
    let mut info = dims.to_vec();
    info.extend([PARAM_STRIDE as u32, source_is_u8 as u32]);
    let pixels = num_out as usize * out_h as usize * out_w as usize;
    launch(Shader::Affine, pixels.div_ceil(WORKGROUP_SIZE as usize), vec![&source, &output, &params], &info, &params);
    output
}

/// The augmentation kernels as burn backend operations.
#[backend_extension(Cube, Fusion)]
pub trait AugmentOps: Backend {
    /// `affine.wgsl` on `u8` images packed four per `i32`: `[num_src, C, in_h, in_w]` ->
    /// `[num_out, C, out_h, out_w]` f32; output sample `s` reads source `s % num_src`.
    #[fusion(dtype = burn::tensor::DType::F32, shape = Shape::new([dims.0 as usize, dims.2 as usize, dims.5 as usize, dims.6 as usize]))]
    fn augment_affine_u8(
        packed: IntTensor<Self>,
        params: FloatTensor<Self>,
        dims: (u32, u32, u32, u32, u32, u32, u32),
    ) -> FloatTensor<Self>;

    /// `affine.wgsl` on f32 images `[num_src, C, H, W]` -> `[num_out, C, out_h, out_w]`.
    #[fusion(dtype = images, shape = Shape::new([*num_out as usize, images[1], *out_h as usize, *out_w as usize]))]
    fn augment_affine_f32(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        num_out: u32,
        out_h: u32,
        out_w: u32,
    ) -> FloatTensor<Self>;

    /// `color_jitter.wgsl`: `[num, C, H, W]` -> same shape.
    #[fusion(dtype = images, shape = images)]
    fn augment_color_jitter(images: FloatTensor<Self>, params: FloatTensor<Self>) -> FloatTensor<Self>;

    /// One pass of `blur_solarize.wgsl`: `[num, C, H, W]` -> same shape.
    #[fusion(dtype = images, shape = images)]
    fn augment_blur_solarize(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        radius: u32,
        vertical: bool,
        solarize: bool,
    ) -> FloatTensor<Self>;
}

impl AugmentOps for CubeBackend {
    fn augment_affine_u8(
        packed: CubeTensor,
        params: CubeTensor,
        (num_out, num_src, channels, in_h, in_w, out_h, out_w): (u32, u32, u32, u32, u32, u32, u32),
    ) -> CubeTensor {
        affine(packed, params, [num_out, num_src, channels, in_h, in_w, out_h, out_w], true)
    }

    fn augment_affine_f32(images: CubeTensor, params: CubeTensor, num_out: u32, out_h: u32, out_w: u32) -> CubeTensor {
        let [num_src, channels, in_h, in_w]: [usize; 4] = images.meta.shape().dims();
        let dims = [num_out, num_src as u32, channels as u32, in_h as u32, in_w as u32, out_h, out_w];
        affine(images, params, dims, false)
    }

    fn augment_color_jitter(images: CubeTensor, params: CubeTensor) -> CubeTensor {
        let images = into_contiguous(images);
        let params = into_contiguous(params);
        let [num, channels, height, width]: [usize; 4] = images.meta.shape().dims();
        let output = f32_output(&images, images.meta.shape().clone());
        if num == 0 {
            return output;
        }
        let info = [num as u32, channels as u32, height as u32, width as u32, PARAM_STRIDE as u32];
        launch(Shader::ColorJitter, num, vec![&images, &output, &params], &info, &images);
        output
    }

    fn augment_blur_solarize(
        images: CubeTensor,
        params: CubeTensor,
        radius: u32,
        vertical: bool,
        solarize: bool,
    ) -> CubeTensor {
        let images = into_contiguous(images);
        let params = into_contiguous(params);
        let [num, channels, height, width]: [usize; 4] = images.meta.shape().dims();
        let output = f32_output(&images, images.meta.shape().clone());
        let info = [
            num as u32,
            channels as u32,
            height as u32,
            width as u32,
            PARAM_STRIDE as u32,
            radius,
            vertical as u32,
            solarize as u32,
        ];
        let elements = num * channels * height * width;
        launch(
            Shader::BlurSolarize,
            elements.div_ceil(WORKGROUP_SIZE as usize),
            vec![&images, &output, &params],
            &info,
            &images,
        );
        output
    }
}
