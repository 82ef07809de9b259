//! The bad-input corpus: every case gets a non-zero exit and a message that names the problem,
//! never a panic or a backtrace. Inputs are written by the test (nothing is shipped).

use std::path::Path;
use std::process::Command;

/// Runs `ail`, expects failure, and returns stderr after checking it is a message, not a panic.
fn fails(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ail"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the ail binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "`ail {}` should fail:\n{err}", args.join(" "));
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "`ail {}` panicked:\n{err}", args.join(" "));
    err
}

fn expect(args: &[&str], cwd: &Path, needles: &[&str]) {
    let err = fails(args, cwd);
    for n in needles {
        assert!(err.contains(n), "`ail {}`: expected `{n}` in:\n{err}", args.join(" "));
    }
}

/// A tiny ImageFolder and a 2-step pretraining run on it (`run/`).
fn setup(d: &Path) {
    for c in 0..3u32 {
        let class = d.join("imgs").join(format!("c{c}"));
        std::fs::create_dir_all(&class).unwrap();
        for k in 0..(if c == 2 { 1 } else { 8 }) {
            image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, (40 * c + k) as u8]))
                .save(class.join(format!("{k}.png")))
                .unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ail"))
        .args(["pretrain", "--device", "cpu", "--data", "imgs", "--image-size", "8", "--width", "0.0625", "--steps", "2", "--batch-size", "4", "--monitor-every", "0", "--out", "run"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn data_files_of_the_wrong_size_magic_or_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // CIFAR binary of the wrong size.
    std::fs::create_dir_all(d.join("cifar")).unwrap();
    for b in 1..=5 {
        std::fs::write(d.join(format!("cifar/data_batch_{b}.bin")), vec![0u8; 3073 * 2 + 5]).unwrap();
    }
    expect(&["augment-preview", "--data", "cifar", "--out", "p.png"], d, &["data_batch_1.bin"]);
    // IDX with a wrong magic number.
    std::fs::create_dir_all(d.join("idx")).unwrap();
    std::fs::write(d.join("idx/train-images-idx3-ubyte"), b"\x00\x00\x09\x03garbage").unwrap();
    std::fs::write(d.join("idx/train-labels-idx1-ubyte"), b"\x00\x00\x08\x01\x00\x00\x00\x00").unwrap();
    expect(&["augment-preview", "--data", "idx", "--out", "p.png"], d, &["train-images-idx3-ubyte"]);
    // Garbage and truncated images in an ImageFolder.
    std::fs::create_dir_all(d.join("folder/a")).unwrap();
    std::fs::write(d.join("folder/a/bad.png"), b"not a png").unwrap();
    expect(&["augment-preview", "--data", "folder", "--out", "p.png"], d, &["bad.png", "--skip-bad"]);
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(16, 16).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    std::fs::write(d.join("folder/a/bad.png"), &png[..png.len() / 2]).unwrap();
    expect(&["augment-preview", "--data", "folder", "--out", "p.png"], d, &["corrupt image", "bad.png"]);
    // An empty folder.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    expect(&["augment-preview", "--data", "empty", "--out", "p.png"], d, &["empty"]);
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn checkpoints_configs_and_values_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let ckpt = std::fs::read_dir(d.join("run/checkpoints")).unwrap().next().unwrap().unwrap().path();
    let ckpt = ckpt.strip_prefix(d).unwrap().to_str().unwrap().to_string();
    let fit = |extra: &[&'static str]| -> Vec<String> {
        ["fit", "--device", "cpu", "--checkpoint", ckpt.as_str(), "--data", "imgs", "--epochs", "1"].iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // Descriptors outside [0, 1], of the wrong length, or not numbers.
    expect(&refs(&fit(&["--fixed-invariance", "1.5,0"])), d, &["[0, 1]"]);
    expect(&refs(&fit(&["--fixed-invariance", "1,0,1"])), d, &["takes 2 entries"]);
    expect(&refs(&fit(&["--fixed-invariance", "a,b"])), d, &["not a number"]);
    expect(&refs(&fit(&["--i-init", "2"])), d, &["--i-init"]);
    expect(&refs(&fit(&["--batch-size", "0"])), d, &["at least 1"]);
    // Pretraining values out of range and a config of the wrong types.
    expect(&["pretrain", "--device", "cpu", "--data", "imgs", "--width", "0", "--out", "w"], d, &["width"]);
    expect(&["pretrain", "--device", "cpu", "--data", "imgs", "--batch-size", "0", "--out", "b"], d, &["--batch-size"]);
    std::fs::write(d.join("bad.toml"), "steps = \"many\"\n").unwrap();
    expect(&["pretrain", "--device", "cpu", "--config", "bad.toml", "--out", "c"], d, &["bad.toml", "steps"]);
    std::fs::write(d.join("unknown.toml"), "stepz = 3\n").unwrap();
    expect(&["pretrain", "--device", "cpu", "--config", "unknown.toml", "--out", "c"], d, &["stepz"]);
    // A 5-shot episode where a class has one image.
    expect(
        &["fewshot", "--device", "cpu", "--checkpoint", &ckpt, "--task", "classify", "--data", "imgs", "--ways", "3", "--shots", "5", "--queries", "2"],
        d,
        &["3-way 5-shot", "need 3 classes of at least 7 images"],
    );
    // Truncated and garbage checkpoint files.
    let copy = d.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.safetensors", "checkpoint.json"] {
        std::fs::copy(d.join(&ckpt).join(f), copy.join(f)).unwrap();
    }
    let model = std::fs::read(copy.join("model.safetensors")).unwrap();
    std::fs::write(copy.join("model.safetensors"), &model[..model.len() / 3]).unwrap();
    expect(&["fit", "--device", "cpu", "--checkpoint", "copy", "--data", "imgs"], d, &["model.safetensors", "truncated"]);
    std::fs::write(copy.join("model.safetensors"), &model).unwrap();
    std::fs::write(copy.join("checkpoint.json"), b"{\"format\": 3").unwrap();
    expect(&["fit", "--device", "cpu", "--checkpoint", "copy", "--data", "imgs"], d, &["checkpoint.json"]);
    std::fs::write(copy.join("checkpoint.json"), b"\x00\x01garbage").unwrap();
    expect(&["measure", "--device", "cpu", "--checkpoint", "copy", "--out", "m"], d, &["checkpoint.json"]);
    // Zips: not a zip, a zip without Omniglot's layout, strokes that do not match the images.
    std::fs::write(d.join("nozip.zip"), b"plain text").unwrap();
    expect(&["fewshot", "--device", "cpu", "--checkpoint", &ckpt, "--data", "nozip.zip"], d, &["nozip.zip", "ZIP archive"]);
    std::fs::write(d.join("flat.zip"), ail_data::zip::write_zip(&[("readme.txt", b"hello")])).unwrap();
    expect(&["fewshot", "--device", "cpu", "--checkpoint", &ckpt, "--data", "flat.zip"], d, &["flat.zip", "images_background"]);
    let mut png = std::io::Cursor::new(Vec::new());
    image::GrayImage::new(105, 105).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    std::fs::write(d.join("img.zip"), ail_data::zip::write_zip(&[("i/A/character01/01_01.png", &png)])).unwrap();
    std::fs::write(d.join("str.zip"), ail_data::zip::write_zip(&[("s/A/character01/01_01.txt", b"START\nBREAK\n")])).unwrap();
    expect(
        &["fit", "--device", "cpu", "--checkpoint", &ckpt, "--task", "omniglot-pen", "--data", "img.zip", "--strokes", "str.zip"],
        d,
        &["01_01.txt", "no stroke points"],
    );
    // Hostile zips, each under a 2 GB address-space limit: 300 directory entries that all point at
    // one PNG's data (one file decoded 300 times), and an entry whose directory declares 4 GiB.
    let names: Vec<String> = (0..300).map(|k| format!("images_background/A/character{:02}/01_{k:03}.png", k % 20 + 1)).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), png.as_slice())).collect();
    let mut shared = ail_data::zip::write_zip(&entries);
    let directory: Vec<usize> = shared.windows(4).enumerate().filter(|(_, w)| *w == b"PK\x01\x02").map(|(at, _)| at).collect();
    assert_eq!(directory.len(), 300);
    let first: [u8; 4] = shared[directory[0] + 42..directory[0] + 46].try_into().unwrap();
    for &at in &directory[1..] {
        shared[at + 42..at + 46].copy_from_slice(&first);
    }
    std::fs::write(d.join("shared.zip"), shared).unwrap();
    refused_within_2gb(&["fewshot", "--device", "cpu", "--checkpoint", &ckpt, "--data", "shared.zip"], d, &["shared.zip", "share their data"]);
    let mut big = ail_data::zip::write_zip(&entries[..1]);
    let at = big.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    big[at + 24..at + 28].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(d.join("big.zip"), big).unwrap();
    refused_within_2gb(&["fewshot", "--device", "cpu", "--checkpoint", &ckpt, "--data", "big.zip"], d, &["big.zip", "01_000.png", "needs 4.00 GiB at once"]);
    // A fit.json that is not one.
    std::fs::write(d.join("fit.json"), b"[1, 2, 3]").unwrap();
    expect(&["bound", "--fit", "fit.json"], d, &["fit.json", "not a fit.json"]);
    // A file where the output directory should be.
    std::fs::write(d.join("occupied"), b"a file").unwrap();
    expect(&refs(&fit(&["--out", "occupied"])), d, &["occupied"]);
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn outputs_that_cannot_be_written_fail_early_and_leave_nothing_torn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // a file where the output directory should be (what a read-only or missing mount looks like to
    // a process running as root, which no permission stops)
    std::fs::write(d.join("blocked"), b"a file").unwrap();
    let pretrain = ["pretrain", "--device", "cpu", "--data", "imgs", "--image-size", "8", "--width", "0.0625", "--steps", "2", "--batch-size", "4", "--monitor-every", "0"];
    expect(&[&pretrain[..], &["--out", "blocked"]].concat(), d, &["creating blocked", "choose another --out"]);
    expect(&[&pretrain[..], &["--out", "blocked/run"]].concat(), d, &["blocked/run"]);
    // downstream commands refuse before fitting, not after
    for (command, extra) in [("fit", &["--epochs", "1"][..]), ("fewshot", &["--task", "classify", "--ways", "2", "--episodes", "1"][..])] {
        let args = [&[command, "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--out", "blocked/out"][..], extra].concat();
        expect(&args, d, &["output directory blocked/out"]);
    }

    // a full disk: a file size limit makes every write past 32 KiB fail (EFBIG, as ENOSPC would)
    let limited = |out: &str| {
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_ail"))
            .args(pretrain)
            .args(["--out", out])
            .current_dir(d)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap()
    };
    let out = limited("full");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("free space or write elsewhere") && err.contains(".safetensors"), "{err}");
    // no checkpoint directory was completed, and no temporary file is left behind
    let complete: Vec<_> = std::fs::read_dir(d.join("full/checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| !n.ends_with(".partial")).collect();
    assert!(complete.is_empty(), "{complete:?}");
    let temps: Vec<_> = files_under(&d.join("full")).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
    assert!(temps.is_empty(), "{temps:?}");
    // with space again, the same command runs to the end
    let out = Command::new(env!("CARGO_BIN_EXE_ail")).args(pretrain).args(["--out", "full"]).current_dir(d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.join("full/checkpoints/step-0000002/model.safetensors").exists());
}

#[test]
fn a_diverging_run_stops_naming_step_descriptor_and_lr_and_saves_no_diverged_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // a learning rate that overflows the weights; the loss is logged rarely but checked before
    // every checkpoint
    let args = ["pretrain", "--device", "cpu", "--data", "imgs", "--image-size", "8", "--width", "0.0625", "--batch-size", "4", "--monitor-every", "0",
        "--log-every", "100", "--steps", "6", "--checkpoint-every", "1", "--lr", "1e30", "--out", "div"];
    let err = fails(&args, d);
    for needle in ["the loss became", "the run diverged", "lower --lr", "(descriptor ", ", lr "] {
        assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    }
    let step: u64 = err.split("at step ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect("a step number");
    // every checkpoint on disk predates the divergence
    for entry in std::fs::read_dir(d.join("div/checkpoints")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let n: u64 = name.trim_start_matches("step-").trim_end_matches(".partial").parse().unwrap_or(0);
        assert!(n < step, "checkpoint {name} was written at or after the divergence at step {step}");
    }
}

/// Runs `ail` under a 2 GB address-space limit (`ulimit -v` in a shell that then runs it) and
/// expects exit 1 with a message naming each of `needles`, never an abort.
fn refused_within_2gb(args: &[&str], cwd: &Path, needles: &[&str]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ail"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("sh runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "`ail {}` should exit 1 (not abort):\n{err}", args.join(" "));
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "`ail {}`:\n{err}", args.join(" "));
    for n in needles {
        assert!(err.contains(n), "`ail {}`: expected `{n}` in:\n{err}", args.join(" "));
    }
}

