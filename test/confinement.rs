//! Confinement (issue 12): a module cannot read, write, list or link
//! anything outside its preopens — the rootfs at `/` and a bind mount at
//! `/data` — through `..`, absolute paths, absolute or relative symlinks (in
//! the rootfs and in the bind mount, made by the image or by the module),
//! hard links or renames, nor through a directory that the host swaps with a
//! symlink out while the module opens files below it (a rename race). It
//! sees no host process (`/proc`) and no cgroup file (`/sys/fs/cgroup`).
//!
//! The probe (`test/wasm/confine.c`) runs as root in the container through
//! `ctr run --config`, for every engine under test, and prints one line per
//! attempt. A host secret sits beside the rootfs and the bind source; the
//! test asserts every escape is denied, the secret never appears in the
//! output, nothing was written, linked or renamed outside, and the controls
//! (the same operations inside the preopens) work.
//!
//! Needs root, containerd + runc, clang + wasi-libc and the release shims.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::fcntl::{renameat2, RenameFlags};
use wasmshim_integration::{engines, modules, runtime, text, Containerd};

/// Cases an engine is known not to pass yet: (engine, case).
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// What the host secret starts with; the probe's output must never hold it.
const SECRET: &str = "HOST-SECRET";

/// One private containerd and the probe module, shared by the cases.
struct Env {
    containerd: Containerd,
    probe: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

type Case = fn(&Env, &str, &str) -> anyhow::Result<()>;

const CASES: &[(&str, Case)] = &[
    ("escapes_are_denied", escapes_are_denied),
    ("rename_race_never_reaches_the_host", rename_race),
];

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("confinement tests cannot run: {e:#}");
            std::process::exit(1);
        }
    };
    for line in &skipped {
        eprintln!("SKIPPED {line}");
    }
    let mut trials = Vec::new();
    for engine in &engines {
        for (index, (name, case)) in CASES.iter().enumerate() {
            let engine: &'static str = engine;
            let id = format!("{engine}-confine{index}");
            let gap = KNOWN_GAPS.contains(&(engine, *name));
            trials.push(
                Trial::test(format!("{engine}::{name}"), move || {
                    let env = ENV.get().expect("set up before the trials run");
                    let result = case(env, engine, &id).and_then(|()| no_leftovers(env, &id));
                    let _ = std::fs::remove_dir_all(env.containerd.dir().join("specs").join(&id));
                    result.map_err(|e| Failed::from(format!("{e:#}")))
                })
                .with_ignored_flag(gap),
            );
        }
    }
    if trials.iter().any(|t| !args.is_filtered_out(t)) && !args.list {
        if let Err(e) = setup() {
            eprintln!("confinement setup failed: {e:#}");
            std::process::exit(1);
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(env) = ENV.get() {
        let left: Vec<String> = env
            .containerd
            .processes()
            .into_iter()
            .map(wasmshim_integration::cmdline)
            .collect();
        env.containerd.stop();
        if !left.is_empty() {
            eprintln!("shim or worker processes left behind after the run: {left:#?}");
            std::process::exit(1);
        }
    }
    conclusion.exit();
}

fn setup() -> anyhow::Result<()> {
    let containerd = Containerd::start()?;
    let probe = modules::build_c("confine", &containerd.dir().join("modules"))?;
    ENV.set(Env { containerd, probe })
        .map_err(|_| anyhow::anyhow!("set up twice"))
}

/// The files of one case, all under `base` (containerd's `specs/<id>`):
/// `rootfs/` (preopened at `/`), `bind/` (at `/data`), and beside them the
/// host's secret, which no path of the module may reach.
struct Layout {
    base: PathBuf,
    rootfs: PathBuf,
    bind: PathBuf,
    hostdir: PathBuf,
    secret: String,
}

impl Layout {
    fn new(env: &Env, id: &str) -> anyhow::Result<Layout> {
        let rootfs = env.containerd.spec_rootfs(id)?;
        let base = rootfs.parent().context("specs dir")?.to_path_buf();
        let layout = Layout {
            bind: base.join("bind"),
            hostdir: base.join("hostdir"),
            secret: format!("{SECRET}-{id}-{}", std::process::id()),
            rootfs,
            base,
        };
        std::fs::create_dir_all(&layout.bind)?;
        std::fs::create_dir_all(&layout.hostdir)?;
        std::fs::create_dir_all(layout.rootfs.join("sub"))?;
        std::fs::write(layout.base.join("host-secret.txt"), &layout.secret)?;
        std::fs::write(layout.hostdir.join("host-secret.txt"), &layout.secret)?;
        std::fs::write(layout.hostdir.join("file.txt"), &layout.secret)?;
        std::fs::copy(&env.probe, layout.rootfs.join("confine.wasm"))?;
        std::fs::write(layout.rootfs.join("inside.txt"), "inside-ok\n")?;
        std::fs::write(layout.bind.join("data.txt"), "bind-ok\n")?;
        Ok(layout)
    }

    /// `..` enough times to climb from any preopen to the host's `/`.
    fn climb(&self) -> String {
        "../".repeat(self.base.components().count() + 4)
    }

    /// Runs the probe with `ops`, the bind mount at `/data` (read-write).
    fn run(&self, env: &Env, engine: &str, id: &str, ops: &[String]) -> anyhow::Result<Output> {
        let mut args = vec!["/confine.wasm"];
        args.extend(ops.iter().map(String::as_str));
        let bind = self.bind.clone();
        let config = env.containerd.write_spec(id, &args, |s| {
            s["mounts"] = serde_json::json!([
                {"destination": "/data", "type": "bind", "source": bind, "options": ["rbind", "rw"]}
            ]);
        })?;
        let out = env
            .containerd
            .ctr_command(&[
                "run",
                "--rm",
                "--fifo-dir",
                &env.containerd.fifo_dir().to_string_lossy(),
                "--runtime",
                &runtime(engine),
                "--config",
                &config.to_string_lossy(),
                id,
            ])
            .output()
            .context("running ctr")?;
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(0),
            "the probe exited with {:?}: stdout {stdout}\nstderr {stderr}",
            out.status
        );
        ensure!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "THE HOST SECRET LEAKED:\nstdout {stdout}\nstderr {stderr}"
        );
        Ok(out)
    }
}

