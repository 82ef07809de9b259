//! The `ail` binary end to end, on the built-in data and on tiny files the tests write.

use std::path::Path;
use std::process::Command;

mod common;
use common::{assert_resume_is_exact, losses};
use common::{ail, stderr};

/// Grid size for `rows` x `cols` cells of `cell` pixels with 2-pixel gaps.
fn grid_dims(rows: u32, cols: u32, cell: u32) -> (u32, u32) {
    (cols * cell + (cols + 1) * 2, rows * cell + (rows + 1) * 2)
}

#[test]
fn preview_on_builtin_data_writes_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = ail(
        &["augment-preview", "--device", "cpu", "--descriptor", "1,0", "--out", "grids/spatial.png"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("device: cpu: burn flex"), "{err}");
    assert!(err.contains("6000 images of 3x32x32, 10 classes"), "{err}");
    let img = image::open(dir.path().join("grids/spatial.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), grid_dims(8, 7, 96));
    let img = &img;
    // Column 0 holds the originals (Fashion-MNIST: grey, so R == G == B); cells are not blank.
    let cell = |r: u32, c: u32| -> Vec<[u8; 3]> {
        let (x0, y0) = (2 + c * 98, 2 + r * 98);
        (0..96).flat_map(|y| (0..96).map(move |x| img.get_pixel(x0 + x, y0 + y).0)).collect()
    };
    for r in 0..8 {
        let original = cell(r, 0);
        assert!(original.iter().all(|p| p[0] == p[1] && p[1] == p[2]));
        assert!(original.iter().any(|p| p[0] > 100), "row {r} original is blank");
        // Spatial views of a grey image stay grey and differ from the original.
        let view = cell(r, 1);
        assert!(view.iter().all(|p| p[0].abs_diff(p[1]) <= 1 && p[1].abs_diff(p[2]) <= 1));
    }
    assert!((0..8).any(|r| cell(r, 0) != cell(r, 1)));
}

#[test]
fn preview_reads_an_image_folder_and_reports_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for (class, colour) in [("red", [220u8, 20, 20]), ("blue", [20, 20, 220])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for k in 0..3u32 {
            let img = image::RgbImage::from_fn(40 + k, 30, |x, _| {
                if x < 20 { image::Rgb(colour) } else { image::Rgb([250, 250, 250]) }
            });
            img.save(root.join(class).join(format!("{k}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("blue").join("broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
    let args = ["augment-preview", "--device", "cpu", "--data", "imgs", "--images", "4", "--views", "2", "--out", "g.png"];
    let out = ail(&args, dir.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("corrupt image") && err.contains("broken.jpg") && err.contains("--skip-bad"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let mut with_skip = args.to_vec();
    with_skip.push("--skip-bad");
    let out = ail(&with_skip, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skipped 1 unreadable image files"), "{err}");
    assert!(err.contains("6 images of 3x32x32, 2 classes"), "{err}");
    let img = image::open(dir.path().join("g.png")).unwrap();
    assert_eq!((img.width(), img.height()), grid_dims(4, 3, 96));
}

#[test]
fn bad_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["augment-preview", "--device", "cpu", "--descriptor", "1,0,1"], "expected 2 comma-separated values for [spatial, appearance]"),
        (&["augment-preview", "--device", "cpu", "--descriptor", "2,0"], "2 is outside [0, 1]"),
        (&["augment-preview", "--device", "cpu", "--data", "missing-dir"], "missing-dir"),
        (&["augment-preview", "--device", "cuda"], "possible values: auto, cpu, wgpu"),
        (&["augment-preview", "--device", "cpu", "--family", "individual", "--descriptor", "1,0"], "expected 5 comma-separated values"),
    ];
    for (args, expected) in cases {
        let out = ail(args, dir.path());
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    }
}

#[test]
fn wrong_format_file_names_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("data_batch_1.bin");
    let mut png = Vec::new();
    image::RgbImage::new(4, 4).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    std::fs::write(&fake, png).unwrap();
    let out = ail(&["augment-preview", "--device", "cpu", "--data", "data_batch_1.bin"], dir.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not CIFAR-10 binary") && err.contains("a PNG image"), "{err}");
}

#[test]
fn default_run_pretrains_on_builtin_data_and_reports_knn_per_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ail"))
        .args(["--device", "cpu"])
        .current_dir(dir.path())
        .env("AIL_DEMO_STEPS", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for d in ["i = [0,1]", "i = [1,0]", "i = [1,1]"] {
        assert!(stdout.contains(d), "{d} missing:\n{stdout}");
    }
    assert!(stdout.contains("runs/demo-1"), "{stdout}");
    assert!(dir.path().join("runs/demo-1/summary.json").exists());
    // A second demo does not touch the first run.
    let again = Command::new(env!("CARGO_BIN_EXE_ail")).args(["--device", "cpu"]).current_dir(dir.path()).env("AIL_DEMO_STEPS", "1").output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(dir.path().join("runs/demo-2/summary.json").exists());
}

#[test]
fn bench_augment_prints_throughput_and_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let out = ail(&["bench", "augment", "--batch-size", "8", "--runs", "2", "--no-torch", "--no-wgpu"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("ail CPU reference")).unwrap_or_else(|| panic!("{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let images_per_s: f64 = cols[4].parse().unwrap();
    assert!(images_per_s > 0.0, "{row}");
    assert_eq!(cols[5], "1.00x", "{row}");
}

/// The number in column `col` of the row starting with `name`.
fn table_value(stdout: &str, name: &str, col: usize) -> f64 {
    let row = stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no row `{name}` in:\n{stdout}"));
    let value = row[name.len()..].split_whitespace().nth(col).unwrap_or_else(|| panic!("{row}"));
    value.trim_end_matches('x').parse().unwrap_or_else(|_| panic!("`{value}` in: {row}"))
}

#[test]
fn bench_profile_fit_and_devices_print_their_tables() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = ["--image-size", "8", "--no-torch"];
    let run = |args: &[&str]| {
        let mut all = vec!["--device", "cpu", "bench"];
        all.extend_from_slice(args);
        all.extend_from_slice(&tiny);
        let out = ail(&all, dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let profile = run(&["profile", "--width", "0.0625", "--batch-size", "4", "--runs", "1"]);
    for row in ["convs (fwd + bwd)", "batch norms (fwd + bwd)", "kernel generators (fwd + bwd)", "AdamW over all parameters", "forward + backward"] {
        assert!(table_value(&profile, row, 0) > 0.0, "{row}: {profile}");
    }
    let fit = run(&["fit", "--widths", "0.0625", "--batch-sizes", "4", "--steps", "1", "--warmup", "0"]);
    assert!(table_value(&fit, "width 0.0625, batch 4", 0) > 0.0, "{fit}");
    let devices = run(&["pretrain", "--widths", "0.0625", "--batch-sizes", "4", "--steps", "1", "--warmup", "0", "--devices", "2"]);
    assert!(devices.contains("2 shards on 2 devices at once"), "{devices}");
    let scaling = table_value(devices.split("data parallelism").nth(1).unwrap(), "width 0.0625, batch 4", 3);
    assert!(scaling > 0.0, "{devices}");
    // --compare-torch fails when PyTorch cannot run, and says so.
    let out = ail(&["--device", "cpu", "bench", "fit", "--widths", "0.0625", "--batch-sizes", "4", "--image-size", "8", "--steps", "1", "--warmup", "0", "--compare-torch", "--python", "/nonexistent/python"], dir.path());
    assert!(!out.status.success() && stderr(&out).contains("--compare-torch: the PyTorch baseline could not run"), "{}", stderr(&out));
}

#[test]
fn preview_runs_the_wgsl_kernels_on_wgpu() {
    if std::env::var("AIL_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = ail(&["augment-preview", "--device", "wgpu", "--images", "2", "--views", "2", "--out", "w.png"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("device: wgpu:"), "{}", stderr(&out));
    // The same seed on the CPU gives the same picture (kernels match their references).
    let out = ail(&["augment-preview", "--device", "cpu", "--images", "2", "--views", "2", "--out", "c.png"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let (w, c) = (image::open(dir.path().join("w.png")).unwrap().to_rgb8(), image::open(dir.path().join("c.png")).unwrap().to_rgb8());
    let max_diff = w.pixels().zip(c.pixels()).flat_map(|(a, b)| (0..3).map(move |k| a.0[k].abs_diff(b.0[k]))).max().unwrap();
    assert!(max_diff <= 1, "wgpu and cpu previews differ by {max_diff} levels");
}

#[test]
fn info_prints_parameters_per_part_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = ail(&["info", "--device", "cpu", "--model", "hyper-resnet18", "--width", "0.25", "--invariances", "groups"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for part in ["static convs", "kernel generators", "descriptor embeddings", "batch norm", "total"] {
        assert!(stdout.contains(part), "{part} missing:\n{stdout}");
    }
    assert!(stdout.contains("checked: the built model has the same count"), "{stdout}");
    // 8 conditioned blocks x (K = 2) x 16 embedding weights.
    let embeddings: usize = stdout
        .lines()
        .find(|l| l.starts_with("descriptor embeddings"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(embeddings, 8 * 2 * 16);

    // Full-width Hyper-ResNet-50: counted analytically, too big to build here.
    let out = ail(&["info", "--model", "hyper-resnet50", "--image-size", "224"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kernel generators") && stdout.contains("773729920"), "{stdout}");
    assert!(stdout.contains("not built"), "{stdout}");

    let out = ail(&["info", "--model", "hyper-resnet99"], dir.path());
    assert!(!out.status.success() && stderr(&out).contains("unknown model `hyper-resnet99`"), "{}", stderr(&out));
}



#[test]
fn pretrain_lowers_the_loss_writes_its_outputs_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[]);
    let out = ail(&["pretrain", "--device", "cpu", "--config", "run.toml", "--data", "imgs", "--out", "a"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kNN accuracy") && stdout.contains("i = [1,1]"), "{stdout}");

    let run = dir.path().join("a");
    for file in ["config.json", "metrics.csv", "summary.json"] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    for step in ["step-0000010", "step-0000020"] {
        for file in ["model.safetensors", "checkpoint.json", "optimizer.bpk", "heads.safetensors", "training.json"] {
            assert!(run.join("checkpoints").join(step).join(file).exists(), "{step}/{file} missing");
        }
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["steps"], 20);
    assert_eq!(config["encoder"]["width"], 0.0625);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["knn_accuracy"].as_array().unwrap().len(), 3);

    let curve = losses(&run.join("metrics.csv"));
    assert_eq!(curve.len(), 20);
    let mean = |xs: &[(u64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
    assert!(mean(&curve[15..]) < mean(&curve[..5]) - 0.1, "the loss did not fall: {curve:?}");
    // kNN rows: one per descriptor before training, at step 10 and at the end.
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(text.lines().filter(|l| l.split(',').next_back().is_some_and(|v| !v.is_empty() && v != "knn_accuracy")).count(), 9);
    assert!(text.lines().nth(1).unwrap().starts_with("0,"), "{text}");

    // An existing run is not overwritten by accident: the same command finds it complete.
    let summary = std::fs::read(run.join("summary.json")).unwrap();
    let again = ail(&["pretrain", "--device", "cpu", "--config", "run.toml", "--data", "imgs", "--out", "a"], dir.path());
    assert!(!again.status.success() && stderr(&again).contains("raise --steps to continue"), "{}", stderr(&again));
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary);

    assert_resume_is_exact(dir.path(), "a", "b");

    // A resumed run keeps its configuration: changing it is refused, naming the flag.
    let out = ail(&["pretrain", "--device", "cpu", "--out", "b", "--resume", "--lr", "0.1"], dir.path());
    assert!(!out.status.success() && stderr(&out).contains("--lr would change it"), "{}", stderr(&out));
    // ...and a finished run says how to continue it.
    let out = ail(&["pretrain", "--device", "cpu", "--out", "b", "--resume"], dir.path());
    assert!(!out.status.success() && stderr(&out).contains("raise --steps"), "{}", stderr(&out));
}


#[test]
fn moco_runs_keep_queues_and_key_models_across_resume() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[]);
    for method in ["mocov2", "mocov3"] {
        let out = ail(&["pretrain", "--device", "cpu", "--config", "run.toml", "--data", "imgs", "--method", method, "--out", method], dir.path());
        assert!(out.status.success(), "{method}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("with {method}")), "{}", stderr(&out));
        let step = dir.path().join(method).join("checkpoints").join("step-0000010");
        assert!(step.join("key.safetensors").exists());
        assert_eq!(step.join("queues.bin").exists(), method == "mocov2");
        assert_eq!(step.join("predictor.safetensors").exists(), method == "mocov3");
        assert!(losses(&dir.path().join(method).join("metrics.csv")).iter().all(|(_, l)| l.is_finite()));
        assert_resume_is_exact(dir.path(), method, &format!("{method}-resumed"));
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[]);
    let child = Command::new(env!("CARGO_BIN_EXE_ail"))
        .args([
            "pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--steps", "100000", "--checkpoint-every", "100000",
            "--monitor-every", "0", "--out", "run",
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has logged a few steps.
    let metrics = dir.path().join("run/metrics.csv");
    let started = std::time::Instant::now();
    while losses_if_any(&metrics).len() < 3 {
        assert!(started.elapsed().as_secs() < 120, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let step: u64 = err
        .split("stopped after step ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    assert!(err.contains("--resume"), "{err}");
    assert!(dir.path().join(format!("run/checkpoints/step-{step:07}/checkpoint.json")).exists(), "{err}");
    // The run continues from there.
    let next = (step + 2).to_string();
    let out = ail(&["pretrain", "--device", "cpu", "--out", "run", "--resume", "--steps", &next, "--monitor-every", "0"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("at step {step}")), "{}", stderr(&out));
}

fn losses_if_any(path: &Path) -> Vec<(u64, f64)> {
    if std::fs::read_to_string(path).map(|t| t.lines().count() > 1).unwrap_or(false) { losses(path) } else { Vec::new() }
}

#[test]
fn rerunning_the_same_command_continues_the_run_unless_refused_or_different() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[]);
    let run = |extra: &[&str]| {
        let args = [&["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--monitor-every", "0", "--out", "run"], extra].concat();
        ail(&args, dir.path())
    };
    let first = run(&["--steps", "10"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // The same command with more steps continues from step 10.
    let more = run(&["--steps", "12"]);
    assert!(more.status.success(), "{}", stderr(&more));
    assert!(stderr(&more).contains("continuing it") && stderr(&more).contains("resuming run at step 10"), "{}", stderr(&more));
    // A different run is not silently mixed in, and --no-resume refuses.
    let other = run(&["--steps", "14", "--lr", "0.01"]);
    assert!(!other.status.success() && stderr(&other).contains("already holds a different run") && stderr(&other).contains("lr"), "{}", stderr(&other));
    let refused = run(&["--steps", "14", "--no-resume"]);
    assert!(!refused.status.success() && stderr(&refused).contains("--no-resume"), "{}", stderr(&refused));
}

#[test]
fn a_torn_last_metrics_row_is_dropped_when_the_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[]);
    let run = |steps: &str| {
        ail(&["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--monitor-every", "0", "--out", "run", "--steps", steps], dir.path())
    };
    let first = run("10");
    assert!(first.status.success(), "{}", stderr(&first));
    // a kill in the middle of writing a row leaves it without its newline
    let path = dir.path().join("run/metrics.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("1");
    std::fs::write(&path, &text).unwrap();
    let more = run("12");
    assert!(more.status.success(), "{}", stderr(&more));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().all(|l| l.starts_with("step,") || l.contains(",\"")), "a torn row survived:\n{text}");
    let steps: Vec<u64> = losses(&path).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
}

#[test]
fn a_second_pretrain_on_the_same_out_is_refused_while_the_first_finishes_intact() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("steps", "600"), ("checkpoint_every", "200"), ("monitor.every", "0")]);
    let args = ["pretrain", "--device", "cpu", "--data", "imgs", "--config", "run.toml", "--out", "run"];
    let first = Command::new(env!("CARGO_BIN_EXE_ail")).args(args).current_dir(dir.path()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait until the first is training (its lock is taken before anything is written).
    let metrics = dir.path().join("run/metrics.csv");
    let started = std::time::Instant::now();
    while losses_if_any(&metrics).is_empty() {
        assert!(started.elapsed().as_secs() < 120, "the first run did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = ail(&args, dir.path());
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("is being written by another process") && err.contains(&format!("PID {}", first.id())), "{err}");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    // The first run is whole: every step logged once, its checkpoints complete.
    let steps: Vec<u64> = losses(&metrics).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, (1..=600).collect::<Vec<_>>());
    for step in [400, 600] {
        assert!(dir.path().join(format!("run/checkpoints/step-{step:07}/checkpoint.json")).exists());
    }
    assert!(dir.path().join("run/summary.json").exists());
}

#[test]
fn serve_refuses_an_open_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before anything is bound or any device chosen, in every build.
    let out = ail(&["serve", "--bind", "0.0.0.0", "--port", "1"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--bind 0.0.0.0") && err.contains("--token-file") && err.contains("SSH tunnel"), "{err}");
    std::fs::write(dir.path().join("empty"), "\n  \n").unwrap();
    let out = ail(&["serve", "--bind", "0.0.0.0", "--token-file", "empty"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--token-file empty: the first line is empty"), "{err}");
    let out = ail(&["serve", "--token-file", "missing"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--token-file missing: cannot read the token"), "{err}");
}