#[test]
fn configs_too_large_for_the_machine_are_refused_with_an_estimate_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 6,000 built-in images at 4096 x 4096 alone would take about 280 GiB.
    refused_within_2gb(&["pretrain", "--device", "cpu", "--image-size", "4096", "--out", "big"], d, &["--max-memory", "needs about", "--image-size"]);
    std::fs::write(d.join("head.toml"), "heads.hidden = 100000000000\n").unwrap();
    refused_within_2gb(&["pretrain", "--device", "cpu", "--config", "head.toml", "--out", "head"], d, &["--max-memory", "heads.hidden"]);
    std::fs::write(d.join("queue.toml"), "method = \"mocov2\"\nqueue_size = 100000000000\n").unwrap();
    refused_within_2gb(&["pretrain", "--device", "cpu", "--config", "queue.toml", "--out", "queue"], d, &["--max-memory", "queue_size"]);
    // A data set whose header announces more images than memory holds at the asked size is refused
    // from its header, before any image is read (this one has no images at all).
    std::fs::create_dir_all(d.join("many")).unwrap();
    std::fs::write(d.join("many/train-images-idx3-ubyte"), ail_data::idx::encode(&[100_000, 28, 28], &[])).unwrap();
    std::fs::write(d.join("many/train-labels-idx1-ubyte"), ail_data::idx::encode(&[1], &[0])).unwrap();
    refused_within_2gb(&["pretrain", "--device", "cpu", "--data", "many", "--image-size", "1024", "--out", "many-run"], d, &["--max-memory", "images 29"]);
    // The ceiling is the user's to set: a small one refuses the default run, and says so.
    refused_within_2gb(&["pretrain", "--device", "cpu", "--max-memory", "0.01", "--out", "small"], d, &["--max-memory is 0.0 GiB"]);
    for out in ["big", "head", "queue", "many-run", "small"] {
        assert!(!d.join(out).exists(), "nothing is written for a refused run ({out})");
    }
}

