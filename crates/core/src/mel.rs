//! Log-mel spectrograms (docs/method.md, "Audio augmentations": 16 kHz, 128 mel bins, n_fft 1024, hop
//! 512), computed for whole batches on the device, with a plain-Rust reference.
//!
//! The definition is librosa's defaults: a centred STFT (zero padding of `n_fft / 2` on both sides)
//! with a periodic Hann window, the power spectrum, Slaney's mel scale and area normalisation
//! (`librosa.filters.mel`), then decibels with a floor: `10 log10(max(mel, 1e-10))`. On the device
//! the STFT is one strided 1-D convolution with the windowed cosine and sine bases, and the mel
//! projection one matrix product.
//!
//! The encoder sees the decibels mapped to [0, 1]: `(dB - floor_db) / (top_db - floor_db)`, clamped,
//! the same scale as image pixels, so the rest of the pipeline (normalisation, 8-bit storage of
//! un-augmented clips for downstream tasks) is shared with images.

use burn::prelude::*;
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

/// The front-end's settings (stored in audio checkpoints' configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MelConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    /// The decibel value mapped to 0 (also the floor of the logarithm).
    pub floor_db: f32,
    /// The decibel value mapped to 1.
    pub top_db: f32,
}

impl Default for MelConfig {
    fn default() -> Self {
        Self { sample_rate: 16_000, n_fft: 1024, hop: 512, n_mels: 128, floor_db: -100.0, top_db: 40.0 }
    }
}

impl MelConfig {
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of a clip of `len` samples (centred STFT).
    pub fn frames(&self, len: usize) -> usize {
        len / self.hop + 1
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.n_fft < 2 || !self.n_fft.is_multiple_of(2) || self.hop == 0 || self.n_mels == 0 || self.sample_rate == 0 {
            return Err(format!(
                "mel settings: n_fft must be even and >= 2, hop, n_mels and sample_rate >= 1 (got n_fft {}, hop {}, n_mels {}, rate {})",
                self.n_fft, self.hop, self.n_mels, self.sample_rate
            ));
        }
        if !(self.floor_db.is_finite() && self.top_db.is_finite() && self.floor_db < self.top_db) {
            return Err(format!("mel settings: floor_db {} must be below top_db {}", self.floor_db, self.top_db));
        }
        Ok(())
    }

    /// Decibels to the encoder's [0, 1] scale.
    pub fn to_unit(&self, db: f32) -> f32 {
        ((db - self.floor_db) / (self.top_db - self.floor_db)).clamp(0.0, 1.0)
    }
}

fn hz_to_mel(f: f64) -> f64 {
    // Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    let (f_sp, min_log_hz, min_log_mel, logstep) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if f < min_log_hz { f / f_sp } else { min_log_mel + (f / min_log_hz).ln() / logstep }
}

fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel, logstep) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if m < min_log_mel { f_sp * m } else { min_log_hz * (logstep * (m - min_log_mel)).exp() }
}

/// The mel filterbank `[n_mels, n_fft / 2 + 1]`, row-major (librosa's `filters.mel` with its
/// defaults: Slaney scale, `norm="slaney"`, 0 Hz to Nyquist).
pub fn filterbank(c: &MelConfig) -> Vec<f64> {
    let bins = c.bins();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(c.sample_rate as f64 / 2.0));
    let mel_f: Vec<f64> = (0..c.n_mels + 2).map(|j| mel_to_hz(lo + (hi - lo) * j as f64 / (c.n_mels + 1) as f64)).collect();
    let fft_f: Vec<f64> = (0..bins).map(|k| k as f64 * c.sample_rate as f64 / c.n_fft as f64).collect();
    let mut w = vec![0.0; c.n_mels * bins];
    for m in 0..c.n_mels {
        let (l, ce, r) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let norm = 2.0 / (r - l);
        for (k, &f) in fft_f.iter().enumerate() {
            let v = ((f - l) / (ce - l)).min((r - f) / (r - ce)).max(0.0);
            w[m * bins + k] = v * norm;
        }
    }
    w
}

fn hann(n_fft: usize) -> Vec<f64> {
    (0..n_fft).map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos()).collect()
}

