//! Audio clips: WAV reading (8/16/24/32-bit PCM and 32-bit float, any channel count mixed down to
//! mono), band-limited resampling to 16 kHz, fixed-length crops, and two folder layouts:
//!
//! | layout | files                                            | classes                      |
//! |--------|--------------------------------------------------|------------------------------|
//! | folder | `<class>/<file>.wav`                             | the folder names             |
//! | FSDD   | `recordings/<digit>_<speaker>_<take>.wav`        | digits or speakers (choice)  |
//!
//! FSDD (the Free Spoken Digit Dataset) is recognised by its `recordings/` folder or by file names
//! of that pattern directly under the root.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::{DataError, Result};

/// The sample rate every clip is resampled to.
pub const SAMPLE_RATE: u32 = 16_000;

/// The longest WAV accepted, in samples per channel (10 minutes at 48 kHz): a guard against headers
/// that announce more data than anyone means to train on.
pub const MAX_FRAMES: usize = 48_000 * 600;

/// The longest clip accepted, in seconds: what one clip may become at [`SAMPLE_RATE`] is bounded
/// whatever rate its header declares.
pub const MAX_SECONDS: f64 = 600.0;

/// Decodes WAV bytes and resamples them to [`SAMPLE_RATE`]: at most [`MAX_SECONDS`] of samples.
pub fn decode_wav_16k(bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (samples, rate) = decode_wav(bytes)?;
    Ok(resample(&samples, rate as f64, SAMPLE_RATE as f64))
}

/// Decodes WAV bytes to mono `f32` samples in [-1, 1] and the file's sample rate.
pub fn decode_wav(bytes: &[u8]) -> std::result::Result<(Vec<f32>, u32), String> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| match e {
        hound::Error::FormatError(m) => format!("not a WAV file ({m})"),
        hound::Error::Unsupported => "a WAV encoding other than PCM integer or 32-bit float".into(),
        other => format!("not a readable WAV file ({other})"),
    })?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err("the header declares 0 channels".into());
    }
    if !crate::limits::SAMPLE_RATES.contains(&spec.sample_rate) {
        return Err(format!(
            "the header declares {} Hz; sample rates of {}-{} Hz are accepted (is the header damaged?)",
            spec.sample_rate,
            crate::limits::SAMPLE_RATES.start(),
            crate::limits::SAMPLE_RATES.end()
        ));
    }
    if reader.duration() as usize > MAX_FRAMES {
        return Err(format!("{} samples per channel, more than the {MAX_FRAMES} accepted", reader.duration()));
    }
    // In seconds too: resampled to 16 kHz, a long clip at a low rate would grow 16-fold.
    let seconds = reader.duration() as f64 / spec.sample_rate as f64;
    if seconds > MAX_SECONDS {
        return Err(format!(
            "{} samples at {} Hz last {seconds:.0} s, more than the {MAX_SECONDS:.0} s accepted (split the recording into clips)",
            reader.duration(),
            spec.sample_rate
        ));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader.into_samples::<f32>().collect::<std::result::Result<_, _>>(),
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader.into_samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<std::result::Result<_, _>>()
        }
        (format, bits) => return Err(format!("{bits}-bit {format:?} samples (use 8/16/24/32-bit PCM or 32-bit float)")),
    }
    .map_err(|e| format!("truncated or damaged sample data ({e})"))?;
    let mono: Vec<f32> = interleaved.chunks_exact(channels).map(|f| f.iter().sum::<f32>() / channels as f32).collect();
    if mono.is_empty() {
        return Err("the file holds no samples (zero length)".into());
    }
    if let Some(v) = mono.iter().find(|v| !v.is_finite()) {
        return Err(format!("a sample is {v}"));
    }
    Ok((mono, spec.sample_rate))
}

/// Reads a WAV file and resamples it to [`SAMPLE_RATE`].
pub fn read_wav(path: &Path) -> Result<Vec<f32>> {
    // The frame bound at 4 bytes and 8 channels is under 1 GiB: a larger file is not a clip.
    let bytes = crate::limits::read_file(path, 1 << 30).map_err(|e| DataError::io(path, e))?;
    decode_wav_16k(&bytes).map_err(|reason| DataError::CorruptAudio { path: path.to_path_buf(), reason })
}