#[test]
fn hostile_data_files_are_refused_within_2gb_naming_the_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let preview = |data: &str| vec!["augment-preview".to_string(), "--device".into(), "cpu".into(), "--data".into(), data.into(), "--out".into(), "p.png".into()];
    let run = |args: Vec<String>, needles: &[&str]| refused_within_2gb(&args.iter().map(String::as_str).collect::<Vec<_>>(), d, needles);

    // An IDX image of 1 x 4,000,000 pixels (resizing it used to take gigabytes).
    std::fs::create_dir_all(d.join("strip")).unwrap();
    std::fs::write(d.join("strip/train-images-idx3-ubyte"), ail_data::idx::encode(&[1, 1, 4_000_000], &vec![7; 4_000_000])).unwrap();
    std::fs::write(d.join("strip/train-labels-idx1-ubyte"), ail_data::idx::encode(&[1], &[0])).unwrap();
    run(preview("strip"), &["train-images-idx3-ubyte", "4000000"]);

    // A gzip bomb: a small file that inflates to 1.5 GB (level 9: every deflate backend packs zeros
    // about 1000:1; level 1 of zlib-rs, which zip 9 selects for flate2, packs them far less).
    std::fs::create_dir_all(d.join("bomb")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&ail_data::idx::encode(&[60_000, 28, 28], &[])).unwrap();
    let zeros = vec![0u8; 1 << 24];
    for _ in 0..96 {
        gz.write_all(&zeros).unwrap();
    }
    std::fs::write(d.join("bomb/train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(d.join("bomb/train-labels-idx1-ubyte"), ail_data::idx::encode(&[1], &[0])).unwrap();
    assert!(std::fs::metadata(d.join("bomb/train-images-idx3-ubyte.gz")).unwrap().len() < 8 << 20);
    run(preview("bomb"), &["train-images-idx3-ubyte.gz", "inflates to more than"]);

    // A 20000 x 20000 grey PNG (small on disk, 400 MB decoded).
    std::fs::create_dir_all(d.join("huge/a")).unwrap();
    image::GrayImage::new(20_000, 20_000).save(d.join("huge/a/big.png")).unwrap();
    run(preview("huge"), &["big.png", "20000"]);

    // WAV headers that declare 1 Hz (the resampler would make 16,000 samples of each) and 2^32 - 1 Hz.
    for (name, rate) in [("slow", 1u32), ("fast", u32::MAX)] {
        let rec = d.join(name).join("recordings");
        std::fs::create_dir_all(&rec).unwrap();
        let mut wav = ail_data::audio::encode_wav16(&vec![0.1; 10_000], 8000);
        // As 8-bit mono, so that the header stays consistent: rate, bytes per second, block, bits.
        wav[24..28].copy_from_slice(&rate.to_le_bytes());
        wav[28..32].copy_from_slice(&rate.to_le_bytes());
        wav[32..34].copy_from_slice(&1u16.to_le_bytes());
        wav[34..36].copy_from_slice(&8u16.to_le_bytes());
        std::fs::write(rec.join("0_ann_0.wav"), wav).unwrap();
        let args = ["pretrain", "--device", "cpu", "--modality", "audio", "--invariances", "audio", "--data", name, "--out", "a"];
        run(args.iter().map(|s| s.to_string()).collect(), &["0_ann_0.wav", &format!("{rate} Hz")]);
    }
}

#[test]
fn downstream_work_too_large_for_the_machine_is_refused_with_an_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // 6,000 built-in images decoded at 4096 x 4096: refused from the count, before decoding.
    refused_within_2gb(
        &["augment-preview", "--device", "cpu", "--image-size", "4096", "--out", "p.png"],
        d,
        &["--max-memory", "6000 images", "needs about", "--image-size"],
    );
    // The ceiling is the user's: the task's 17 images (6.4 KiB at 8 x 8, split) are refused under
    // 1 KiB, and a fit whose batch's activations exceed 8 KiB is refused before its first step.
    let fit = |ceiling: &str, out: &str| {
        vec!["--max-memory", ceiling, "fit", "--device", "cpu", "--checkpoint", "run", "--data", "imgs", "--epochs", "1", "--out", out]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let args = fit("0.000001", "f1");
    refused_within_2gb(&refs(&args), d, &["--max-memory is 0.0 GiB", "the task's data at the encoder's 8x8 needs about", "17 images"]);
    let args = fit("0.0000076", "f2");
    refused_within_2gb(&refs(&args), d, &["--max-memory is 0.0 GiB", "this fit needs about", "a batch of", "--batch-size"]);
    for out in ["f1", "f2"] {
        assert!(!d.join(out).join("fit.json").exists(), "a refused fit wrote {out}/fit.json");
    }
    // A CSV task of 3 million rows: its images are refused from the row count (never a failed
    // allocation, which aborts).
    let rows = "a.png,1\n".repeat(3_000_000);
    std::fs::write(d.join("imgs/task.csv"), rows).unwrap();
    let args = ["--max-memory", "0.5", "fit", "--device", "cpu", "--checkpoint", "run", "--task", "csv", "--data", "imgs/task.csv", "--out", "f3"];
    refused_within_2gb(&args, d, &["--max-memory is 0.5 GiB", "the task imgs/task.csv needs about", "3000000 images", "use fewer rows"]);
}
