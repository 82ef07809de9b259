//! `ail fit`, `ail fewshot`, `ail lowshot` and `ail bound` end to end on a tiny pretrained encoder and
//! on small files the tests write (ImageFolder, CSV regression, Omniglot-layout zips).

use std::path::Path;
use std::process::Output;

mod common;
use common::ail;

fn ok(o: Output) -> String {
    assert!(o.status.success(), "ail failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// 4 classes of 16 coloured 8x8 images, and a 4-step pretraining run on them (run/).
fn pretrained(dir: &Path) {
    common::patterned_folder(dir, 4, 16, 60);
    ok(ail(
        &[
            "pretrain", "--device", "cpu", "--data", "imgs", "--image-size", "8", "--width", "0.0625", "--steps", "4", "--batch-size", "16",
            "--monitor-every", "0", "--out", "run",
        ],
        dir,
    ));
}

#[test]
fn fit_learns_i_and_the_head_and_the_baseline_fixes_i_and_bound_prints_every_term() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    let common = [
        "fit", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25", "--epochs", "3",
        "--batch-size", "16", "--lrs", "0.01", "--weight-decays", "0,0.001",
    ];
    // The paper's start (the default is the best corner on validation, checked below).
    let out = ok(ail(&[&common[..], &["--i-init", "0.5", "--bits", "1,2", "--out", "learned"]].concat(), d));
    assert!(out.contains("head and i learned") && out.contains("test:"), "{out}");
    let fit = json(&d.join("learned/fit.json"));
    assert_eq!(fit["learned_i"], true);
    let i = floats(&fit["i"]);
    assert_eq!(i.len(), 2);
    assert!(i.iter().all(|v| (0.0..=1.0).contains(v)));
    let trajectory = fit["trajectory"].as_array().unwrap();
    assert_eq!(floats(&trajectory[0]), vec![0.5, 0.5]);
    assert!(trajectory.len() >= 2 && trajectory.len() <= 4);
    assert_eq!(fit["grid"].as_array().unwrap().len(), 2);
    assert_eq!(floats(&fit["samples"]), vec![32.0, 16.0, 16.0]);
    let acc = fit["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc) && fit["test"]["mean_per_class_accuracy"].as_f64().is_some());
    let features = 32; // width 0.0625: 512 * 0.0625
    assert_eq!(fit["parameters_updated"], features * 4 + 4 + 2);
    let q = fit["quantised"].as_array().unwrap();
    assert_eq!(q.len(), 2);
    assert!(floats(&q[0]["i"]).iter().all(|v| *v == 0.0 || *v == 1.0));
    assert!(floats(&q[1]["i"]).iter().all(|v| [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0].iter().any(|w| (v - w).abs() < 1e-6)));
    assert!(fit["bound"]["feature_norm"].as_f64().unwrap() > 0.0 && fit["bound"]["weight_norm"].as_f64().unwrap() > 0.0);

    let out = ok(ail(&[&common[..], &["--fixed-invariance", "1,1", "--out", "fixed"]].concat(), d));
    assert!(out.contains("head only, i fixed"), "{out}");
    let fixed = json(&d.join("fixed/fit.json"));
    assert_eq!(fixed["learned_i"], false);
    assert_eq!(floats(&fixed["i"]), vec![1.0, 1.0]);
    assert_eq!(fixed["parameters_updated"], features * 4 + 4);
    assert!(fixed["quantised"].as_array().unwrap().is_empty());

    let out = ok(ail(&["bound", "--fit", "learned/fit.json", "fixed/fit.json"], d));
    assert!(out.contains("linear readout, ln(2/delta)") && out.contains("amortised, 1-bit i, |I| = 2^2"), "{out}");
    assert!(out.contains("amortised, 2-bit i, |I| = 2^4") && out.matches("complexity").count() == 5, "{out}");
    // Each printed total is the sum of its terms.
    for line in out.lines().filter(|l| l.contains(" = ") && l.contains("empirical")) {
        let nums: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.parse::<f64>().ok())
            .collect();
        let n = nums.len();
        assert!((nums[0] + nums[n - 3] + nums[n - 2] - nums[n - 1]).abs() < 2e-4, "{line}");
    }

    // The fine-tuning baseline, under the learned fit's wall time, then the Pareto plots and a report.
    let out = ok(ail(
        &[
            "finetune", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25",
            "--stages", "1", "--epochs", "2", "--batch-size", "16", "--budget-from", "learned/fit.json", "--out", "ft",
        ],
        d,
    ));
    assert!(out.contains("fine-tuned (last 1 stage(s)") && out.contains("budget"), "{out}");
    let ft = json(&d.join("ft/fit.json"));
    assert_eq!(ft["finetuned_stages"], 1);
    // The last stage of a width-1/16 ResNet-18 (see the core test) plus the head.
    let stage = (16 * 32 * 9 + 32 * 32 * 9 + 16 * 32 + 3 * 64) + (2 * 32 * 32 * 9 + 2 * 64);
    let hyper = ft["parameters_updated"].as_u64().unwrap() as usize;
    assert!(hyper > stage + features * 4, "a Hyper-ResNet's last stage has its kernel generators too: {hyper}");
    let out = ok(ail(&["pareto", "--fit", "learned", "fixed/fit.json", "ft", "--out", "pareto"], d));
    assert!(out.contains("learned (learned i)") && out.contains("fine-tune 1 stage"), "{out}");
    let csv = std::fs::read_to_string(d.join("pareto/pareto.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    // The fixed-i readout updates the fewest parameters: it is on the parameter front.
    assert!(csv.lines().any(|l| l.contains("fixed i") && l.split(',').rev().nth(1) == Some("true")), "{csv}");
    for svg in ["pareto/pareto-parameters.svg", "pareto/pareto-time.svg"] {
        assert!(std::fs::read_to_string(d.join(svg)).unwrap().starts_with("<svg"));
    }
    ok(ail(&["report", "run", "learned", "fixed", "ft", "--out", "report/page.md"], d));
    let page = std::fs::read_to_string(d.join("report/page.md")).unwrap();
    assert!(page.contains("## Pretraining: run") && page.contains("## Fits") && page.contains("fine-tune 1 stage"), "{page}");
    let e = ail(&["report", "imgs/c0/0.png"], d);
    assert!(String::from_utf8_lossy(&e.stderr).contains("not a pretraining run"));

    // Bad input names the problem.
    let e = ail(&["fit", "--device", "cpu", "--checkpoint", "nowhere", "--data", "imgs"], d);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("neither a checkpoint"));
    let e = ail(&[&common[..], &["--fixed-invariance", "1,1,0"]].concat(), d);
    assert!(String::from_utf8_lossy(&e.stderr).contains("takes 2 entries"), "{}", String::from_utf8_lossy(&e.stderr));
    let e = ail(&["fit", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--lrs", "0.1,x"], d);
    assert!(String::from_utf8_lossy(&e.stderr).contains("`x` is not a number"));
}

#[test]
fn derived_position_and_tint_tasks_fit_from_any_image_folder_and_exported_encoders_load_as_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    let fit = |checkpoint: &str, task: &str, extra: &[&str], out: &str| {
        let common = [
            "fit", "--device", "cpu", "--checkpoint", checkpoint, "--task", task, "--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25",
            "--epochs", "2", "--batch-size", "16", "--lrs", "0.01", "--weight-decays", "0", "--out", out,
        ];
        ok(ail(&[&common[..], extra].concat(), d));
        json(&d.join(out).join("fit.json"))
    };
    let tint = fit("run", "tint", &["--fixed-invariance", "1,1"], "tint");
    assert!(tint["task"].as_str().unwrap().starts_with("tint:"), "{}", tint["task"]);
    assert_eq!(tint["head"]["class_names"], serde_json::json!(["reddish", "greenish", "bluish"]));
    assert!((0.0..=1.0).contains(&tint["test"]["accuracy"].as_f64().unwrap()));
    assert_eq!(floats(&tint["samples"]), vec![32.0, 16.0, 16.0]);
    let position = fit("run", "position", &[], "position");
    assert_eq!(position["learned_i"], true);
    assert_eq!(position["head"]["outputs"], 2);
    assert!(position["test"]["r2"].as_f64().unwrap().is_finite() && position["test"]["accuracy"].is_null());

    // An exported encoder file (the form published encoders take) is a checkpoint for every
    // command: its f16 kernel weights give nearly the features of the run it came from.
    ok(ail(&["export", "--web", "run", "--out", "enc.ailweb"], d));
    let exported = fit("enc.ailweb", "tint", &["--fixed-invariance", "1,1"], "tint-file");
    assert!(exported["checkpoint"].as_str().unwrap().ends_with("enc.ailweb"), "{}", exported["checkpoint"]);
    let (a, b) = (exported["test"]["loss"].as_f64().unwrap(), tint["test"]["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 0.02 * b.abs().max(1.0), "test loss from the file {a} vs the run {b}");
    ok(ail(&["measure", "--device", "cpu", "--checkpoint", "enc.ailweb", "--data", "imgs", "--images", "16", "--stats-images", "32", "--out", "m"], d));
    assert!(d.join("m").read_dir().unwrap().count() > 0);
    ok(ail(
        &[
            "fewshot", "--device", "cpu", "--checkpoint", "enc.ailweb", "--task", "classify", "--data", "imgs", "--ways", "3", "--shots", "2",
            "--queries", "3", "--episodes", "2", "--steps", "2", "--out", "fs-file",
        ],
        d,
    ));
    let bad = ail(&["fit", "--device", "cpu", "--checkpoint", "imgs", "--data", "imgs", "--out", "x"], d);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("an encoder file of `ail export --web`"));
    // A damaged export is refused from its first bytes, naming the problem: a description length
    // beyond any text file's, and a file cut inside its tensors.
    let bytes = std::fs::read(d.join("enc.ailweb")).unwrap();
    let mut huge = bytes[..12].to_vec();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(d.join("huge.ailweb"), huge).unwrap();
    std::fs::write(d.join("cut.ailweb"), &bytes[..bytes.len() / 2]).unwrap();
    for (file, needle) in [("huge.ailweb", "more than the"), ("cut.ailweb", "truncated")] {
        let out = ail(&["fit", "--device", "cpu", "--checkpoint", file, "--fixed-invariance", "1,1", "--data", "imgs", "--out", "x"], d);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(file) && stderr.contains(needle), "{file}: {stderr}");
    }
}

#[test]
fn fewshot_and_lowshot_report_means_with_confidence_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    let out = ok(ail(
        &[
            "fewshot", "--device", "cpu", "--checkpoint", "run", "--task", "classify", "--data", "imgs", "--ways", "3", "--shots", "2",
            "--queries", "3", "--episodes", "4", "--steps", "2", "--out", "fs",
        ],
        d,
    ));
    assert!(out.contains("3-way 2-shot, 4 episodes") && out.contains("95% CI"), "{out}");
    let fs = json(&d.join("fs/fewshot.json"));
    assert_eq!(fs["episodes"].as_array().unwrap().len(), 4);
    let accs: Vec<f64> = fs["episodes"].as_array().unwrap().iter().map(|e| e["accuracy"].as_f64().unwrap()).collect();
    let mean = accs.iter().sum::<f64>() / 4.0;
    assert!((fs["accuracy"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(fs["accuracy"]["ci95"].as_f64().unwrap() >= 0.0);
    assert_eq!(floats(&fs["mean_i"]).len(), 2);
    assert_eq!(fs["learned_i"], true);
    assert!(fs["episodes"][0].get("start").is_none(), "a start of 0.5 is not chosen per episode");

    // The start chosen per episode on the support set: one of the trained corners, recorded.
    let base = ["fewshot", "--device", "cpu", "--checkpoint", "run", "--task", "classify", "--data", "imgs", "--ways", "3", "--queries", "3", "--episodes", "3"];
    let out = ok(ail(&[&base[..], &["--steps", "2", "--shots", "2", "--i-init", "best-corner", "--out", "fs-corner"]].concat(), d));
    assert!(out.contains("from the corner chosen on the support set"), "{out}");
    let fs = json(&d.join("fs-corner/fewshot.json"));
    assert_eq!(fs["i_init"], "best-corner");
    for e in fs["episodes"].as_array().unwrap() {
        let start = floats(&e["start"]);
        assert!([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].iter().any(|c| start == c.to_vec()), "start {start:?} is not a trained corner");
    }
    // With no steps on i, the readout stays at the chosen corner: every episode's i is its start.
    let out = ok(ail(&[&base[..], &["--shots", "2", "--i-init", "best-corner", "--steps", "0", "--readout", "logistic", "--out", "fs-chosen"]].concat(), d));
    assert!(out.contains("i fixed at the corner chosen on each support set"), "{out}");
    let fs = json(&d.join("fs-chosen/fewshot.json"));
    assert_eq!(fs["learned_i"], false);
    for e in fs["episodes"].as_array().unwrap() {
        assert_eq!(floats(&e["start"]), floats(&e["i"]));
    }
    // The report names how each run set i, and draws the runs side by side.
    ok(ail(&["report", "fs", "fs-corner", "fs-chosen", "--out", "rep/r.md"], d));
    let md = std::fs::read_to_string(d.join("rep/r.md")).unwrap();
    for want in ["learned from 0.5", "learned from the chosen corner", "corner chosen per episode", "![few-shot accuracy](r.files/fewshot.svg)"] {
        assert!(md.contains(want), "{want} missing from\n{md}");
    }
    assert!(std::fs::read_to_string(d.join("rep/r.files/fewshot.svg")).unwrap().contains("fs-chosen (corner chosen per episode)"));
    // Its mean i reads as two numbers of two decimals each, e.g. `[0.87, 0.82]`.
    for row in md.lines().filter(|l| l.starts_with("| fs")) {
        let cell = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        let numbers: Vec<&str> = cell.trim_start_matches('[').trim_end_matches(']').split(", ").collect();
        assert!(cell.starts_with('[') && numbers.len() == 2 && numbers.iter().all(|x| x.len() == 4 && x.parse::<f32>().is_ok()), "{row}");
    }
    let one_shot = ail(&[&base[..], &["--shots", "1", "--i-init", "best-corner", "--out", "x"]].concat(), d);
    assert!(!one_shot.status.success() && common::stderr(&one_shot).contains("--shots 2 or more"), "{}", common::stderr(&one_shot));

    // Regression from a CSV: brightness of the image -> two targets.
    std::fs::create_dir_all(d.join("reg")).unwrap();
    let mut csv = String::from("path,a,b\n");
    for k in 0..40u32 {
        let v = (k * 6) as u8;
        image::RgbImage::from_fn(8, 8, |x, _| image::Rgb([v, v / 2, (x * 20) as u8])).save(d.join(format!("reg/{k}.png"))).unwrap();
        csv += &format!("reg/{k}.png,{},{}\n", v as f32 / 255.0, 1.0 - v as f32 / 510.0);
    }
    std::fs::write(d.join("t.csv"), csv).unwrap();
    let out = ok(ail(
        &[
            "lowshot", "--device", "cpu", "--checkpoint", "run", "--task", "csv", "--data", "t.csv", "--fractions", "0.5,1", "--repeats", "2",
            "--steps", "2", "--out", "ls",
        ],
        d,
    ));
    assert!(out.contains("s = 0.5") && out.contains("R^2"), "{out}");
    let ls = json(&d.join("ls/lowshot.json"));
    let rows = ls["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["runs"].as_array().unwrap().len(), 2);
        let r2 = row["r2"]["mean"].as_f64().unwrap();
        assert!(r2 > 0.5 && r2 <= 1.0, "brightness is easy to read out: {row}");
    }
    let out = ok(ail(
        &[
            "lowshot", "--device", "cpu", "--checkpoint", "run", "--task", "csv", "--data", "t.csv", "--fractions", "0.5", "--repeats", "1",
            "--steps", "2", "--i-init", "best-corner", "--out", "ls-corner",
        ],
        d,
    ));
    assert!(out.contains("s = 0.5"), "{out}");
    assert_eq!(json(&d.join("ls-corner/lowshot.json"))["i_init"], "best-corner");
    // Class targets are refused by the regression command, with the alternative named.
    let e = ail(&["lowshot", "--device", "cpu", "--checkpoint", "run", "--data", "imgs"], d);
    assert!(String::from_utf8_lossy(&e.stderr).contains("ail fewshot or ail fit"));
}

#[test]
fn omniglot_pen_start_regression_reads_the_official_zip_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    let mut images = Vec::new();
    let mut strokes = Vec::new();
    for c in 1..=3u32 {
        for k in 1..=8u32 {
            // White page, a black dot where the pen starts.
            let (x0, y0) = (10 + 10 * k, 15 + 20 * c);
            let img = image::GrayImage::from_fn(105, 105, |x, y| image::Luma([if x.abs_diff(x0) < 8 && y.abs_diff(y0) < 8 { 0 } else { 255 }]));
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            let stem = format!("Alpha/character{c:02}/{c:02}{k:02}_{k:02}");
            images.push((format!("images_background/{stem}.png"), png.into_inner()));
            strokes.push((format!("strokes_background/{stem}.txt"), format!("START\n{x0},-{y0},0\n{},-{y0},10\nBREAK\n", x0 + 5).into_bytes()));
        }
    }
    let as_refs = |v: &Vec<(String, Vec<u8>)>| v.iter().map(|(n, b)| (n.clone(), b.clone())).collect::<Vec<_>>();
    let write = |name: &str, files: Vec<(String, Vec<u8>)>| {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        std::fs::write(d.join(name), ail_data::zip::write_zip(&refs)).unwrap();
    };
    write("images.zip", as_refs(&images));
    write("strokes.zip", as_refs(&strokes));
    let e = ail(&["fit", "--device", "cpu", "--checkpoint", "run", "--task", "omniglot-pen", "--data", "images.zip"], d);
    assert!(String::from_utf8_lossy(&e.stderr).contains("needs --strokes"));
    ok(ail(
        &[
            "fit", "--device", "cpu", "--checkpoint", "run", "--task", "omniglot-pen", "--data", "images.zip", "--strokes", "strokes.zip",
            "--epochs", "2", "--batch-size", "8", "--lrs", "0.01", "--weight-decays", "0", "--out", "pen",
        ],
        d,
    ));
    let fit = json(&d.join("pen/fit.json"));
    assert!(fit["test"]["r2"].as_f64().unwrap().is_finite() && fit["test"].get("accuracy").is_none());
    assert!(fit["bound"].is_null(), "the bound is for classification");
    let out = ok(ail(
        &[
            "fewshot", "--device", "cpu", "--checkpoint", "run", "--data", "images.zip", "--ways", "3", "--shots", "1", "--queries", "2",
            "--episodes", "2", "--steps", "1", "--out", "ofs",
        ],
        d,
    ));
    assert!(out.contains("3-way 1-shot"), "{out}");
}

#[test]
fn compare_runs_every_arm_with_one_grid_and_batchnorm_measures_every_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    // A plain encoder of the same input size, pretrained on one descriptor's augmentations.
    ok(ail(
        &[
            "pretrain", "--device", "cpu", "--data", "imgs", "--image-size", "8", "--width", "0.0625", "--steps", "2", "--batch-size", "16",
            "--monitor-every", "0", "--model", "resnet18", "--invariances", "fixed:1,1", "--out", "plain",
        ],
        d,
    ));
    let out = ok(ail(
        &[
            "compare", "--device", "cpu", "--checkpoint", "run", "--plain", "default=plain", "--data", "imgs", "--val-fraction", "0.25",
            "--test-fraction", "0.25", "--epochs", "2", "--batch-size", "16", "--lrs", "0.01,0.001", "--weight-decays", "0", "--seeds", "2",
            "--out", "cmp",
        ],
        d,
    ));
    let report = json(&d.join("cmp/compare.json"));
    let arms = report["arms"].as_array().unwrap();
    let names: Vec<&str> = arms.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "learned i (from 0.5)",
            "learned i (from 0.5), head refit",
            "learned i (from the best corner)",
            "learned i (from the best corner), head refit",
            "best corner (chosen on validation)",
            "fixed i = [0.00, 1.00]",
            "fixed i = [1.00, 0.00]",
            "fixed i = [1.00, 1.00]",
            "plain encoder `default`"
        ]
    );
    for arm in arms {
        let runs = arm["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{arm}");
        // Every arm chose from the same grid, on validation.
        for r in runs {
            assert!([0.01, 0.001].contains(&r["lr"].as_f64().unwrap()), "{r}");
            assert!((1..=2).contains(&r["best_epoch"].as_u64().unwrap()), "{r}");
        }
        let scores: Vec<f64> = runs.iter().map(|r| r["test"]["accuracy"].as_f64().unwrap()).collect();
        let mean = scores.iter().sum::<f64>() / 2.0;
        assert!((arm["test"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{arm}");
        // Two seeds: t(1) = 12.706 times the standard error.
        let se = (scores[0] - scores[1]).abs() / 2.0;
        assert!((arm["test"]["ci95"].as_f64().unwrap() - 12.706 * se).abs() < 1e-6, "{arm}");
    }
    // The best corner is, in each seed, the corner with the highest validation score, and the
    // learned arm from it starts there.
    // The refit arms read the encoder at the i their learned fit ended with, from the same start,
    // and count the learned fit's time in theirs.
    for seed in 0..2 {
        let corner_val = |k: usize| arms[k]["runs"][seed]["val"]["accuracy"].as_f64().unwrap();
        let best = arms[4]["runs"][seed]["val"]["accuracy"].as_f64().unwrap();
        assert_eq!(best, (5..8).map(corner_val).fold(f64::MIN, f64::max));
        assert_eq!(arms[2]["runs"][seed]["start"], arms[4]["runs"][seed]["i"]);
        assert_eq!(floats(&arms[0]["runs"][seed]["start"]), vec![0.5, 0.5]);
        // The path of i: the start, then one entry per epoch (2 here).
        let path = arms[0]["runs"][seed]["trajectory"].as_array().unwrap();
        assert_eq!(path.len(), 3);
        assert_eq!(floats(&path[0]), vec![0.5, 0.5]);
        assert!(arms[5]["runs"][seed].get("trajectory").is_none(), "fixed arms have no path");
        for (learned, refit) in [(0, 1), (2, 3)] {
            let (l, r) = (&arms[learned]["runs"][seed], &arms[refit]["runs"][seed]);
            assert_eq!(r["i"], l["i"]);
            assert_eq!(r["start"], l["start"]);
            assert!(r["wall_time_s"].as_f64().unwrap() > l["wall_time_s"].as_f64().unwrap(), "{r} {l}");
            // The refitted head is kept only when validation prefers it, as in `ail fit --refit-head`.
            let score = |run: &serde_json::Value, split: &str| run[split]["accuracy"].as_f64().unwrap();
            assert!(score(r, "val") >= score(l, "val"), "{r} {l}");
            if score(r, "val") == score(l, "val") {
                assert_eq!(score(r, "test"), score(l, "test"), "the joint head is kept: {r} {l}");
            }
        }
        assert_eq!(arms[1]["kind"], "learned-refit");
    }
    assert_eq!(arms[8]["runs"][0]["i"].as_array().unwrap().len(), 0);
    assert!(out.contains("| learned i (from 0.5) |") && d.join("cmp/compare.svg").exists(), "{out}");
    assert_eq!(report["bn_statistics"], "per-descriptor");

    // Bad flags are named.
    let fails = |o: Output| {
        assert!(!o.status.success(), "ail succeeded");
        common::stderr(&o)
    };
    let err = fails(ail(&["compare", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--starts", "0.5,middle"], d));
    assert!(err.contains("--starts: `middle` is neither a number in [0, 1] nor best-corner"), "{err}");
    let err = fails(ail(&["compare", "--device", "cpu", "--checkpoint", "plain", "--data", "imgs"], d));
    assert!(err.contains("is a plain encoder: compare needs an amortised one"), "{err}");

    let out = ok(ail(
        &["batchnorm", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25", "--out", "bn"],
        d,
    ));
    let report = json(&d.join("bn/batchnorm.json"));
    let descriptors = report["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 4, "three trained descriptors and the middle");
    for r in descriptors {
        let layers = r["layers"].as_array().unwrap();
        // Hyper-ResNet-18: the stem and two BatchNorms per block in eight blocks, plus three
        // shortcut projections.
        assert_eq!(layers.len(), 1 + 16 + 3, "{r}");
        assert!(layers.iter().all(|l| l["mean_shift"].as_f64().unwrap() >= 0.0 && l["log_sd_ratio"].as_f64().unwrap() >= 0.0));
        for key in ["knn_shared", "knn_per_descriptor", "knn_recomputed_once"] {
            assert!((0.0..=1.0).contains(&r[key].as_f64().unwrap()), "{key}: {r}");
        }
    }
    // The stem is not conditioned on i: its statistics are the same at every descriptor.
    let stem: Vec<f64> = descriptors.iter().map(|r| r["layers"][0]["mean_shift"].as_f64().unwrap()).collect();
    assert!(stem.iter().all(|s| (s - stem[0]).abs() < 1e-9), "{stem:?}");
    assert!(out.contains("kNN, per-descriptor"), "{out}");

    // A plain encoder: one row, its running statistics against those recomputed on the task's
    // training images; it has no descriptors to ask for.
    let out = ok(ail(
        &["batchnorm", "--device", "cpu", "--checkpoint", "plain", "--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25", "--out", "bn-plain"],
        d,
    ));
    let report = json(&d.join("bn-plain/batchnorm.json"));
    let rows = report["descriptors"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    assert!(rows[0]["i"].as_array().unwrap().is_empty() && rows[0]["layers"].as_array().unwrap().len() == 1 + 16 + 3, "{report}");
    assert!(out.contains("| plain |"), "{out}");
    let err = fails(ail(&["batchnorm", "--device", "cpu", "--checkpoint", "plain", "--data", "imgs", "--descriptors", "1,1", "--out", "x"], d));
    assert!(err.contains("--descriptors: ") && err.contains("is a plain encoder, it has no descriptors"), "{err}");

    // A separate test dataset (images held out of pretraining): used whole as the queries, and
    // nothing is carved from --data for testing, so the bank is all of --data but validation.
    for (c, keep) in [(0, 5), (1, 5), (2, 5), (3, 5)] {
        let (from, to) = (d.join(format!("imgs/c{c}")), d.join(format!("held/c{c}")));
        std::fs::create_dir_all(&to).unwrap();
        for k in 0..keep {
            std::fs::copy(from.join(format!("{k}.png")), to.join(format!("{k}.png"))).unwrap();
        }
        if c < 2 {
            std::fs::create_dir_all(d.join(format!("held-two/c{c}"))).unwrap();
            std::fs::copy(from.join("0.png"), d.join(format!("held-two/c{c}/0.png"))).unwrap();
        }
    }
    let bn = ["batchnorm", "--device", "cpu", "--checkpoint", "plain", "--data", "imgs", "--val-fraction", "0.25", "--bank", "1000", "--queries", "1000"];
    ok(ail(&[&bn[..], &["--test-data", "held", "--out", "bn-held"]].concat(), d));
    let report = json(&d.join("bn-held/batchnorm.json"));
    assert_eq!((report["queries"].as_u64(), report["bank"].as_u64()), (Some(20), Some(64 - 16)), "{report}");
    let err = fails(ail(&[&bn[..], &["--test-data", "held-two", "--out", "x"]].concat(), d));
    assert!(err.contains("--test-data") && err.contains("the test data must hold the same classes"), "{err}");
    let err = fails(ail(&["fit", "--device", "cpu", "--checkpoint", "run", "--task", "tint", "--data", "imgs", "--test-data", "held", "--out", "x"], d));
    assert!(err.contains("--test-data") && err.contains("use it with --task classify"), "{err}");
}

#[test]
fn fit_saves_its_head_predict_reproduces_its_test_score_and_embed_writes_features() {
    use ail_core::arrays::read_safetensors;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained(d);
    let task = ["--data", "imgs", "--val-fraction", "0.25", "--test-fraction", "0.25"];
    ok(ail(&[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--epochs", "3", "--batch-size", "16", "--lrs", "0.01", "--weight-decays", "0", "--out", "learned"]].concat(), d));
    let fit = json(&d.join("learned/fit.json"));
    assert_eq!(fit["head"]["outputs"], 4);
    assert_eq!(fit["head"]["class_names"].as_array().unwrap().len(), 4);
    let (head, _) = read_safetensors(&std::fs::read(d.join("learned/head.safetensors")).unwrap(), "head").unwrap();
    assert_eq!(head[0].name, "weight");
    assert_eq!(head[0].shape, vec![4, 32]);
    // Per-descriptor statistics (the default) are saved with the head: two arrays per BatchNorm call.
    assert_eq!(head.len(), 2 + 2 * 20);

    // The same task flags give the same test split: predict scores it as fit did.
    let out = ok(ail(&[&["predict", "--device", "cpu", "--fit", "learned"][..], &task, &["--out", "pred/test.csv"]].concat(), d));
    let csv = std::fs::read_to_string(d.join("pred/test.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 16);
    let correct = rows.iter().filter(|r| {
        let f: Vec<&str> = r.split(',').collect();
        f[2] == f[3]
    });
    // Each row names its image file, whose class folder is the target.
    for r in &rows {
        let f: Vec<&str> = r.split(',').collect();
        assert!(f[1].ends_with(".png") && f[1].contains(&format!("{}{}", f[3], std::path::MAIN_SEPARATOR)), "{r}");
    }
    let accuracy = correct.count() as f64 / 16.0;
    assert_eq!(accuracy, fit["test"]["accuracy"].as_f64().unwrap(), "{out}");
    assert!(out.contains(&format!("accuracy {:.2}%", 100.0 * accuracy)), "{out}");

    // Features at the fit's descriptor, with its statistics: the head applied to them gives the
    // predictions.
    ok(ail(&[&["embed", "--device", "cpu", "--fit", "learned"][..], &task, &["--split", "test", "--out", "emb"]].concat(), d));
    let (arrays, meta) = read_safetensors(&std::fs::read(d.join("emb/features.safetensors")).unwrap(), "emb").unwrap();
    assert_eq!((arrays[0].name.as_str(), arrays[0].shape.clone()), ("features", vec![16, 32]));
    assert_eq!((arrays[1].name.as_str(), arrays[1].shape.clone()), ("labels", vec![16]));
    assert!(meta["i"].starts_with('['));
    let (f, w, b) = (arrays[0].as_f32().unwrap(), head[0].as_f32().unwrap(), head[1].as_f32().unwrap());
    let names: Vec<String> = fit["head"]["class_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    for (k, row) in rows.iter().enumerate() {
        let logits: Vec<f32> = (0..4).map(|c| b[c] + (0..32).map(|j| w[c * 32 + j] * f[k * 32 + j]).sum::<f32>()).collect();
        let best = (0..4).max_by(|&a, &c| logits[a].total_cmp(&logits[c])).unwrap();
        assert_eq!(row.split(',').nth(2).unwrap(), names[best], "row {k}");
    }
    // The rows' image files, in the order of the predictions.
    let sources: Vec<String> = serde_json::from_slice(&std::fs::read(d.join("emb/sources.json")).unwrap()).unwrap();
    assert_eq!(sources, rows.iter().map(|r| r.split(',').nth(1).unwrap().to_string()).collect::<Vec<_>>());
    let npy = std::fs::read(d.join("emb/features.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
    assert_eq!(npy.len() % 4, 0);
    let embed = json(&d.join("emb/embed.json"));
    assert_eq!(embed["samples"], 16);
    assert_eq!(embed["bn_statistics"], "per-descriptor");

    // At a given descriptor; bad descriptors and missing heads are named.
    ok(ail(&[&["embed", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--invariance", "1,0", "--split", "all", "--out", "emb10"]].concat(), d));
    assert_eq!(json(&d.join("emb10/embed.json"))["samples"], 64);
    let o = ail(&[&["embed", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--invariance", "1,0,1", "--out", "bad"]].concat(), d);
    assert!(!o.status.success() && common::stderr(&o).contains("--invariance"), "{}", common::stderr(&o));
    let o = ail(&["predict", "--device", "cpu", "--fit", "nothing-here", "--data", "imgs"], d);
    assert!(!o.status.success() && common::stderr(&o).contains("nothing-here"), "{}", common::stderr(&o));

    // Learned i from the corner that wins on validation: each corner scored first, the start is the best.
    ok(ail(
        &[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--epochs", "2", "--batch-size", "16", "--lrs", "0.01", "--weight-decays", "0", "--i-init", "best-corner", "--out", "from-corner"]].concat(),
        d,
    ));
    let report = json(&d.join("from-corner/fit.json"));
    let corners = report["corners"].as_array().unwrap();
    assert_eq!(corners.len(), 3, "K = 2 trains three corners: {corners:?}");
    let best = corners.iter().max_by(|a, b| a["val_score"].as_f64().unwrap().total_cmp(&b["val_score"].as_f64().unwrap())).unwrap();
    assert_eq!(floats(&report["trajectory"][0]), floats(&best["i"]), "learned i starts at the best corner");
    let o = ail(&[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--i-init", "best", "--out", "x"]].concat(), d);
    assert!(!o.status.success() && common::stderr(&o).contains("--i-init: `best` is neither"), "{}", common::stderr(&o));

    // --refit-head: the refitted head is the fixed fit at the learned i (the same score as `ail fit
    // --fixed-invariance` there), kept only when it scores better on validation.
    let grid = ["--epochs", "2", "--batch-size", "16", "--lrs", "0.01,0.003", "--weight-decays", "0"];
    ok(ail(&[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &grid, &["--refit-head", "--out", "refit"]].concat(), d));
    let report = json(&d.join("refit/fit.json"));
    let refit = &report["head_refit"];
    let learned: Vec<String> = report["i"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    assert_eq!(report["learned_i"], true);
    ok(ail(&[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &grid, &["--fixed-invariance", &learned.join(","), "--out", "at-learned"]].concat(), d));
    let fixed = json(&d.join("at-learned/fit.json"));
    assert_eq!(refit["refit_val_score"].as_f64().unwrap(), fixed["val"]["accuracy"].as_f64().unwrap(), "{refit} {fixed}");
    let (joint, refitted) = (refit["joint_val_score"].as_f64().unwrap(), refit["refit_val_score"].as_f64().unwrap());
    assert_eq!(refit["kept"].as_bool().unwrap(), refitted > joint, "{refit}");
    assert_eq!(report["val"]["accuracy"].as_f64().unwrap(), joint.max(refitted), "{report}");
    let o = ail(&[&["fit", "--device", "cpu", "--checkpoint", "run"][..], &task, &["--refit-head", "--fixed-invariance", "1,1", "--out", "x"]].concat(), d);
    assert!(!o.status.success() && common::stderr(&o).contains("--refit-head refits the head at a learned i"), "{}", common::stderr(&o));
}
