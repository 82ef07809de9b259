//! Audio end to end: FSDD-layout WAV files of generated tones -> `ail pretrain --modality audio`
//! (K = 7, 120 descriptors, log-mel on the device) -> `ail fewshot` and `ail fit` on audio.

use std::path::Path;

mod common;
use common::{ail, assert_resume_is_exact, losses, stderr};

/// `recordings/<digit>_<speaker>_<take>.wav`, 8 kHz, 0.4 s: the digit sets the pitch (four
/// digits), the speaker the timbre (a pure tone, or one with strong harmonics and a tremolo), the
/// take a small detuning and a noise seed.
fn tone_fsdd(dir: &Path) {
    let rec = dir.join("recordings");
    std::fs::create_dir_all(&rec).unwrap();
    let rate = 8000.0;
    for (digit, base) in [(0, 300.0f32), (1, 520.0), (2, 870.0), (3, 1400.0)] {
        for speaker in ["ann", "bob"] {
            for take in 0..6u32 {
                let f = base * (1.0 + 0.01 * take as f32);
                let clip: Vec<f32> = (0..3200)
                    .map(|n| {
                        let t = n as f32 / rate;
                        let phase = 2.0 * std::f32::consts::PI * f * t;
                        let noise = (((n as u32).wrapping_mul(2_654_435_761).wrapping_add(take * 977) >> 16) % 1000) as f32 / 1000.0 - 0.5;
                        let tone = match speaker {
                            "ann" => phase.sin(),
                            _ => (0.5 * phase.sin() + 0.4 * (2.0 * phase).sin() + 0.3 * (3.0 * phase).sin()) * (1.0 + 0.5 * (2.0 * std::f32::consts::PI * 6.0 * t).sin()) / 1.5,
                        };
                        0.4 * tone + 0.02 * noise
                    })
                    .collect();
                std::fs::write(rec.join(format!("{digit}_{speaker}_{take}.wav")), ail_data::audio::encode_wav16(&clip, 8000)).unwrap();
            }
        }
    }
    std::fs::write(
        dir.join("audio.toml"),
        "modality = \"audio\"\ninvariances = \"audio\"\nsteps = 20\nbatch_size = 32\nencoder.width = 0.0625\nencoder.hidden = 8\n\
         optimizer.lr = 0.003\noptimizer.warmup_steps = 2\nlog_every = 1\ncheckpoint_every = 10\nmonitor.every = 10\nheads.hidden = 32\n\
         heads.output = 16\n[audio]\nclip_seconds = 0.5\n",
    )
    .unwrap();
}

#[test]
fn audio_pretraining_lowers_the_loss_resumes_exactly_and_feeds_fewshot_and_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tone_fsdd(d);
    let out = ail(&["pretrain", "--device", "cpu", "--config", "audio.toml", "--data", ".", "--out", "a"], d);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("K = 7: [pitch-shift, fade-in, fade-out, noise, time-mask, time-shift, time-stretch], 120 descriptors") && err.contains("48 clips of 4 classes"), "{err}");
    assert!(err.contains("[1, 128, 16]"), "0.5 s at 16 kHz, hop 512: 16 frames of 128 mel bins: {err}");
    let curve = losses(&d.join("a/metrics.csv"));
    assert_eq!(curve.len(), 20);
    let mean = |xs: &[(u64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
    assert!(mean(&curve[15..]) < mean(&curve[..5]) - 0.1, "the loss did not fall: {curve:?}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("a/checkpoints/step-0000020/checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["family"], "audio");
    assert_eq!(meta["encoder"]["in_channels"], 1);
    assert_eq!(meta["audio"]["clip_samples"], 8000);
    assert_eq!(meta["audio"]["mel"]["n_mels"], 128);
    // The kNN monitor evaluates the named descriptors only: 7 single augmentations, all, and the
    // 7 "all but one", not all 120 trained ones.
    assert!(err.contains("kNN monitor: 15 descriptors"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("a/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["knn_accuracy"].as_array().unwrap().len(), 15);

    // the augmentation draws, clip order and descriptors replay exactly on resume
    assert_resume_is_exact(d, "a", "b");

    // 4-way 1-shot over speakers would need 4 speakers: ways over the digits, and 2-way speakers
    let fs = ail(
        &["fewshot", "--device", "cpu", "--checkpoint", "a", "--task", "audio", "--data", ".", "--audio-labels", "digit", "--ways", "4",
          "--shots", "1", "--queries", "2", "--episodes", "3", "--steps", "3", "--out", "fs-digit"],
        d,
    );
    assert!(fs.status.success(), "{}", stderr(&fs));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("fs-digit/fewshot.json")).unwrap()).unwrap();
    let i = report["mean_i"].as_array().unwrap();
    assert_eq!(i.len(), 7, "one learned entry per audio augmentation: {report}");
    assert!(i.iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
    let acc = report["accuracy"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{report}");

    let speakers = ail(
        &["fewshot", "--device", "cpu", "--checkpoint", "a", "--task", "audio", "--data", ".", "--audio-labels", "speaker", "--takes", "0-3",
          "--ways", "2", "--shots", "1", "--queries", "3", "--episodes", "2", "--steps", "2", "--out", "fs-speaker"],
        d,
    );
    assert!(speakers.status.success(), "{}", stderr(&speakers));

    let fit = ail(
        &["fit", "--device", "cpu", "--checkpoint", "a", "--task", "audio", "--data", ".", "--audio-labels", "digit", "--test-fraction", "0.25",
          "--epochs", "2", "--out", "fit"],
        d,
    );
    assert!(fit.status.success(), "{}", stderr(&fit));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("fit/fit.json")).unwrap()).unwrap();
    assert_eq!(report["i"].as_array().map(Vec::len), Some(7), "{report}");

    // an image task on an audio encoder, and audio flags that do not fit, are refused clearly
    let wrong = ail(&["fewshot", "--device", "cpu", "--checkpoint", "a", "--task", "classify", "--data", "builtin"], d);
    assert!(!wrong.status.success() && stderr(&wrong).contains("use --task audio with audio encoders"), "{}", stderr(&wrong));
    let wrong = ail(&["pretrain", "--device", "cpu", "--modality", "audio", "--invariances", "groups", "--data", ".", "--out", "x"], d);
    assert!(!wrong.status.success() && stderr(&wrong).contains("use --invariances audio"), "{}", stderr(&wrong));
    let wrong = ail(&["pretrain", "--device", "cpu", "--invariances", "audio", "--out", "y"], d);
    assert!(!wrong.status.success() && stderr(&wrong).contains("add --modality audio"), "{}", stderr(&wrong));
}

#[test]
fn bad_audio_files_are_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tone_fsdd(d);
    std::fs::write(d.join("recordings/9_bob_1.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let out = ail(&["pretrain", "--device", "cpu", "--config", "audio.toml", "--data", ".", "--steps", "1", "--out", "bad"], d);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("9_bob_1.wav") && err.contains("corrupt audio file") && err.contains("--skip-bad"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // with --skip-bad the run goes on without it, and says how many it skipped
    let out = ail(&["pretrain", "--device", "cpu", "--config", "audio.toml", "--data", ".", "--steps", "1", "--skip-bad", "--out", "skip"], d);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skipped 1 audio files") && err.contains("48 clips"), "{err}");
}