/// Band-limited (windowed-sinc) resampling from `from` to `to` Hz with rubato; the output has
/// `round(len * to / from)` samples and no delay.
pub fn resample(x: &[f32], from: f64, to: f64) -> Vec<f32> {
    use rubato::{Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction};
    assert!(from > 0.0 && to > 0.0, "sample rates must be positive");
    let want = (x.len() as f64 * to / from).round() as usize;
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    let params = SincInterpolationParameters {
        sinc_len: 128,
        // Below the lower Nyquist frequency: no aliasing when going down.
        f_cutoff: 0.925,
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 128,
        window: WindowFunction::BlackmanHarris2,
    };
    let mut resampler = SincFixedIn::<f32>::new(to / from, 1.0, params, x.len(), 1).expect("valid resampler settings");
    // rubato's first output frame lies `ratio - 1` output frames early of the input's start
    // (measured: the test below checks the alignment for several ratios); skip the whole frames.
    let delay = (to / from - 1.0).round().max(0.0) as usize;
    let mut out = resampler.process(&[x], None).expect("one channel of the chunk size").remove(0);
    // Flush the filter with silence until the delayed tail is out.
    while out.len() < want + delay {
        let tail = resampler.process_partial::<&[f32]>(None, None).expect("flushing").remove(0);
        if tail.is_empty() {
            break;
        }
        out.extend(tail);
    }
    out.into_iter().skip(delay).chain(std::iter::repeat(0.0)).take(want).collect()
}

/// The middle `len` samples of `x`, or `x` padded with zeros on both sides (centred).
pub fn center_fit(x: &[f32], len: usize) -> Vec<f32> {
    if x.len() >= len {
        let start = (x.len() - len) / 2;
        x[start..start + len].to_vec()
    } else {
        let before = (len - x.len()) / 2;
        let mut out = vec![0.0; len];
        out[before..before + x.len()].copy_from_slice(x);
        out
    }
}

/// What a clip's label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum AudioLabels {
    /// The folder name (`<class>/<file>.wav`); for FSDD, the digit.
    #[default]
    Class,
    /// FSDD: the spoken digit.
    Digit,
    /// FSDD: the speaker.
    Speaker,
}

impl std::fmt::Display for AudioLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Class => "class",
            Self::Digit => "digit",
            Self::Speaker => "speaker",
        })
    }
}

impl std::str::FromStr for AudioLabels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "class" => Ok(Self::Class),
            "digit" => Ok(Self::Digit),
            "speaker" => Ok(Self::Speaker),
            other => Err(format!("audio labels `{other}`: use class, digit or speaker")),
        }
    }
}

/// Which clips to read.
#[derive(Debug, Clone, Default)]
pub struct AudioOptions {
    pub labels: AudioLabels,
    /// FSDD: only these take numbers (inclusive range), to carve held-out recordings.
    pub takes: Option<(u32, u32)>,
    /// Skip (and count) files that fail to decode instead of stopping.
    pub skip_bad: bool,
}

/// Clips at [`SAMPLE_RATE`] (variable length), their labels and class names.
#[derive(Debug, Clone, Default)]
pub struct AudioSet {
    pub clips: Vec<Vec<f32>>,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
    /// The file of each clip.
    pub paths: Vec<PathBuf>,
    /// Files skipped with `skip_bad`.
    pub skipped: usize,
}

impl AudioSet {
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            clips: indices.iter().map(|&i| self.clips[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            class_names: self.class_names.clone(),
            skipped: self.skipped,
        }
    }
}

/// `<digit>_<speaker>_<take>` of an FSDD file stem.
pub fn fsdd_name(stem: &str) -> Option<(u32, &str, u32)> {
    let mut parts = stem.splitn(3, '_');
    let digit = parts.next()?.parse::<u32>().ok().filter(|d| *d < 10)?;
    let speaker = parts.next().filter(|s| !s.is_empty())?;
    let take = parts.next()?.parse::<u32>().ok()?;
    Some((digit, speaker, take))
}