/// The probe's result for `op`: "ok …" or "denied …".
fn result<'a>(stdout: &'a str, op: &str) -> anyhow::Result<&'a str> {
    let prefix = format!("{op}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .with_context(|| format!("the probe printed nothing for {op:?}:\n{stdout}"))
}

fn escapes_are_denied(env: &Env, engine: &str, id: &str) -> anyhow::Result<()> {
    let l = Layout::new(env, id)?;
    let host = l.hostdir.to_string_lossy().into_owned();
    let base = l.base.to_string_lossy().into_owned();
    let climb = l.climb();
    // Symlinks the image brings: absolute, relative out of the rootfs, relative
    // out of the bind mount, to the host's /etc and /proc.
    symlink(&l.hostdir, l.rootfs.join("abs"))?;
    symlink("../hostdir", l.rootfs.join("rel"))?;
    symlink(format!("{climb}{}", &host[1..]), l.rootfs.join("deep"))?;
    symlink("/etc", l.rootfs.join("etc"))?;
    symlink("/proc", l.rootfs.join("proc"))?;
    symlink(&l.hostdir, l.bind.join("abs"))?;
    symlink("../hostdir", l.bind.join("up"))?;

    // Escapes: every one must be denied (any errno).
    let mut escapes: Vec<String> = Vec::new();
    for target in [
        "/../host-secret.txt".to_string(),
        "../host-secret.txt".to_string(),
        format!("/{climb}{}/host-secret.txt", &base[1..]),
        format!("{base}/host-secret.txt"),
        "/abs/host-secret.txt".into(),
        "/rel/host-secret.txt".into(),
        "/deep/host-secret.txt".into(),
        "/etc/passwd".into(),
        "/data/../host-secret.txt".into(),
        "/data/up/host-secret.txt".into(),
        "/data/abs/host-secret.txt".into(),
        "/sub/../../host-secret.txt".into(),
        // Isolation: no host process, no cgroup file.
        "/proc/1/status".into(),
        "/proc/self/status".into(),
        "/proc/self/cgroup".into(),
        "/sys/fs/cgroup/cgroup.procs".into(),
    ] {
        escapes.push(format!("read:{target}"));
    }
    for target in [
        "/../host-written.txt",
        "/abs/host-written.txt",
        "/rel/host-written.txt",
        "/deep/host-written.txt",
        "/data/../host-written.txt",
        "/data/up/host-written.txt",
        "/sys/fs/cgroup/cgroup.procs",
        "/proc/self/cgroup",
    ] {
        escapes.push(format!("write:{target}"));
    }
    for (from, to) in [
        // Hard links out of the preopens, and of host files into them.
        ("/inside.txt", "/../host-linked.txt"),
        ("/inside.txt", "/rel/host-linked.txt"),
        ("/data/data.txt", "/data/up/host-linked.txt"),
        ("/../host-secret.txt", "/stolen.txt"),
        ("/rel/host-secret.txt", "/stolen.txt"),
        ("/data/up/host-secret.txt", "/data/stolen.txt"),
        ("/abs/host-secret.txt", "/stolen.txt"),
    ] {
        escapes.push(format!("link:{from}:{to}"));
    }
    for (from, to) in [
        ("/inside.txt", "/../host-renamed.txt"),
        ("/inside.txt", "/rel/host-renamed.txt"),
        ("/../host-secret.txt", "/stolen.txt"),
        ("/rel/host-secret.txt", "/stolen.txt"),
        ("/data/up/host-secret.txt", "/data/stolen.txt"),
    ] {
        escapes.push(format!("rename:{from}:{to}"));
    }
    // Symlinks the module makes, then follows.
    let made = [
        "symlink:../host-secret.txt:/made-rel".to_string(),
        format!("symlink:{base}/host-secret.txt:/made-abs"),
        format!("symlink:{climb}:/made-up"),
        "symlink:../host-secret.txt:/data/made-rel".to_string(),
    ];
    for follow in [
        "/made-rel",
        "/made-abs",
        &format!("/made-up/{}/host-secret.txt", &base[1..]),
        "/data/made-rel",
    ] {
        escapes.push(format!("read:{follow}"));
    }
    let lists: Vec<String> = [
        "/..",
        "/../..",
        "/abs",
        "/rel",
        "/deep",
        "/data/..",
        "/data/up",
        "/proc",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(|d| format!("list:{d}"))
    .collect();
    // Controls: the same operations inside the preopens work.
    let controls = [
        ("read:/inside.txt", "ok inside-ok"),
        ("read:/sub/../inside.txt", "ok inside-ok"),
        ("read:/data/data.txt", "ok bind-ok"),
        ("write:/data/new.txt", "ok"),
        ("write:/sub/new.txt", "ok"),
        ("symlink:inside.txt:/made-inside", "ok"),
        ("read:/made-inside", "ok inside-ok"),
        ("rename:/sub/new.txt:/sub/renamed.txt", "ok"),
        ("list:/", "ok"),
    ];

    let mut ops: Vec<String> = controls.iter().map(|(op, _)| op.to_string()).collect();
    ops.extend(made.iter().cloned());
    ops.extend(escapes.iter().cloned());
    ops.extend(lists.iter().cloned());
    let out = l.run(env, engine, id, &ops)?;
    let (stdout, _) = text(&out);

    for (op, expected) in controls {
        let got = result(&stdout, op)?;
        ensure!(
            got.starts_with(expected),
            "{op}: {got:?}, expected {expected:?}"
        );
    }
    ensure!(
        result(&stdout, "list:/")?.contains(" inside.txt"),
        "list:/ does not show the rootfs"
    );
    ensure!(std::fs::read_to_string(l.bind.join("new.txt"))? == "written by the probe\n");
    for op in &escapes {
        let got = result(&stdout, op)?;
        ensure!(
            got.starts_with("denied "),
            "{op} was not denied: {got:?}\n{stdout}"
        );
    }
    // A listing of anything outside is denied, or shows none of the host's names.
    for op in &lists {
        let got = result(&stdout, op)?;
        ensure!(
            got.starts_with("denied ")
                || ![
                    "host-secret.txt",
                    "hostdir",
                    "config.json",
                    "rootfs",
                    "bind"
                ]
                .iter()
                .any(|name| got.split(' ').any(|n| n == *name)),
            "{op} listed the host: {got:?}"
        );
    }
    // Nothing made, moved or linked outside; the secret is where it was.
    for dir in [&l.base, &l.hostdir] {
        for name in ["host-written.txt", "host-linked.txt", "host-renamed.txt"] {
            ensure!(
                !dir.join(name).exists(),
                "{} was made",
                dir.join(name).display()
            );
        }
        ensure!(std::fs::read_to_string(dir.join("host-secret.txt"))? == l.secret);
    }
    for stolen in [l.rootfs.join("stolen.txt"), l.bind.join("stolen.txt")] {
        ensure!(!stolen.exists(), "{} was made", stolen.display());
    }
    ensure!(std::fs::read_to_string(l.rootfs.join("inside.txt"))? == "inside-ok\n");
    eprintln!(
        "{engine}: {} escapes denied, {} listings clean, {} controls ok",
        escapes.len(),
        lists.len(),
        controls.len()
    );
    Ok(())
}

/// Opens the probe makes of `/race/file.txt` while the host swaps `race`
/// (a directory holding "race-inside") with a symlink out, absolute and relative.
const RACE_OPENS: u32 = 20_000;

fn rename_race(env: &Env, engine: &str, id: &str) -> anyhow::Result<()> {
    let l = Layout::new(env, id)?;
    std::fs::create_dir_all(l.rootfs.join("race"))?;
    std::fs::write(l.rootfs.join("race/file.txt"), "race-inside\n")?;
    symlink(&l.hostdir, l.rootfs.join("race-abs"))?;
    symlink("../hostdir", l.rootfs.join("race-rel"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, rootfs) = (stop.clone(), swaps.clone(), l.rootfs.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let race = rootfs.join("race");
            while !stop.load(Ordering::Relaxed) {
                for other in ["race-abs", "race-rel"] {
                    // Out, then back in: `race` is the symlink for a moment.
                    for _ in 0..2 {
                        renameat2(
                            None,
                            &race,
                            None,
                            &rootfs.join(other),
                            RenameFlags::RENAME_EXCHANGE,
                        )?;
                    }
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let started = Instant::now();
    let out = l.run(
        env,
        engine,
        id,
        &[format!("race:/race/file.txt:{RACE_OPENS}")],
    );
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("the swapping thread")?;
    let (stdout, _) = text(&out?);
    let op = format!("race:/race/file.txt:{RACE_OPENS}");
    let got = result(&stdout, &op)?;
    let count = |key: &str| -> anyhow::Result<u64> {
        got.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {key} in {got:?}"))
    };
    let (inside, denied, other) = (count("inside=")?, count("denied=")?, count("other=")?);
    ensure!(other == 0, "the probe read something else: {stdout}");
    // Both states were seen: the race really ran.
    ensure!(inside > 0 && denied > 0, "{got}: the race did not happen");
    ensure!(inside + denied == RACE_OPENS as u64, "{got}");
    eprintln!(
        "{engine}: {RACE_OPENS} opens during {} swaps in {:.1?}: inside {inside}, denied {denied}, host 0",
        swaps.load(Ordering::Relaxed),
        started.elapsed()
    );
    Ok(())
}

/// What container `id` left, once containerd had a few seconds to finish.
fn no_leftovers(env: &Env, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = env.containerd.leftovers(id);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = env.containerd.leftovers(id);
    }
    ensure!(
        left.is_empty(),
        "container {id} left behind:\n{}",
        left.join("\n")
    );
    Ok(())
}
