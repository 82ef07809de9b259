//! The seven CLAR audio augmentations (Al-Tahan & Mohsenzadeh 2021; docs/method.md, "Audio
//! augmentations") on 16 kHz waveforms, in the order of the K = 7 descriptor:
//!
//! | entry | op           | parameters (defaults)                                                |
//! |-------|--------------|----------------------------------------------------------------------|
//! | 0     | pitch shift  | +-15 semitones (phase-vocoder stretch, then band-limited resampling)   |
//! | 1     | fade in      | up to 0.5 of the clip; linear, logarithmic or exponential shape      |
//! | 2     | fade out     | as fade in, at the end                                               |
//! | 3     | noise        | white, pink or brown noise at an SNR of 3-30 dB                       |
//! | 4     | time mask    | a segment of up to 0.125 of the clip set to zero                      |
//! | 5     | time shift   | a roll by up to +-0.5 of the clip (samples wrap around)                |
//! | 6     | time stretch | rate 0.5-1.5 (phase vocoder: pitch kept, duration divided by the rate) |
//!
//! A view applies its ops in a fixed order: the resampling ones (stretch, pitch) on the whole clip,
//! then the centred fixed-length crop (or zero padding), then shift, fades, mask and noise. The
//! parameters of a view are drawn from a seeded RNG on the host ([`AudioViewParams::sample`]), so a
//! resumed run replays them exactly. The ops run on the CPU, one view per rayon task.

use std::f32::consts::PI;
use std::sync::Arc;

use rand::Rng;
use rayon::prelude::*;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::AugmentError;

/// Ranges of the audio augmentations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioAugmentConfig {
    /// Pitch shift range, in semitones either way.
    pub pitch_semitones: f32,
    /// Longest fade, as a fraction of the clip.
    pub fade_max: f32,
    /// Noise signal-to-noise ratio range, in dB.
    pub snr_db: [f32; 2],
    /// Longest time mask, as a fraction of the clip.
    pub time_mask_max: f32,
    /// Largest roll either way, as a fraction of the clip.
    pub shift_max: f32,
    /// Time-stretch rate range (above 1: faster, shorter).
    pub stretch: [f32; 2],
}

impl Default for AudioAugmentConfig {
    fn default() -> Self {
        Self { pitch_semitones: 15.0, fade_max: 0.5, snr_db: [3.0, 30.0], time_mask_max: 0.125, shift_max: 0.5, stretch: [0.5, 1.5] }
    }
}

impl AudioAugmentConfig {
    pub fn validate(&self) -> Result<(), AugmentError> {
        let bad = |m: &str| Err(AugmentError::Config(m.to_string()));
        if !(0.0..=48.0).contains(&self.pitch_semitones) {
            return bad("pitch_semitones must be in [0, 48]");
        }
        for (name, v) in [("fade_max", self.fade_max), ("time_mask_max", self.time_mask_max), ("shift_max", self.shift_max)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(AugmentError::Config(format!("{name} must be in [0, 1] (got {v})")));
            }
        }
        if !(self.snr_db[0].is_finite() && self.snr_db[0] <= self.snr_db[1] && self.snr_db[1].is_finite()) {
            return bad("snr_db must be [low, high] with low <= high");
        }
        if !(self.stretch[0] >= 0.1 && self.stretch[0] <= self.stretch[1] && self.stretch[1] <= 10.0) {
            return bad("stretch must be [low, high] with 0.1 <= low <= high <= 10");
        }
        Ok(())
    }
}

/// The shape of a fade (torchaudio's `Fade` formulas), for `t` in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FadeShape {
    Linear,
    Logarithmic,
    Exponential,
}

impl FadeShape {
    pub fn gain(self, t: f32) -> f32 {
        match self {
            FadeShape::Linear => t,
            FadeShape::Logarithmic => ((0.1 + t).log10() + 1.0).clamp(0.0, 1.0),
            FadeShape::Exponential => 2f32.powf((t - 1.0) * 5.0),
        }
    }
}

/// Noise colour: power spectral density proportional to `1 / f^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseColour {
    White,
    Pink,
    Brown,
}

impl NoiseColour {
    fn exponent(self) -> f32 {
        match self {
            NoiseColour::White => 0.0,
            NoiseColour::Pink => 1.0,
            NoiseColour::Brown => 2.0,
        }
    }
}