fn is_wav(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

fn wav_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_wav(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Lists the clips of `root` with their labels and class names (nothing decoded yet).
pub fn list(root: &Path, options: &AudioOptions) -> Result<(Vec<(PathBuf, u32)>, Vec<String>)> {
    if !root.is_dir() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            reason: "not a directory: audio data is a folder of `<class>/<file>.wav`, or FSDD's `recordings/` folder".into(),
        });
    }
    let recordings = root.join("recordings");
    let flat = if recordings.is_dir() { wav_files(&recordings)? } else { wav_files(root)? };
    let is_fsdd = !flat.is_empty() && flat.iter().all(|p| p.file_stem().and_then(|s| fsdd_name(&s.to_string_lossy()).map(|_| ())).is_some());
    if is_fsdd {
        // (file, class name) for the chosen labels, within the chosen takes
        let labelled: Vec<(PathBuf, String)> = flat
            .into_iter()
            .filter_map(|p| {
                let stem = p.file_stem().expect("a file").to_string_lossy().to_string();
                let (digit, speaker, take) = fsdd_name(&stem).expect("checked above");
                let class = if options.labels == AudioLabels::Speaker { speaker.to_string() } else { digit.to_string() };
                options.takes.is_none_or(|(lo, hi)| (lo..=hi).contains(&take)).then_some((p, class))
            })
            .collect();
        let mut names: Vec<String> = labelled.iter().map(|(_, c)| c.clone()).collect();
        names.sort();
        names.dedup();
        let files: Vec<(PathBuf, u32)> =
            labelled.into_iter().map(|(p, c)| { let label = names.binary_search(&c).expect("a listed class") as u32; (p, label) }).collect();
        if files.is_empty() {
            return Err(DataError::Empty { path: root.to_path_buf(), reason: format!("no FSDD recording has a take in {:?}", options.takes) });
        }
        return Ok((files, names));
    }
    if options.labels != AudioLabels::Class {
        return Err(DataError::InvalidOption(format!(
            "{} is not FSDD (`recordings/<digit>_<speaker>_<take>.wav`): digit and speaker labels need that layout",
            root.display()
        )));
    }
    if options.takes.is_some() {
        return Err(DataError::InvalidOption("takes select FSDD recordings; this folder is not FSDD".into()));
    }
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut files = Vec::new();
    let mut names = Vec::new();
    for dir in classes {
        let wavs = wav_files(&dir)?;
        if wavs.is_empty() {
            continue;
        }
        let label = names.len() as u32;
        names.push(dir.file_name().expect("a directory").to_string_lossy().to_string());
        files.extend(wavs.into_iter().map(|p| (p, label)));
    }
    if files.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            reason: "no .wav files: expected `<class>/<file>.wav` or FSDD's `recordings/<digit>_<speaker>_<take>.wav`".into(),
        });
    }
    Ok((files, names))
}

/// Reads every clip of `root` (in parallel) at [`SAMPLE_RATE`].
pub fn read_dir(root: &Path, options: &AudioOptions) -> Result<AudioSet> {
    let (files, class_names) = list(root, options)?;
    let decoded: Vec<(PathBuf, u32, Result<Vec<f32>>)> =
        files.into_par_iter().map(|(p, label)| { let clip = read_wav(&p); (p, label, clip) }).collect();
    let mut set = AudioSet { class_names, ..Default::default() };
    for (path, label, clip) in decoded {
        match clip {
            Ok(clip) => {
                set.clips.push(clip);
                set.labels.push(label);
                set.paths.push(path);
            }
            Err(DataError::CorruptAudio { .. }) if options.skip_bad => set.skipped += 1,
            Err(e) => return Err(e),
        }
    }
    if set.is_empty() {
        return Err(DataError::Empty { path: root.to_path_buf(), reason: format!("all {} files failed to decode", set.skipped) });
    }
    Ok(set)
}

