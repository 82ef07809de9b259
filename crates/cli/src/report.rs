//! `ail pareto` (score against parameters updated and against wall time, over fit.json files of
//! `ail fit` and `ail finetune`) and `ail report` (one markdown page of the tables and plots of
//! pretraining runs and downstream outputs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::args::{ParetoArgs, ReportArgs};
use crate::fit::FitReport;
use crate::svg::{self, Curve};

/// A file of `ail`'s outputs as text, within the size bound of settings files.
fn read_text(path: &Path) -> anyhow::Result<String> {
    ail_data::limits::read_text(path, ail_data::limits::MAX_TEXT_FILE).with_context(|| format!("reading {}", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(&read_text(path)?).with_context(|| format!("{} is not JSON", path.display()))
}

/// What a fit is, in a few words: `learned i`, `fixed i = [1, 1]`, `fine-tune 2 stages`.
fn method(fit: &FitReport) -> String {
    match (fit.finetuned_stages, fit.learned_i) {
        (Some(s), _) => format!("fine-tune {s} stage{}", if s > 1 { "s" } else { "" }),
        (None, true) => "learned i".into(),
        (None, false) if fit.i.is_empty() => "linear readout".into(),
        (None, false) => format!("fixed i = {:?}", fit.i),
    }
}

fn label(path: &Path, fit: &FitReport) -> String {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{name} ({})", method(fit))
}

fn score_name(fit: &FitReport) -> &'static str {
    if fit.test.accuracy.is_some() { "test accuracy" } else { "test R^2" }
}

/// Indices on the Pareto front: no other point has a lower-or-equal cost and a higher-or-equal
/// score with one of them strict.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    (0..points.len())
        .filter(|&a| {
            !points.iter().enumerate().any(|(b, p)| {
                b != a && p.0 <= points[a].0 && p.1 >= points[a].1 && (p.0 < points[a].0 || p.1 > points[a].1)
            })
        })
        .collect()
}

pub fn run_pareto(args: &ParetoArgs) -> anyhow::Result<()> {
    let fits: Vec<(String, FitReport)> = args.fit.iter().map(|p| FitReport::read(p).map(|f| (label(p, &f), f))).collect::<anyhow::Result<_>>()?;
    let score = |f: &FitReport| f.test.accuracy.or(f.test.r2).unwrap_or(f64::NAN);
    let metric = score_name(&fits[0].1);
    anyhow::ensure!(fits.iter().all(|(_, f)| score_name(f) == metric), "the fits mix classification and regression tasks: compare one task at a time");
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut csv = String::from("run,method,parameters_updated,wall_time_s,score,pareto_parameters,pareto_time\n");
    let by_params: Vec<(f64, f64)> = fits.iter().map(|(_, f)| (f.parameters_updated as f64, score(f))).collect();
    let by_time: Vec<(f64, f64)> = fits.iter().map(|(_, f)| (f.wall_time_s, score(f))).collect();
    let (front_p, front_t) = (pareto_front(&by_params), pareto_front(&by_time));
    println!("{:<44} {:>12} {:>10} {:>9}  pareto (parameters, time)", "run", "parameters", "time (s)", metric.trim_start_matches("test "));
    for (k, (name, f)) in fits.iter().enumerate() {
        let (fp, ft) = (front_p.contains(&k), front_t.contains(&k));
        let _ = writeln!(csv, "\"{name}\",\"{}\",{},{:.3},{:.6},{fp},{ft}", method(f), f.parameters_updated, f.wall_time_s, score(f));
        println!("{name:<44} {:>12} {:>10.1} {:>9.4}  {}, {}", f.parameters_updated, f.wall_time_s, score(f), if fp { "yes" } else { "no" }, if ft { "yes" } else { "no" });
    }
    ail_core::io::write_atomic(&args.out.join("pareto.csv"), csv.as_bytes())?;
    for (file, x_label, points, front, log) in [
        ("pareto-parameters.svg", "log10 parameters updated", &by_params, &front_p, true),
        ("pareto-time.svg", "wall time (s)", &by_time, &front_t, false),
    ] {
        let x = |v: f64| if log { v.max(1.0).log10() } else { v };
        // The front first, so that the runs' markers are drawn over it.
        let mut f: Vec<(f64, f64)> = front.iter().map(|&k| (x(points[k].0), points[k].1)).collect();
        f.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut curves = vec![Curve { name: "Pareto front".into(), points: f }];
        curves.extend(fits.iter().zip(points.iter()).map(|((name, _), p)| Curve { name: name.clone(), points: vec![(x(p.0), p.1)] }));
        let chart = svg::line_chart(&format!("{metric} against cost"), x_label, metric, &curves);
        ail_core::io::write_atomic(&args.out.join(file), chart.as_bytes())?;
    }
    println!("written {}/pareto.csv, pareto-parameters.svg, pareto-time.svg", args.out.display());
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "-".into())
}