/// The drawn parameters of one view; `None` where the descriptor switches an op off.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioViewParams {
    pub pitch_semitones: Option<f32>,
    /// Fraction of the clip, shape.
    pub fade_in: Option<(f32, FadeShape)>,
    pub fade_out: Option<(f32, FadeShape)>,
    /// SNR in dB, colour, and the seed of the noise.
    pub noise: Option<(f32, NoiseColour, u64)>,
    /// Start and length, as fractions of the clip.
    pub time_mask: Option<(f32, f32)>,
    /// Roll, as a fraction of the clip (positive: later).
    pub time_shift: Option<f32>,
    pub stretch_rate: Option<f32>,
}

impl AudioViewParams {
    /// The identity view.
    pub fn none() -> Self {
        Self { pitch_semitones: None, fade_in: None, fade_out: None, noise: None, time_mask: None, time_shift: None, stretch_rate: None }
    }

    /// Draws a view's parameters; `on[j]` switches entry `j` of the K = 7 descriptor on.
    pub fn sample(on: [bool; 7], c: &AudioAugmentConfig, rng: &mut impl Rng) -> Self {
        let shape = |rng: &mut dyn rand::RngCore| [FadeShape::Linear, FadeShape::Logarithmic, FadeShape::Exponential][rng.random_range(0..3)];
        // Every draw happens whether or not the op is on, so one op's switch never shifts another's
        // random stream.
        let pitch = rng.random_range(-1.0..=1.0f32) * c.pitch_semitones;
        let fade_in = (rng.random_range(0.0..=c.fade_max), shape(rng));
        let fade_out = (rng.random_range(0.0..=c.fade_max), shape(rng));
        let noise = (
            rng.random_range(c.snr_db[0]..=c.snr_db[1]),
            [NoiseColour::White, NoiseColour::Pink, NoiseColour::Brown][rng.random_range(0..3)],
            rng.random::<u64>(),
        );
        let mask_len = rng.random_range(0.0..=c.time_mask_max);
        let mask = (rng.random_range(0.0..=1.0 - mask_len), mask_len);
        let shift = rng.random_range(-1.0..=1.0f32) * c.shift_max;
        let rate = rng.random_range(c.stretch[0]..=c.stretch[1]);
        Self {
            pitch_semitones: on[0].then_some(pitch),
            fade_in: on[1].then_some(fade_in),
            fade_out: on[2].then_some(fade_out),
            noise: on[3].then_some(noise),
            time_mask: on[4].then_some(mask),
            time_shift: on[5].then_some(shift),
            stretch_rate: on[6].then_some(rate),
        }
    }
}

/// Phase-vocoder time stretch (as librosa's `effects.time_stretch`): the output lasts
/// `len / rate` samples and keeps the pitch.
pub fn time_stretch(x: &[f32], rate: f32) -> Vec<f32> {
    assert!(rate > 0.0 && rate.is_finite(), "the stretch rate must be positive");
    const N: usize = 512;
    const HOP: usize = N / 4;
    let target = (x.len() as f32 / rate).round() as usize;
    if x.is_empty() || (rate - 1.0).abs() < 1e-6 {
        return x.to_vec();
    }
    let window: Vec<f32> = (0..N).map(|n| 0.5 - 0.5 * (2.0 * PI * n as f32 / N as f32).cos()).collect();
    let mut planner = FftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(N);
    let ifft = planner.plan_fft_inverse(N);
    // STFT of the zero-padded (centred) signal.
    let padded: Vec<f32> = std::iter::repeat_n(0.0, N / 2).chain(x.iter().copied()).chain(std::iter::repeat_n(0.0, N)).collect();
    let frames = (padded.len() - N) / HOP + 1;
    let spectra: Vec<Vec<Complex32>> = (0..frames)
        .map(|f| {
            let mut buf: Vec<Complex32> = (0..N).map(|n| Complex32::new(padded[f * HOP + n] * window[n], 0.0)).collect();
            fft.process(&mut buf);
            buf.truncate(N / 2 + 1);
            buf
        })
        .collect();
    // Phase vocoder: read the frames at steps of `rate`, interpolating magnitudes and accumulating
    // phase with each bin's measured frequency.
    let bins = N / 2 + 1;
    let expected: Vec<f32> = (0..bins).map(|k| 2.0 * PI * HOP as f32 * k as f32 / N as f32).collect();
    let mut phase: Vec<f32> = spectra[0].iter().map(|c| c.arg()).collect();
    let mut out_frames = Vec::new();
    let mut t = 0.0f32;
    while (t as usize) + 1 < frames {
        let (i, frac) = (t as usize, t.fract());
        let (a, b) = (&spectra[i], &spectra[i + 1]);
        let frame: Vec<Complex32> = (0..bins)
            .map(|k| {
                let mag = (1.0 - frac) * a[k].norm() + frac * b[k].norm();
                Complex32::from_polar(mag, phase[k])
            })
            .collect();
        for k in 0..bins {
            let mut dphi = b[k].arg() - a[k].arg() - expected[k];
            dphi -= 2.0 * PI * (dphi / (2.0 * PI)).round();
            phase[k] += expected[k] + dphi;
        }
        out_frames.push(frame);
        t += rate;
    }
    // Inverse STFT by weighted overlap-add.
    let len = (out_frames.len() - 1) * HOP + N;
    let mut y = vec![0.0f32; len];
    let mut norm = vec![0.0f32; len];
    for (f, half) in out_frames.iter().enumerate() {
        let mut buf: Vec<Complex32> = (0..N).map(|k| if k < bins { half[k] } else { half[N - k].conj() }).collect();
        ifft.process(&mut buf);
        for n in 0..N {
            y[f * HOP + n] += buf[n].re / N as f32 * window[n];
            norm[f * HOP + n] += window[n] * window[n];
        }
    }
    let y: Vec<f32> = y.iter().zip(&norm).map(|(v, w)| if *w > 1e-3 { v / w } else { 0.0 }).collect();
    y.into_iter().skip(N / 2).chain(std::iter::repeat(0.0)).take(target).collect()
}