/// The log-mel spectrogram of one clip in decibels, `[n_mels, frames]` row-major, by direct DFT
/// in f64 (slow; the reference for [`LogMel`]).
pub fn log_mel_reference(wave: &[f32], c: &MelConfig) -> Vec<f32> {
    let (bins, frames) = (c.bins(), c.frames(wave.len()));
    let window = hann(c.n_fft);
    let fb = filterbank(c);
    let half = c.n_fft / 2;
    let sample = |j: isize| if j < 0 || j as usize >= wave.len() { 0.0 } else { wave[j as usize] as f64 };
    let mut out = vec![0f32; c.n_mels * frames];
    for t in 0..frames {
        let start = (t * c.hop) as isize - half as isize;
        let frame: Vec<f64> = (0..c.n_fft).map(|n| sample(start + n as isize) * window[n]).collect();
        let power: Vec<f64> = (0..bins)
            .map(|k| {
                let (mut re, mut im) = (0.0, 0.0);
                for (n, &v) in frame.iter().enumerate() {
                    let a = 2.0 * std::f64::consts::PI * ((k * n) % c.n_fft) as f64 / c.n_fft as f64;
                    re += v * a.cos();
                    im -= v * a.sin();
                }
                re * re + im * im
            })
            .collect();
        for m in 0..c.n_mels {
            let mel: f64 = (0..bins).map(|k| fb[m * bins + k] * power[k]).sum();
            out[m * frames + t] = (10.0 * mel.max(1e-10).log10()) as f32;
        }
    }
    out
}

/// How an audio encoder's inputs are made: clips of `clip_samples` samples at the front-end's rate,
/// turned into `[1, n_mels, frames]` log-mel images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFrontEnd {
    pub mel: MelConfig,
    pub clip_samples: usize,
}

impl AudioFrontEnd {
    /// `[1, n_mels, frames]`.
    pub fn input_shape(&self) -> [usize; 3] {
        [1, self.mel.n_mels, self.mel.frames(self.clip_samples)]
    }

    /// The un-augmented input images of `clips` (each already `clip_samples` long),
    /// as `u8` (the [0, 1] scale in 256 steps: `(top_db - floor_db) / 255` dB each), `[n, 1, n_mels,
    /// frames]` row-major; computed on `device` in chunks of 256 clips.
    pub fn images_u8(&self, clips: &[impl AsRef<[f32]>], device: &Device) -> Vec<u8> {
        let front = LogMel::new(&self.mel, device);
        let len = self.clip_samples;
        let mut out = Vec::with_capacity(clips.len() * self.input_shape().iter().product::<usize>());
        for chunk in clips.chunks(256) {
            assert!(chunk.iter().all(|c| c.as_ref().len() == len), "clips must be {len} samples long");
            let wave: Vec<f32> = chunk.iter().flat_map(|c| c.as_ref().iter().copied()).collect();
            let x = front.forward(Tensor::<1>::from_floats(wave.as_slice(), device).reshape([chunk.len(), len]));
            let v: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 spectrograms");
            out.extend(v.into_iter().map(|u| (u * 255.0).round() as u8));
        }
        out
    }
}

/// The batched device front-end: waveforms `[B, L]` to `[B, 1, n_mels, frames]` on the [0, 1] scale.
#[derive(Debug, Clone)]
pub struct LogMel {
    pub config: MelConfig,
    /// `[2 * bins, 1, n_fft]`: windowed cosines, then windowed sines.
    basis: Tensor<3>,
    /// `[1, n_mels, bins]`.
    mel: Tensor<3>,
}

impl LogMel {
    pub fn new(config: &MelConfig, device: &Device) -> Self {
        let (bins, n) = (config.bins(), config.n_fft);
        let window = hann(n);
        let mut basis = vec![0f32; 2 * bins * n];
        for k in 0..bins {
            for j in 0..n {
                let a = 2.0 * std::f64::consts::PI * ((k * j) % n) as f64 / n as f64;
                basis[k * n + j] = (window[j] * a.cos()) as f32;
                basis[(bins + k) * n + j] = (window[j] * a.sin()) as f32;
            }
        }
        let fb: Vec<f32> = filterbank(config).into_iter().map(|v| v as f32).collect();
        Self {
            config: config.clone(),
            basis: Tensor::<1>::from_floats(basis.as_slice(), device).reshape([2 * bins, 1, n]),
            mel: Tensor::<1>::from_floats(fb.as_slice(), device).reshape([1, config.n_mels, bins]),
        }
    }

    /// Decibels, `[B, n_mels, frames]`.
    pub fn decibels(&self, wave: Tensor<2>) -> Tensor<3> {
        let c = &self.config;
        let [b, _] = wave.dims();
        let bins = c.bins();
        let options = ConvOptions::new([c.hop], [c.n_fft / 2], [1], 1);
        let spec = conv1d(wave.unsqueeze_dim::<3>(1), self.basis.clone(), None, options); // [B, 2 bins, T]
        let t = spec.dims()[2];
        let re = spec.clone().slice([0..b, 0..bins, 0..t]);
        let im = spec.slice([0..b, bins..2 * bins, 0..t]);
        let power = re.clone() * re + im.clone() * im;
        let mel = self.mel.clone().expand([b, c.n_mels, bins]).matmul(power);
        mel.clamp_min(1e-10).log() * (10.0 / std::f32::consts::LN_10)
    }

