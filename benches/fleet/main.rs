//! The fleet benchmark's entry point (`cargo bench --bench fleet`, normally through
//! benches/fleet/run.sh): options, results JSON, and regenerating docs/performance.md's
//! tables and plot.

#[path = "harness.rs"]
mod harness;
#[path = "report.rs"]
mod report;

use harness::{Config, Kex, Results, Tool};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo bench --bench fleet -- [--sizes 10,50,100,200] [--reps 3]
    [--kex default,curve25519] [--tools kfix,kfix_rerun,kfix_check,ansible,pyinfra,floor]
    [--work DIR] [--out results.json] [--plot fleet.png] [--docs docs/performance.md | --no-docs]
    [--render a.json[,b.json…]] (only regenerate the docs and plot from saved results;
                               several are merged: e.g. the main sweep and ansible's runs)
    [--profile-sessions]      (count one host's connections/sessions/processes per tool
                               with strace, into --out's results, and re-render)
Run as root after benches/fleet/setup.sh; benches/fleet/run.sh does both.";

struct Opts {
    sizes: Vec<usize>,
    reps: usize,
    kexes: Vec<Kex>,
    tools: Vec<Tool>,
    work: Option<PathBuf>,
    out: PathBuf,
    plot: PathBuf,
    docs: Option<PathBuf>,
    render: Vec<PathBuf>,
    profile_sessions: bool,
}

fn list<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    s.split(',').filter(|w| !w.is_empty()).map(f).collect()
}

fn parse(root: &Path, args: &[String]) -> Result<Opts, String> {
    let results = root.join("benches/fleet/results");
    let mut o = Opts {
        sizes: vec![10, 50, 100, 200],
        reps: 3,
        kexes: vec![Kex::Default, Kex::Curve25519],
        tools: Tool::ALL.to_vec(),
        work: None,
        out: results.join("latest.json"),
        plot: results.join("fleet.png"),
        docs: Some(root.join("docs/performance.md")),
        render: Vec::new(),
        profile_sessions: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--bench" => {}
            "--sizes" => {
                o.sizes = list(&val()?, |w| {
                    w.parse::<usize>()
                        .ok()
                        // One bridge port per lab host (tests/lab/lab.sh).
                        .filter(|n| (1..=1023).contains(n))
                        .ok_or_else(|| format!("bad size '{w}' (1..1023)"))
                })?
            }
            "--reps" => o.reps = val()?.parse().ok().filter(|r| *r > 0).ok_or("bad --reps")?,
            "--kex" => o.kexes = list(&val()?, Kex::parse)?,
            "--tools" => o.tools = list(&val()?, Tool::parse)?,
            "--work" => o.work = Some(PathBuf::from(val()?)),
            "--out" => o.out = PathBuf::from(val()?),
            "--plot" => o.plot = PathBuf::from(val()?),
            "--docs" => o.docs = Some(PathBuf::from(val()?)),
            "--no-docs" => o.docs = None,
            "--render" => o.render = list(&val()?, |w| Ok(PathBuf::from(w)))?,
            "--profile-sessions" => o.profile_sessions = true,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown option '{a}'\n{USAGE}")),
        }
    }
    if o.sizes.is_empty() || o.kexes.is_empty() || o.tools.is_empty() {
        return Err("empty --sizes, --kex or --tools".into());
    }
    // Canonical order: the idempotent rerun needs the hosts kfix just fixed.
    o.tools.sort();
    o.tools.dedup();
    if o.tools.contains(&Tool::KfixRerun) && !o.tools.contains(&Tool::Kfix) {
        return Err("kfix_rerun needs kfix in --tools".into());
    }
    Ok(o)
}

fn save(path: &Path, r: &Results) -> Result<(), String> {
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The plot path as docs/performance.md links it (relative to the doc's directory).
fn relative(from_dir: &Path, to: &Path) -> String {
    let from: Vec<_> = from_dir.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to_c[common..] {
        rel.push(c);
    }
    rel.to_string_lossy().into_owned()
}

fn render(o: &Opts, r: &Results) -> Result<(), String> {
    report::plot(r, &o.plot)?;
    eprintln!("fleet: plot {}", o.plot.display());
    if let Some(docs) = &o.docs {
        let dir = docs.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
        let rel = relative(&abs(dir)?, &abs(&o.plot)?);
        let doc = std::fs::read_to_string(docs).map_err(|e| format!("{}: {e}", docs.display()))?;
        let new = report::splice(&doc, &report::markdown(r, &rel))?;
        std::fs::write(docs, new).map_err(|e| format!("{}: {e}", docs.display()))?;
        eprintln!("fleet: tables in {}", docs.display());
    }
    Ok(())
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench targets without --bench: nothing to do then.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("fleet: not under `cargo bench`; run benches/fleet/run.sh");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = parse(&root, &args)?;
    if !o.render.is_empty() {
        let mut parts = Vec::new();
        for saved in &o.render {
            let text =
                std::fs::read_to_string(saved).map_err(|e| format!("{}: {e}", saved.display()))?;
            parts.push(
                serde_json::from_str::<Results>(&text)
                    .map_err(|e| format!("{}: {e}", saved.display()))?,
            );
        }
        let r = Results::merge(parts)?;
        if o.render.len() > 1 {
            if o.render.contains(&o.out) {
                return Err(format!(
                    "{} is merged and would be overwritten by the merge: give --out another file",
                    o.out.display()
                ));
            }
            save(&o.out, &r)?;
            eprintln!("fleet: merged results {}", o.out.display());
        }
        return render(&o, &r);
    }
    let work = match &o.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("kfix-fleet-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let cfg = Config {
        sizes: o.sizes.clone(),
        reps: o.reps,
        kexes: o.kexes.clone(),
        tools: o.tools.clone(),
        kfix: PathBuf::from(env!("CARGO_BIN_EXE_kfix")),
        root: root.clone(),
        cache: std::env::var_os("KFIX_BENCH_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/kfix-bench")),
        work,
        command: std::env::var("KFIX_BENCH_COMMAND").unwrap_or_else(|_| {
            format!(
                "cargo bench --bench fleet -- {}",
                args.iter()
                    .filter(|a| *a != "--bench")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }),
        // A failed run is recorded, reported and makes the command fail at the end.
        keep_going: true,
    };
    if o.profile_sessions {
        let text = std::fs::read_to_string(&o.out)
            .map_err(|e| format!("{}: {e} (run the benchmark first)", o.out.display()))?;
        let mut r: Results =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", o.out.display()))?;
        r.sessions = harness::profile_sessions(&cfg)?;
        save(&o.out, &r)?;
        return render(&o, &r);
    }
    let partial = o.out.with_extension("partial.json");
    let mut r = harness::run(&cfg, |r| {
        if let Err(e) = save(&partial, r) {
            eprintln!("fleet: {e}");
        }
    })?;
    r.sessions = harness::profile_sessions(&cfg)?;
    save(&o.out, &r)?;
    let _ = std::fs::remove_file(&partial);
    eprintln!("fleet: results {}", o.out.display());
    render(&o, &r)?;
    if !r.failures.is_empty() {
        return Err(format!(
            "{} run(s) failed (also listed in {}):\n{}",
            r.failures.len(),
            o.out.display(),
            r.failures.join("\n")
        ));
    }
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("fleet: {e}");
        std::process::exit(1);
    }
}
