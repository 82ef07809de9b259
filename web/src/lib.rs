//! The browser page's WebAssembly side (see the README's section "The browser page"). The page
//! (`index.html`, `app.js`) draws and handles input; everything it computes comes from here, and
//! everything here comes from the same crates as the `ail` command line ([`engine`]).
//!
//! The backend: WebGPU through burn's wgpu backend when the browser gives an adapter, otherwise
//! burn's CPU backend (flex) compiled to WebAssembly; the page shows which, with the adapter.

pub mod dial;
pub mod engine;
pub mod fixture;

/// The wasm-bindgen layer the page calls (wasm32 only).
#[cfg(target_family = "wasm")]
mod bindings;

/// The encoder the page opens by default, fetched at start (not compiled into the module):
/// `ail export --web` of the built-in demo run (README), at `web/assets/` in the repository and
/// `assets/` beside the page.
pub const BUILTIN_EXPORT_FILE: &str = "encoder.ailweb";
/// Probe images of the dial: statistics (and PCA points), and how many of them are measured.
pub const PROBE_IMAGES: usize = 128;
pub const MEASURED_IMAGES: usize = 8;

