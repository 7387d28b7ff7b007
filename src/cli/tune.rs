//! `fors tune [--profile FILE|NAME] [--only CATEGORY]... [--apply]`: prints, as shell commands,
//! the system changes a hardware profile asks for on this machine (only values that differ
//! from the current ones); `--apply` then makes them itself, by writing the /proc/sys, /proc/irq
//! and /sys files (ring sizes need `ethtool -G`), and reports each result. See
//! docs/operating.md, "Probing and tuning a box".

use crate::config::hwprofile::ProfileSearchPath;
use crate::probe::tune::{plan, took_effect, Action, Category, Change, ServiceLimits, DROPIN_PATH};
use crate::probe::{read, recommend};

const USAGE: &str = "usage: fors tune [--profile FILE|NAME] [--only netns|sysctl|irq|rps|xps|ring|limits]... [--apply]";

/// Runs the subcommand; returns the process exit code (1 if any applied change failed).
pub fn run(args: &[String]) -> i32 {
    let mut profile_spec: Option<String> = None;
    let mut only: Vec<Category> = Vec::new();
    let mut apply = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--apply" => apply = true,
            "--profile" | "--only" => {
                let Some(v) = it.next() else {
                    eprintln!("fors tune: {a} needs a value\n{USAGE}");
                    return 2;
                };
                if a == "--profile" {
                    profile_spec = Some(v.clone());
                } else {
                    match Category::from_only(v) {
                        Some(c) => only.extend_from_slice(c),
                        None => {
                            eprintln!("fors tune: unknown --only category {v:?}\n{USAGE}");
                            return 2;
                        }
                    }
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => {
                eprintln!("fors tune: unknown argument {other:?}\n{USAGE}");
                return 2;
            }
        }
    }
    let m = read::machine();
    let (profile, from) = match &profile_spec {
        Some(spec) => match ProfileSearchPath::default().load(Some(spec)) {
            Ok(p) => (p, spec.clone()),
            Err(e) => {
                eprintln!("fors tune: {e}");
                return 1;
            }
        },
        None => (
            recommend::recommend(&m).profile,
            "the one `fors probe` recommends".to_string(),
        ),
    };
    let dropin = std::fs::read_to_string(DROPIN_PATH).ok();
    let limits = ServiceLimits::from_units(&unit_files(), &m);
    let changes: Vec<Change> = plan(&m, &profile, dropin.as_deref(), &limits)
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.category))
        .collect();
    println!(
        "# fors tune: {} change(s) for profile {from}",
        changes.len()
    );
    for c in &changes {
        println!(
            "\n# {} [{}]: {} -> {}\n# why: {}\n{}",
            c.item,
            c.category.name(),
            c.current,
            c.wanted,
            c.why,
            c.command
        );
    }
    let sysctls: Vec<&Change> = changes
        .iter()
        .filter(|c| matches!(c.category, Category::NetnsSysctl | Category::GlobalSysctl))
        .collect();
    if !sysctls.is_empty() {
        println!(
            "\n# Writes to /proc/sys last until reboot; to keep them, /etc/sysctl.d/90-fors.conf:"
        );
        for c in &sysctls {
            println!("#   {} = {}", c.item, c.wanted);
        }
    }
    if !apply {
        return 0;
    }
    println!("\n# applying");
    let mut failed = 0;
    for c in &changes {
        match apply_one(&c.action) {
            Ok(()) => println!("ok: {} = {}", c.item, c.wanted),
            Err(e) => {
                failed += 1;
                println!("FAILED: {}: {e}", c.item);
            }
        }
    }
    println!("# {} applied, {failed} failed", changes.len() - failed);
    i32::from(failed > 0)
}

/// fors.service's unit file and drop-ins, in the order systemd applies them (the first unit
/// file found on its search path, then drop-ins sorted by name).
fn unit_files() -> Vec<String> {
    let mut out = Vec::new();
    if let Some(unit) = [
        "/etc/systemd/system/fors.service",
        "/usr/lib/systemd/system/fors.service",
        "/lib/systemd/system/fors.service",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    {
        out.push(unit);
    }
    let mut dropins: Vec<std::path::PathBuf> = [
        "/usr/lib/systemd/system/fors.service.d",
        "/lib/systemd/system/fors.service.d",
        "/etc/systemd/system/fors.service.d",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
    .filter(|p| p.extension().is_some_and(|x| x == "conf"))
    .collect();
    dropins.sort_by_key(|p| p.file_name().map(|f| f.to_owned()));
    out.extend(
        dropins
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()),
    );
    out
}

/// Makes one change and checks it took; the error says what went wrong.
fn apply_one(action: &Action) -> Result<(), String> {
    match action {
        Action::WriteFile { path, value } => {
            std::fs::write(path, format!("{value}\n"))
                .map_err(|e| format!("cannot write {path}: {e}"))?;
            let back = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {path} back: {e}"))?;
            if took_effect(path, value, &back) {
                Ok(())
            } else {
                Err(format!(
                    "wrote {value:?} to {path}, it reads back {:?}",
                    back.trim()
                ))
            }
        }
        Action::CreateFile { path, contents } => {
            if let Some(dir) = std::path::Path::new(path).parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(path, contents).map_err(|e| format!("cannot write {path}: {e}"))?;
            Ok(())
        }
        Action::Run { argv } => {
            let (prog, rest) = argv.split_first().ok_or("empty command")?;
            let st = std::process::Command::new(prog)
                .args(rest)
                .status()
                .map_err(|e| format!("cannot run {prog}: {e}"))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("{} exited with {st}", argv.join(" ")))
            }
        }
    }
}