/// A WAV file's bytes: mono 16-bit PCM at `rate` (tests and fixtures).
pub fn encode_wav16(samples: &[f32], rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut out, spec).expect("an in-memory WAV");
        for &s in samples {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).expect("in memory");
        }
        w.finalize().expect("in memory");
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize).map(|n| 0.5 * (2.0 * std::f32::consts::PI * freq * n as f32 / rate as f32).sin()).collect()
    }

    fn write(path: &Path, spec: hound::WavSpec, frames: &[Vec<f32>]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for frame in frames {
            for &s in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(s).unwrap(),
                    (_, 8) => w.write_sample((s * 127.0) as i8).unwrap(),
                    (_, 16) => w.write_sample((s * 32767.0) as i16).unwrap(),
                    (_, bits) => w.write_sample((s * ((1i64 << (bits - 1)) - 1) as f32) as i32).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }

    #[test]
    fn every_sample_format_decodes_to_the_same_mono_signal() {
        let dir = tempfile::tempdir().unwrap();
        let x = sine(440.0, 8000, 0.1);
        for (format, bits) in [(hound::SampleFormat::Int, 8), (hound::SampleFormat::Int, 16), (hound::SampleFormat::Int, 24), (hound::SampleFormat::Int, 32), (hound::SampleFormat::Float, 32)] {
            // stereo: the left channel carries x, the right 0.5 x; the mix is 0.75 x
            let spec = hound::WavSpec { channels: 2, sample_rate: 8000, bits_per_sample: bits, sample_format: format };
            let path = dir.path().join(format!("{bits}{format:?}.wav"));
            write(&path, spec, &x.iter().map(|&s| vec![s, 0.5 * s]).collect::<Vec<_>>());
            let (mono, rate) = decode_wav(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!((mono.len(), rate), (x.len(), 8000));
            let tolerance = if bits == 8 { 0.02 } else { 1e-3 };
            for (m, s) in mono.iter().zip(&x) {
                assert!((m - 0.75 * s).abs() < tolerance, "{bits}-bit {format:?}: {m} vs {}", 0.75 * s);
            }
        }
    }

    #[test]
    fn resampling_keeps_a_tone_and_the_length() {
        let x = sine(440.0, 8000, 0.5);
        let y = resample(&x, 8000.0, 16000.0);
        assert_eq!(y.len(), 8000);
        let expected = sine(440.0, 16000, 0.5);
        // away from the edges, the band-limited interpolation matches the tone sampled at 16 kHz
        let err = y[400..7600].iter().zip(&expected[400..7600]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 0.01, "max error {err}");
        // going down: a tone above the new Nyquist frequency is removed, not aliased
        let high = sine(6000.0, 16000, 0.5);
        let down = resample(&high, 16000.0, 8000.0);
        assert_eq!(down.len(), 4000);
        let rms = (down[200..3800].iter().map(|v| v * v).sum::<f32>() / 3600.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn resampled_tones_stay_aligned_in_time() {
        for (from, to) in [(8000.0f64, 16000.0f64), (16000.0, 8000.0), (16000.0, 19027.0), (22050.0, 16000.0), (48000.0, 16000.0)] {
            let x: Vec<f32> = (0..(from as usize / 2)).map(|n| (2.0 * std::f32::consts::PI * 300.0 * n as f32 / from as f32).sin()).collect();
            let y = resample(&x, from, to);
            let m = y.len();
            assert_eq!(m, (x.len() as f64 * to / from).round() as usize);
            // the time offset (in output samples) that best explains the output as the same tone
            let error = |lag: f32| -> f32 {
                (m / 4..3 * m / 4).map(|n| (y[n] - (2.0 * std::f32::consts::PI * 300.0 * (n as f32 - lag) / to as f32).sin()).powi(2)).sum::<f32>() / (m / 2) as f32
            };
            let lag = (-100..=100).map(|k| k as f32 * 0.02).min_by(|a, b| error(*a).total_cmp(&error(*b))).unwrap();
            assert!(lag.abs() <= 0.7, "{from} -> {to} Hz: the output is {lag} samples off");
            assert!(error(lag) < 1e-4, "{from} -> {to} Hz: error {}", error(lag));
        }
    }

    #[test]
    fn bad_files_are_named_with_the_problem() {
        assert!(decode_wav(b"not a wav at all").unwrap_err().contains("not a WAV file"));
        let good = encode_wav16(&sine(440.0, 8000, 0.1), 8000);
        let cut = decode_wav(&good[..good.len() - 101]).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
        let empty = encode_wav16(&[], 8000);
        assert!(decode_wav(&empty).unwrap_err().contains("zero length"));
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("recordings");
        std::fs::create_dir(&rec).unwrap();
        std::fs::write(rec.join("3_alice_7.wav"), &good).unwrap();
        std::fs::write(rec.join("4_bob_8.wav"), b"garbage").unwrap();
        let err = read_dir(dir.path(), &AudioOptions::default()).unwrap_err().to_string();
        assert!(err.contains("4_bob_8.wav") && err.contains("--skip-bad"), "{err}");
        let set = read_dir(dir.path(), &AudioOptions { skip_bad: true, ..Default::default() }).unwrap();
        assert_eq!((set.len(), set.skipped), (1, 1));
        assert_eq!(set.clips[0].len(), 1600, "0.1 s at 16 kHz");
    }

    #[test]
    fn fsdd_layout_labels_by_digit_or_speaker_and_selects_takes() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("recordings");
        std::fs::create_dir(&rec).unwrap();
        let wav = encode_wav16(&sine(300.0, 8000, 0.05), 8000);
        for (d, s, t) in [(0, "jackson", 5), (7, "jackson", 6), (7, "theo", 5), (2, "theo", 40)] {
            std::fs::write(rec.join(format!("{d}_{s}_{t}.wav")), &wav).unwrap();
        }
        let digits = read_dir(dir.path(), &AudioOptions::default()).unwrap();
        assert_eq!(digits.class_names, ["0", "2", "7"]);
        let speakers = read_dir(dir.path(), &AudioOptions { labels: AudioLabels::Speaker, ..Default::default() }).unwrap();
        assert_eq!(speakers.class_names, ["jackson", "theo"]);
        let mut got: Vec<u32> = speakers.labels.clone();
        got.sort();
        assert_eq!(got, [0, 0, 1, 1]);
        let held_out = read_dir(dir.path(), &AudioOptions { takes: Some((5, 9)), ..Default::default() }).unwrap();
        assert_eq!(held_out.len(), 3);
        // a plain folder layout has class folders
        let folder = tempfile::tempdir().unwrap();
        for class in ["dog", "cat"] {
            std::fs::create_dir(folder.path().join(class)).unwrap();
            std::fs::write(folder.path().join(class).join("a.wav"), &wav).unwrap();
        }
        let set = read_dir(folder.path(), &AudioOptions::default()).unwrap();
        assert_eq!(set.class_names, ["cat", "dog"]);
        let err = read_dir(folder.path(), &AudioOptions { labels: AudioLabels::Speaker, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("not FSDD"), "{err}");
    }

    #[test]
    fn a_clip_longer_than_ten_minutes_is_refused_at_any_rate() {
        // 700 s at 1 kHz: few samples, but 11.2 million once at 16 kHz.
        let long = encode_wav16(&vec![0.1; 700_000], 1000);
        let e = decode_wav_16k(&long).unwrap_err();
        assert!(e.contains("700 s") && e.contains("600 s accepted"), "{e}");
        // A 12 s clip at 1 kHz passes and comes out at 16 kHz.
        let ok = decode_wav_16k(&encode_wav16(&vec![0.1; 12_000], 1000)).unwrap();
        assert_eq!(ok.len(), 192_000);
    }

    #[test]
    fn center_fit_crops_and_pads_around_the_middle() {
        assert_eq!(center_fit(&[1.0, 2.0, 3.0, 4.0, 5.0], 3), [2.0, 3.0, 4.0]);
        assert_eq!(center_fit(&[1.0, 2.0], 5), [0.0, 1.0, 2.0, 0.0, 0.0]);
    }
}