/// Pitch shift by `semitones` at the same duration: a time stretch by `1 / r` then resampling by
/// `r`, where `r = 2^(semitones / 12)` (librosa's `effects.pitch_shift`).
pub fn pitch_shift(x: &[f32], semitones: f32) -> Vec<f32> {
    let r = 2f32.powf(semitones / 12.0);
    if x.is_empty() || (r - 1.0).abs() < 1e-6 {
        return x.to_vec();
    }
    let stretched = time_stretch(x, 1.0 / r);
    let mut y = ail_data::audio::resample(&stretched, r as f64, 1.0);
    y.resize(x.len(), 0.0);
    y
}

/// `x` rolled by `shift` samples (positive: later), wrapping around.
pub fn roll(x: &mut [f32], shift: isize) {
    if x.is_empty() {
        return;
    }
    let s = shift.rem_euclid(x.len() as isize) as usize;
    x.rotate_right(s);
}

/// Noise of a colour, unit power, `len` samples, from `seed`.
pub fn coloured_noise(len: usize, colour: NoiseColour, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let white: Vec<f32> = (0..len).map(|_| {
        // Box-Muller
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }).collect();
    let shaped = if colour == NoiseColour::White || len < 2 {
        white
    } else {
        let mut planner = FftPlanner::<f32>::new();
        let mut buf: Vec<Complex32> = white.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        planner.plan_fft_forward(len).process(&mut buf);
        for (k, c) in buf.iter_mut().enumerate() {
            let f = k.min(len - k) as f32;
            *c *= if f == 0.0 { 0.0 } else { f.powf(-colour.exponent() / 2.0) };
        }
        planner.plan_fft_inverse(len).process(&mut buf);
        buf.iter().map(|c| c.re).collect()
    };
    let power = shaped.iter().map(|v| v * v).sum::<f32>() / len.max(1) as f32;
    let scale = if power > 0.0 { power.sqrt().recip() } else { 0.0 };
    shaped.into_iter().map(|v| v * scale).collect()
}

/// Adds noise so that signal power / noise power is `snr_db` (silence gets no noise).
pub fn add_noise(x: &mut [f32], snr_db: f32, colour: NoiseColour, seed: u64) {
    let power = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = (power / 10f32.powf(snr_db / 10.0)).sqrt();
    let noise = coloured_noise(x.len(), colour, seed);
    for (v, n) in x.iter_mut().zip(noise) {
        *v += scale * n;
    }
}

fn fade(x: &mut [f32], fraction: f32, shape: FadeShape, at_end: bool) {
    let n = x.len();
    let len = ((fraction * n as f32).round() as usize).min(n);
    for j in 0..len {
        let g = shape.gain(j as f32 / len as f32);
        let at = if at_end { n - 1 - j } else { j };
        x[at] *= g;
    }
}