/// Relative path from the report's directory to `target` (absolute paths when that fails).
fn link(from: &Path, target: &Path) -> String {
    let base = from.parent().unwrap_or(Path::new("."));
    let (a, b) = (std::path::absolute(base).unwrap_or_default(), std::path::absolute(target).unwrap_or_default());
    let common = a.components().zip(b.components()).take_while(|(x, y)| x == y).count();
    let ups = a.components().count() - common;
    let rest: PathBuf = b.components().skip(common).collect();
    let mut p = PathBuf::new();
    for _ in 0..ups {
        p.push("..");
    }
    p.push(rest);
    p.display().to_string()
}

/// kNN accuracy per descriptor over steps, from a metrics.csv.
fn knn_curves(metrics: &str) -> Vec<Curve> {
    let mut curves: Vec<Curve> = Vec::new();
    for line in metrics.lines().skip(1) {
        let Some((step, rest)) = line.split_once(",\"") else { continue };
        let Some((descriptor, values)) = rest.split_once("\",") else { continue };
        let Some(knn) = values.split(',').nth(3).and_then(|v| v.parse::<f64>().ok()) else { continue };
        let Ok(step) = step.parse::<f64>() else { continue };
        let name = format!("i = {descriptor}");
        match curves.iter_mut().find(|c| c.name == name) {
            Some(c) => c.points.push((step, 100.0 * knn)),
            None => curves.push(Curve { name, points: vec![(step, 100.0 * knn)] }),
        }
    }
    curves
}

/// A JSON array of numbers as `compare`'s tables write `i` (`[0.87, 0.82]`), `-` when empty or absent.
fn short_vector(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => crate::compare::fmt_i(&a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32).collect::<Vec<_>>()),
        _ => "-".into(),
    }
}

/// How a few-shot run set `i`: fixed, a corner chosen per episode, or learned (and from where).
fn fewshot_i(v: &serde_json::Value) -> String {
    let chosen = v["i_init"] == "best-corner";
    let plain = v["mean_i"].as_array().is_some_and(|a| a.is_empty());
    match (v["learned_i"] == true, chosen) {
        _ if plain => "plain encoder".into(),
        (true, true) => "learned from the chosen corner".into(),
        (true, false) => format!("learned from {}", v["i_init"].as_str().unwrap_or("0.5")),
        (false, true) => "corner chosen per episode".into(),
        (false, false) => format!("fixed at {}", v["mean_i"].as_array().map_or(String::new(), |a| a.iter().map(|x| x.as_f64().map_or("?".into(), |x| format!("{x}"))).collect::<Vec<_>>().join(","))),
    }
}

