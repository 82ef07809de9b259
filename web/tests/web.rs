//! The page's computations in WebAssembly, in headless Chromium (`scripts/web.sh test`): the tiny
//! case of `ail_web::fixture` on burn's CPU backend compiled to wasm32 must equal what the native
//! CPU backend recorded in `tests/fixtures/expected.json` (`cargo test -p ail-tests --test
//! web_engine` checks that file against the native build).
//!
//! The same comparison on WebGPU runs in the end-to-end test (`e2e/test.mjs` calls the page's
//! `self_check`): on SwiftShader the first WebGPU use compiles and tunes kernels for minutes, part
//! of it on the page's thread, longer than chromedriver's 30 s limit on an unresponsive page, which
//! ends a wasm-bindgen test run; playwright waits.
#![cfg(target_family = "wasm")]

use ail_web::fixture::{self, Outcome};
use burn::tensor::Device;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const TINY: &[u8] = include_bytes!("fixtures/tiny.ailweb");
const EXPECTED: &str = include_str!("fixtures/expected.json");

fn expected() -> Outcome {
    serde_json::from_str(EXPECTED).expect("expected.json parses")
}

#[wasm_bindgen_test]
async fn the_cpu_backend_in_wasm_equals_the_native_one() {
    let got = fixture::run(TINY, &Device::flex(), &Device::flex()).await.unwrap();
    let diff = fixture::differences(&got, &expected(), 1e-4);
    assert!(diff.is_empty(), "wasm CPU differs from native CPU: {diff:?}");
}

/// The direct convolution's SIMD128 kernels (forward and kernel gradient) equal the im2col path on
/// the grid of odd shapes that the native test runs with AVX2 and AVX-512.
#[wasm_bindgen_test]
fn the_simd128_convolution_equals_im2col() {
    use ail_core::kernels::conv_direct::{Isa, compare_with_im2col};
    assert_eq!(Isa::detected(), vec![Isa::Simd128], "the page is built with +simd128");
    let compared = compare_with_im2col().unwrap_or_else(|e| panic!("{e}"));
    assert!(compared >= 30, "{compared} comparisons");
}

#[wasm_bindgen_test]
async fn bad_exports_get_messages_not_panics() {
    let err = ail_web::engine::open(b"<html>not a model</html>", "page.html", &Device::flex()).err().unwrap();
    assert!(err.contains("page.html") && err.contains("not an encoder export"), "{err}");
    let err = ail_web::engine::open(&TINY[..TINY.len() / 3], "cut.ailweb", &Device::flex()).err().unwrap();
    assert!(err.contains("truncated"), "{err}");
}