/// One view of a clip: the ops of `p` in the module's order, ending at `len` samples.
pub fn augment_clip(clip: &[f32], p: &AudioViewParams, len: usize) -> Vec<f32> {
    let mut x = clip.to_vec();
    if let Some(rate) = p.stretch_rate {
        x = time_stretch(&x, rate);
    }
    if let Some(s) = p.pitch_semitones {
        x = pitch_shift(&x, s);
    }
    let mut x = ail_data::audio::center_fit(&x, len);
    if let Some(shift) = p.time_shift {
        roll(&mut x, (shift * len as f32).round() as isize);
    }
    if let Some((f, shape)) = p.fade_in {
        fade(&mut x, f, shape, false);
    }
    if let Some((f, shape)) = p.fade_out {
        fade(&mut x, f, shape, true);
    }
    if let Some((start, length)) = p.time_mask {
        let (a, b) = ((start * len as f32) as usize, ((start + length) * len as f32) as usize);
        x[a.min(len)..b.min(len)].fill(0.0);
    }
    if let Some((snr, colour, seed)) = p.noise {
        add_noise(&mut x, snr, colour, seed);
    }
    x
}

/// Views of a batch of clips: `views[v]` is applied to `clips[v % clips.len()]`; returns
/// `[views.len() * len]` samples, view-major, computed in parallel.
pub fn augment_batch(clips: &[Arc<Vec<f32>>], views: &[AudioViewParams], len: usize) -> Vec<f32> {
    views
        .par_iter()
        .enumerate()
        .flat_map_iter(|(v, p)| augment_clip(&clips[v % clips.len()], p, len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const RATE: f32 = 16_000.0;

    fn sine(freq: f32, len: usize) -> Vec<f32> {
        (0..len).map(|n| 0.5 * (2.0 * PI * freq * n as f32 / RATE).sin()).collect()
    }

    /// The strongest frequency of `x` (Hz), from its spectrum.
    fn dominant_frequency(x: &[f32]) -> f32 {
        let mut buf: Vec<Complex32> = x.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        FftPlanner::<f32>::new().plan_fft_forward(x.len()).process(&mut buf);
        let k = (1..x.len() / 2).max_by(|&a, &b| buf[a].norm().total_cmp(&buf[b].norm())).unwrap();
        k as f32 * RATE / x.len() as f32
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn pitch_shift_by_12_semitones_doubles_a_sines_frequency() {
        let x = sine(440.0, 16_000);
        let up = pitch_shift(&x, 12.0);
        assert_eq!(up.len(), x.len());
        let f = dominant_frequency(&up[2000..14000]);
        assert!((f - 880.0).abs() < 880.0 * 0.01, "dominant frequency {f} Hz, expected 880");
        let down = pitch_shift(&x, -12.0);
        let f = dominant_frequency(&down[2000..14000]);
        assert!((f - 220.0).abs() < 220.0 * 0.02, "dominant frequency {f} Hz, expected 220");
        // the loudness stays, up to the vocoder's phasiness (a tone between two FFT bins loses some
        // energy to partial cancellation across frames: 13% of the RMS here)
        assert!((rms(&up[2000..14000]) / rms(&x) - 1.0).abs() < 0.2, "rms {} vs {}", rms(&up), rms(&x));
    }

    #[test]
    fn time_stretch_by_2_halves_the_duration_and_keeps_the_pitch() {
        let x = sine(500.0, 16_000);
        let fast = time_stretch(&x, 2.0);
        assert_eq!(fast.len(), 8000);
        let f = dominant_frequency(&fast[1000..7000]);
        assert!((f - 500.0).abs() < 5.0, "dominant frequency {f} Hz, expected 500");
        let slow = time_stretch(&x, 0.5);
        assert_eq!(slow.len(), 32_000);
        // before the fixed-length crop the duration is halved; after it, the clip is padded back
        let p = AudioViewParams { stretch_rate: Some(2.0), ..AudioViewParams::none() };
        let view = augment_clip(&x, &p, 16_000);
        assert_eq!(view.len(), 16_000);
        assert!(rms(&view[..3900]) < 1e-3 && rms(&view[12100..]) < 1e-3, "the halved clip sits in the middle");
        assert!(rms(&view[5000..11000]) > 0.3);
    }

    #[test]
    fn time_shift_rolls_the_samples_around() {
        let x: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let p = AudioViewParams { time_shift: Some(0.3), ..AudioViewParams::none() };
        assert_eq!(augment_clip(&x, &p, 10), [7., 8., 9., 0., 1., 2., 3., 4., 5., 6.]);
        let p = AudioViewParams { time_shift: Some(-0.2), ..AudioViewParams::none() };
        assert_eq!(augment_clip(&x, &p, 10), [2., 3., 4., 5., 6., 7., 8., 9., 0., 1.]);
    }

    #[test]
    fn noise_at_10_db_has_a_tenth_of_the_signals_power() {
        let x = sine(300.0, 16_000);
        for colour in [NoiseColour::White, NoiseColour::Pink, NoiseColour::Brown] {
            let mut y = x.clone();
            add_noise(&mut y, 10.0, colour, 7);
            let noise: Vec<f32> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
            let ratio = rms(&x).powi(2) / rms(&noise).powi(2);
            assert!((ratio - 10.0).abs() < 0.01, "{colour:?}: power ratio {ratio}");
        }
        // pink noise has more power at low frequencies than at high ones; white has it flat
        let band = |n: &[f32], lo: usize, hi: usize| {
            let mut buf: Vec<Complex32> = n.iter().map(|&v| Complex32::new(v, 0.0)).collect();
            FftPlanner::<f32>::new().plan_fft_forward(n.len()).process(&mut buf);
            buf[lo..hi].iter().map(|c| c.norm_sqr()).sum::<f32>() / (hi - lo) as f32
        };
        let pink = coloured_noise(16_000, NoiseColour::Pink, 1);
        assert!(band(&pink, 50, 100) > 20.0 * band(&pink, 5000, 5050));
        let white = coloured_noise(16_000, NoiseColour::White, 1);
        let (lo, hi) = (band(&white, 50, 1000), band(&white, 5000, 5950));
        assert!((lo / hi - 1.0).abs() < 0.2, "white noise is flat: {lo} vs {hi}");
    }

    #[test]
    fn fades_and_masks_shape_the_right_samples() {
        let x = vec![1.0f32; 100];
        let p = AudioViewParams { fade_in: Some((0.5, FadeShape::Linear)), ..AudioViewParams::none() };
        let y = augment_clip(&x, &p, 100);
        assert_eq!((y[0], y[25], y[50], y[99]), (0.0, 0.5, 1.0, 1.0));
        let p = AudioViewParams { fade_out: Some((0.2, FadeShape::Exponential)), ..AudioViewParams::none() };
        let y = augment_clip(&x, &p, 100);
        assert_eq!(y[79], 1.0);
        assert!((y[99] - 2f32.powf(-5.0)).abs() < 1e-6 && y[90] < y[85], "{:?}", &y[80..]);
        assert!((FadeShape::Logarithmic.gain(0.9) - 1.0).abs() < 1e-6 && FadeShape::Logarithmic.gain(0.0) == 0.0);
        let p = AudioViewParams { time_mask: Some((0.1, 0.125)), ..AudioViewParams::none() };
        let y = augment_clip(&vec![1.0; 1000], &p, 1000);
        let zeros: Vec<usize> = (0..1000).filter(|&j| y[j] == 0.0).collect();
        assert_eq!((zeros.len(), zeros[0]), (125, 100));
    }

    #[test]
    fn off_ops_leave_the_clip_alone_and_draws_do_not_depend_on_switches() {
        let c = AudioAugmentConfig::default();
        let all = AudioViewParams::sample([true; 7], &c, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
        let some = AudioViewParams::sample([false, true, false, false, false, true, false], &c, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
        assert_eq!((some.fade_in, some.time_shift), (all.fade_in, all.time_shift));
        assert_eq!((some.pitch_semitones, some.noise), (None, None));
        let p = all.pitch_semitones.unwrap();
        assert!(p.abs() <= 15.0 && (0.5..=1.5).contains(&all.stretch_rate.unwrap()));
        let x = sine(440.0, 12_000);
        assert_eq!(augment_clip(&x, &AudioViewParams::none(), 16_000), ail_data::audio::center_fit(&x, 16_000));
        // the batch version is the per-clip version, view by view
        let clips = vec![Arc::new(x.clone()), Arc::new(sine(220.0, 9000))];
        let views = vec![all.clone(), some.clone(), AudioViewParams::none(), all.clone()];
        let batch = augment_batch(&clips, &views, 4000);
        assert_eq!(&batch[4000..8000], &augment_clip(&clips[1], &some, 4000)[..]);
        assert_eq!(&batch[12000..], &augment_clip(&clips[1], &all, 4000)[..]);
    }
}