pub fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    let out = &args.out;
    let assets = out.with_extension("files");
    let mut md = String::from("# Report\n\n");
    let (mut fits, mut fewshots, mut lowshots) = (Vec::new(), Vec::new(), Vec::new());
    for run in &args.runs {
        let file = |name: &str| if run.is_dir() { run.join(name) } else { run.clone() };
        let has = |name: &str| run.join(name).exists() || run.file_name().is_some_and(|n| n == name);
        if run.is_dir() && run.join("metrics.csv").exists() && run.join("config.json").exists() {
            let config = ail_core::pretrain::RunDir::new(run).read_config()?;
            let _ = writeln!(md, "## Pretraining: {}\n", run.display());
            let _ = writeln!(
                md,
                "{} with {}, {} (width {}), invariances `{}`, {} steps of {} images, lr {}.\n",
                config.method,
                config.encoder.model,
                config.data.source,
                config.encoder.width,
                config.invariances,
                config.steps,
                config.batch_size,
                config.optimizer.lr
            );
            let metrics = read_text(&run.join("metrics.csv"))?;
            let curves = knn_curves(&metrics);
            if !curves.is_empty() {
                md += "| descriptor | kNN, first | kNN, last |\n|---|---:|---:|\n";
                for c in &curves {
                    let (first, last) = (c.points[0], c.points[c.points.len() - 1]);
                    let _ = writeln!(md, "| `{}` | {:.1}% (step {}) | {:.1}% (step {}) |", c.name, first.1, first.0, last.1, last.0);
                }
                std::fs::create_dir_all(&assets)?;
                let name = format!("knn-{}.svg", run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                let chart = svg::line_chart("kNN accuracy per descriptor", "step", "kNN accuracy (%)", &curves);
                ail_core::io::write_atomic(&assets.join(&name), chart.as_bytes())?;
                let _ = writeln!(md, "\n![kNN accuracy]({})\n", link(out, &assets.join(&name)));
            }
        } else if has("fit.json") {
            let f = FitReport::read(&file("fit.json"))?;
            fits.push((label(run, &f), f));
        } else if has("fewshot.json") {
            let v = read_json(&file("fewshot.json"))?;
            fewshots.push((run.display().to_string(), v));
        } else if has("lowshot.json") {
            let v = read_json(&file("lowshot.json"))?;
            lowshots.push((run.display().to_string(), v));
        } else if run.is_dir() && run.join("invariance.md").exists() {
            let _ = writeln!(md, "## Invariance: {}\n", run.display());
            md += &read_text(&run.join("invariance.md"))?;
            if run.join("radar.svg").exists() {
                let _ = writeln!(md, "\n![radar]({})\n", link(out, &run.join("radar.svg")));
            }
        } else if run.is_dir() {
            let svgs: Vec<PathBuf> = std::fs::read_dir(run)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "svg")).collect();
            anyhow::ensure!(!svgs.is_empty(), "{}: not a pretraining run, a fit/fewshot/lowshot output or a measure/interpolate output", run.display());
            let _ = writeln!(md, "## Plots: {}\n", run.display());
            for s in svgs {
                let _ = writeln!(md, "![{}]({})\n", s.display(), link(out, &s));
            }
        } else {
            anyhow::bail!("{}: not a pretraining run, a fit/fewshot/lowshot output or a measure/interpolate output", run.display());
        }
    }
    if !fits.is_empty() {
        md += "## Fits\n\n| run | task | i | epochs | train | val | test | parameters | time (s) |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n";
        for (name, f) in &fits {
            let s = |x: &ail_core::fit::Scores| x.accuracy.map(|a| pct(Some(a))).or(x.r2.map(|r| format!("R^2 {r:.3}"))).unwrap_or_default();
            let i = if f.i.is_empty() { "-".to_string() } else { format!("{:.3?}", f.i) };
            let _ = writeln!(md, "| {name} | {} | {i} | {} | {} | {} | {} | {} | {:.1} |", f.task, f.epochs, s(&f.train), s(&f.val), s(&f.test), f.parameters_updated, f.wall_time_s);
        }
        md += "\n";
    }
    if !fewshots.is_empty() {
        md += "## Few-shot\n\n| run | episodes | readout | i | accuracy (95% CI) | mean i |\n|---|---|---|---|---:|---|\n";
        let mut bars = Vec::new();
        for (name, v) in &fewshots {
            let i = fewshot_i(v);
            let (mean, ci) = (100.0 * v["accuracy"]["mean"].as_f64().unwrap_or(f64::NAN), 100.0 * v["accuracy"]["ci95"].as_f64().unwrap_or(f64::NAN));
            let _ = writeln!(
                md,
                "| {name} | {}-way {}-shot x {} | {} | {i} | {mean:.2}% +- {ci:.2}% | {} |",
                v["ways"], v["shots"], v["episodes"].as_array().map_or(0, |e| e.len()), v["readout"].as_str().unwrap_or("?"), short_vector(&v["mean_i"])
            );
            let run = Path::new(name).file_name().map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
            bars.push(svg::Bar { name: format!("{run} ({i})"), value: mean, interval: ci });
        }
        if bars.len() > 1 {
            std::fs::create_dir_all(&assets)?;
            let chart = svg::bar_chart("Few-shot accuracy per run (the same episodes when the seed is the same)", "query accuracy (%), 95% interval", &bars);
            ail_core::io::write_atomic(&assets.join("fewshot.svg"), chart.as_bytes())?;
            let _ = writeln!(md, "\n![few-shot accuracy]({})", link(out, &assets.join("fewshot.svg")));
        }
        md += "\n";
    }
    if !lowshots.is_empty() {
        md += "## Low-shot regression\n\n| run | fraction s | samples | test R^2 (95% CI) | mean i |\n|---|---:|---:|---:|---|\n";
        for (name, v) in &lowshots {
            for row in v["rows"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {:.4} +- {:.4} | {} |",
                    row["fraction"], row["samples"], row["r2"]["mean"].as_f64().unwrap_or(f64::NAN), row["r2"]["ci95"].as_f64().unwrap_or(f64::NAN), short_vector(&row["mean_i"])
                );
            }
        }
        md += "\n";
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    ail_core::io::write_atomic(out, md.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    println!("written {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_by_hand() {
        // (cost, score): b dominates c; a and b and d trade off.
        let points = [(1.0, 0.5), (10.0, 0.8), (20.0, 0.7), (100.0, 0.9), (10.0, 0.8)];
        assert_eq!(pareto_front(&points), vec![0, 1, 3, 4]);
    }
}