    /// The encoder's input: `[B, 1, n_mels, frames]` in [0, 1].
    pub fn forward(&self, wave: Tensor<2>) -> Tensor<4> {
        let c = &self.config;
        let db = self.decibels(wave);
        ((db - c.floor_db) / (c.top_db - c.floor_db)).clamp(0.0, 1.0).unsqueeze_dim(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0.5 sin(2 pi 1000 t) + 0.25 sin(2 pi 3000 t), 0.5 s at 16 kHz.
    fn two_tones() -> Vec<f32> {
        (0..8000)
            .map(|n| {
                let t = n as f32 / 16_000.0;
                0.5 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin() + 0.25 * (2.0 * std::f32::consts::PI * 3000.0 * t).sin()
            })
            .collect()
    }

    #[test]
    fn filterbank_matches_librosa() {
        // librosa 0.11.0: M = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128);
        // M[64] is non-zero on bins 107..=112; M[5, 8..=10]; M[127, 488..=490].
        let c = MelConfig::default();
        let fb = filterbank(&c);
        let row = |m: usize| &fb[m * 513..(m + 1) * 513];
        let nonzero: Vec<usize> = (0..513).filter(|&k| row(64)[k] > 0.0).collect();
        assert_eq!(nonzero, (107..=112).collect::<Vec<_>>());
        let expected = [0.00191041, 0.01121671, 0.020523, 0.01881828, 0.00973371, 0.00064914];
        for (k, e) in (107..=112).zip(expected) {
            assert!((row(64)[k] - e).abs() < 1e-7, "M[64, {k}] = {} vs {e}", row(64)[k]);
        }
        for (m, k, e) in [(5, 8, 0.014789481647312641), (5, 9, 0.0421658419072628), (5, 10, 0.013588061556220055), (127, 488, 4.7641341e-05), (127, 490, 9.3941996e-04)] {
            assert!((fb[m * 513 + k] - e).abs() < 1e-8, "M[{m}, {k}] = {} vs {e}", fb[m * 513 + k]);
        }
    }

    #[test]
    fn a_tones_energy_lands_in_its_mel_bin_with_librosas_values() {
        // librosa 0.11.0: S = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=1024,
        // hop_length=512, n_mels=128, center=True, pad_mode='constant');
        // D = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None). Frame 8 (the middle) peaks
        // at mel bin 42 (1 kHz) then 41, 43 and 87 (3 kHz); D[:, 0] has the onset's leakage.
        let c = MelConfig::default();
        let db = log_mel_reference(&two_tones(), &c);
        let frames = c.frames(8000);
        assert_eq!(frames, 16);
        let at = |m: usize, t: usize| db[m * frames + t];
        let mut order: Vec<usize> = (0..128).collect();
        order.sort_by(|&a, &b| at(b, 8).total_cmp(&at(a, 8)));
        assert_eq!(&order[..4], &[42, 41, 43, 87]);
        for (m, t, e) in [
            (41, 8, 25.113704681396484),
            (42, 8, 28.031600952148438),
            (0, 0, -9.248143196105957),
            (10, 0, -8.641383171081543),
            (40, 0, 14.094843864440918),
            (42, 0, 23.13286018371582),
            (60, 0, -15.688404083251953),
            (72, 0, -42.79216766357422),
            (100, 0, -20.311491012573242),
            (127, 0, -29.429996490478516),
        ] {
            assert!((at(m, t) - e).abs() < 0.02, "dB[{m}, {t}] = {} vs librosa's {e}", at(m, t));
        }
        // far from both tones only rounding noise is left (librosa's float32 gives the -100 dB floor)
        assert!(at(100, 8) < -60.0, "{}", at(100, 8));
    }

    #[test]
    fn the_device_front_end_matches_the_reference() {
        let device = Device::flex();
        let c = MelConfig::default();
        let a = two_tones();
        let b: Vec<f32> = (0..8000).map(|n| ((n * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2).collect();
        let wave = Tensor::<1>::from_floats([a.clone(), b.clone()].concat().as_slice(), &device).reshape([2, 8000]);
        let front = LogMel::new(&c, &device);
        let db: Vec<f32> = front.decibels(wave.clone()).into_data().try_to_vec::<f32>().unwrap();
        let unit: Vec<f32> = front.forward(wave).into_data().try_to_vec::<f32>().unwrap();
        for (n, x) in [a, b].iter().enumerate() {
            let reference = log_mel_reference(x, &c);
            let got = &db[n * 128 * 16..(n + 1) * 128 * 16];
            for (j, (g, r)) in got.iter().zip(&reference).enumerate() {
                // f32 rounding decides values far below the signal; compare the audible range
                if *r > -60.0 {
                    assert!((g - r).abs() < 0.05, "clip {n}, value {j}: {g} vs {r} dB");
                }
                assert!((unit[n * 2048 + j] - c.to_unit(*g)).abs() < 1e-6);
            }
        }
    }
}
