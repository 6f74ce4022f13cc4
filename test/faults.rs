//! Fault injection (issue 12): what a user sees when something around a
//! container dies or runs out: containerd SIGKILLed and restarted with 20
//! containers running and exiting, the shim of a pod SIGKILLed, a worker
//! SIGKILLed, the reader of a container's stdout gone, the module cache's or
//! the state directory's filesystem full. Every case runs against a
//! containerd of its own (it may kill it), through `ctr`, for every engine
//! under test, and ends with the usual no-leftovers check: no shim or worker
//! process, no mount, no bundle, no fifo, no cgroup directory.
//!
//! Needs root, containerd + runc, clang + wasi-libc and the release shims
//! (`make build`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmshim_integration::{
    alive, cmdline, engines, image, modules, parent_of, runtime, settled, settled_within, tail,
    text, wait_until, wasm_image, Containerd,
};

/// Cases an engine is known not to pass yet: (engine, case).
const KNOWN_GAPS: &[(&str, &str)] = &[];

type Case = fn(&Fixture) -> anyhow::Result<()>;

const CASES: &[(&str, Case)] = &[
    (
        "containerd_sigkill_with_twenty_containers",
        containerd_sigkill_with_twenty_containers,
    ),
    (
        "containerd_sigkill_while_starting",
        containerd_sigkill_while_starting,
    ),
    ("pod_shim_sigkill", pod_shim_sigkill),
    ("worker_sigkill_exits_137", worker_sigkill_exits_137),
    ("stdout_reader_gone", stdout_reader_gone),
    ("cache_dir_full", cache_dir_full),
    ("state_dir_full", state_dir_full),
];

/// The test modules, compiled once for every case.
static MODULES: OnceLock<PathBuf> = OnceLock::new();

/// One case's containerd, runtime and container id prefix.
struct Fixture {
    containerd: Containerd,
    rt: String,
    prefix: String,
}

fn main() {
    let mut args = Arguments::from_args();
    // Cases kill daemons and count processes: one at a time unless told otherwise.
    args.test_threads.get_or_insert(1);
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("fault tests cannot run: {e:#}");
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
            let case = *case;
            let gap = KNOWN_GAPS.contains(&(engine, *name));
            trials.push(
                Trial::test(format!("{engine}::{name}"), move || {
                    run_case(case, engine, &format!("{engine}-f{index}"))
                })
                .with_ignored_flag(gap),
            );
        }
    }
    if trials.iter().any(|t| !args.is_filtered_out(t)) && !args.list {
        let dir = std::env::temp_dir().join(format!("wasmshim-faults-{}", std::process::id()));
        match modules::build_all(&dir) {
            Ok(dir) => {
                let _ = MODULES.set(dir);
            }
            Err(e) => {
                eprintln!("fault tests setup failed: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(dir) = MODULES.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
    conclusion.exit();
}

/// Starts a containerd for the case, imports the images, runs the case, then
/// checks that the case's containers left nothing and no shim or worker of
/// that containerd is alive.
fn run_case(case: Case, engine: &str, prefix: &str) -> Result<(), Failed> {
    let result = (|| {
        let containerd = Containerd::start()?;
        let modules = MODULES.get().context("modules built")?;
        for name in ["nap", "sleep", "flood", "hello"] {
            let module = modules.join(format!("{name}.wasm"));
            containerd.import(&wasm_image(&image(name), &module, &[])?)?;
        }
        let fixture = Fixture {
            containerd,
            rt: runtime(engine),
            prefix: prefix.to_string(),
        };
        let outcome = case(&fixture);
        // A shim that a container chose and never reached (containerd died
        // in between) waits 30 s for it; containerd then removes the bundle.
        let left = settled_within(Duration::from_secs(45), || {
            fixture.containerd.leftovers_of_all(&fixture.prefix)
        });
        let processes = settled(|| {
            let pids = fixture.containerd.processes();
            pids.into_iter().map(cmdline).collect()
        });
        let log = fixture.containerd.log();
        fixture.containerd.stop();
        outcome
            .and_then(|()| {
                ensure!(left.is_empty(), "left behind:\n{}", left.join("\n"));
                ensure!(
                    processes.is_empty(),
                    "shim or worker processes left: {processes:#?}"
                );
                Ok(())
            })
            .map_err(|e| {
                // The whole log outlives the containerd's temp dir, for diagnosis.
                let saved = std::env::temp_dir().join(format!("wasmshim-faults-{prefix}.log"));
                let _ = std::fs::write(&saved, &log);
                anyhow::anyhow!(
                    "{e:#}\n\ncontainerd's log (whole: {}) ends:\n{}",
                    saved.display(),
                    tail(&log, 40)
                )
            })
    })();
    result.map_err(|e: anyhow::Error| Failed::from(format!("{e:#}")))
}

impl Fixture {
    fn id(&self, n: usize) -> String {
        format!("{}-{n}", self.prefix)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.containerd.ctr(args)
    }

    /// `ctr run -d --null-io` of `image` as `id` with `extra` options and `args`.
    fn run_detached(
        &self,
        id: &str,
        image_name: &str,
        extra: &[&str],
        args: &[&str],
    ) -> anyhow::Result<()> {
        let mut argv = vec!["run", "-d", "--null-io", "--runtime", &self.rt];
        argv.extend(extra);
        let image = image(image_name);
        argv.extend([image.as_str(), id]);
        argv.extend(args);
        let out = self.ctr(&argv);
        ensure!(out.status.success(), "ctr run -d {id}: {:?}", text(&out));
        Ok(())
    }

    /// `ctr task ls`: id → (pid, status).
    fn tasks(&self) -> anyhow::Result<BTreeMap<String, (u32, String)>> {
        let out = self.ctr(&["task", "ls"]);
        ensure!(out.status.success(), "ctr task ls: {:?}", text(&out));
        let (stdout, _) = text(&out);
        Ok(stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let id = cols.next()?.to_string();
                let pid = cols.next()?.parse().ok()?;
                Some((id, (pid, cols.next()?.to_string())))
            })
            .collect())
    }

    /// The status `ctr task ls` shows for `id` (None: no task).
    fn status(&self, id: &str) -> Option<String> {
        self.tasks().ok()?.remove(id).map(|(_, s)| s)
    }

    /// `ctr task delete id`, which must succeed.
    fn delete_task(&self, id: &str) -> anyhow::Result<()> {
        let out = self.ctr(&["task", "delete", id]);
        ensure!(
            out.status.success(),
            "ctr task delete {id}: {:?}",
            text(&out)
        );
        Ok(())
    }

    /// `ctr task kill -s SIGKILL` of running task `id`: its `/tasks/exit`
    /// (read from `events`) says 137, it stops, and its task deletes.
    fn kill_and_delete(&self, events: &Events, id: &str) -> anyhow::Result<()> {
        let out = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        ensure!(out.status.success(), "ctr task kill {id}: {:?}", text(&out));
        let status = events.status("/tasks/exit", id)?;
        ensure!(
            status == 137,
            "{id} exited {status} after SIGKILL, want 137"
        );
        wait_until(Duration::from_secs(10), &format!("{id} stopped"), || {
            self.status(id).as_deref() == Some("STOPPED")
        })?;
        self.delete_task(id)
    }

    /// Removes container `id` and its task whatever their state.
    fn remove(&self, id: &str) {
        self.ctr(&["task", "delete", "--force", id]);
        self.ctr(&["container", "delete", id]);
    }

    /// Removes the stdio fifos `ctr` made for `id` (a `ctr` killed, or whose
    /// task containerd deleted itself, never closed them): the client's,
    /// not the shim's.
    fn remove_client_fifos(&self, id: &str) {
        for dir in std::fs::read_dir(self.containerd.fifo_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for fifo in ["stdin", "stdout", "stderr"] {
                let _ = std::fs::remove_file(dir.path().join(format!("{id}-{fifo}")));
            }
            let _ = std::fs::remove_dir(dir.path());
        }
    }

    /// `ctr run --rm` of `image` as `id` in the foreground, stdout piped;
    /// returns once the module printed its first line.
    fn run_foreground(&self, id: &str, image_name: &str, args: &[&str]) -> anyhow::Result<Child> {
        let fifo = self.containerd.fifo_dir();
        let image = image(image_name);
        let mut argv = vec![
            "run",
            "--rm",
            "--fifo-dir",
            fifo.to_str().context("fifo dir")?,
            "--runtime",
            &self.rt,
            &image,
            id,
        ];
        argv.extend(args);
        let mut child = self
            .containerd
            .ctr_command(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.as_mut().context("stdout")?;
        let mut first = [0u8; 1];
        stdout
            .read_exact(&mut first)
            .context("the module printed nothing")?;
        Ok(child)
    }
}

/// `ctr events` running on a thread: what it printed so far.
struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    fn start(f: &Fixture) -> anyhow::Result<Events> {
        let mut child = f
            .containerd
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // ctr subscribes after it connects: give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Events { child, lines })
    }

    /// The exit status in the `topic` event (`/tasks/exit`, `/tasks/delete`)
    /// of container `id`'s own process, waiting up to 10 s for it. `ctr task
    /// delete` does not show it; containerd's events do.
    fn status(&self, topic: &str, id: &str) -> anyhow::Result<u32> {
        let container = format!("\"container_id\":\"{id}\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|l| {
                    l.contains(&format!(" {topic} "))
                        && l.contains(&container)
                        && (topic != "/tasks/exit" || l.contains(&format!("\"id\":\"{id}\"")))
                })
                .cloned();
            if let Some(line) = found {
                // Protobuf's JSON leaves out a status of 0.
                return Ok(line
                    .split_once("\"exit_status\":")
                    .and_then(|(_, rest)| {
                        rest.split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0));
            }
            ensure!(Instant::now() < deadline, "no {topic} event for {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("kill -{sig} {pid}"))
}

/// containerd SIGKILLed while 20 containers run: 9 keep running, one is
/// SIGTERMed and ten exit on their own (status 10..19) while no containerd
/// is there. containerd restarted on the same root, state and socket lists
/// all 20, shows the 9 RUNNING and the 11 STOPPED with exactly the statuses
/// that happened; kill and delete work on all of them afterwards.
fn containerd_sigkill_with_twenty_containers(f: &Fixture) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..20).map(|n| f.id(n)).collect();
    let result = (|| {
        for (n, id) in ids.iter().enumerate() {
            match n {
                // Exit on their own with 10 + n after 3 s: while containerd is dead.
                10.. => f.run_detached(id, "nap", &[], &["/nap.wasm", "3", &(n).to_string()])?,
                _ => f.run_detached(id, "nap", &[], &["/nap.wasm", "3600"])?,
            }
        }
        let before = f.tasks()?;
        for id in &ids {
            ensure!(
                before.get(id).map(|(_, s)| s.as_str()) == Some("RUNNING"),
                "{id} is not running before the kill: {before:?}"
            );
        }
        let worker9 = before[&ids[9]].0;
        let started = Instant::now();
        f.containerd.kill_daemon();
        signal(worker9, Signal::SIGTERM)?;
        // The ten short ones exit while containerd is dead.
        std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
        f.containerd.restart(&[])?;

        let containers = text(&f.ctr(&["container", "ls", "-q"])).0;
        for id in &ids {
            ensure!(
                containers.lines().any(|l| l == id),
                "{id} is not listed after the restart: {containers}"
            );
        }
        let mut after = f.tasks()?;
        // A task's exit that happened while containerd was away may take a
        // moment to be seen by the new containerd.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ids[9..]
            .iter()
            .any(|id| after.get(id).map(|(_, s)| s.as_str()) != Some("STOPPED"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            after = f.tasks()?;
        }
        for (n, id) in ids.iter().enumerate() {
            let want = if n < 9 { "RUNNING" } else { "STOPPED" };
            let got = after.get(id).map(|(_, s)| s.as_str());
            ensure!(
                got == Some(want),
                "{id}: {got:?} after the restart, want {want}: {after:?}"
            );
        }
        // Exactly the statuses that happened: 143 for the SIGTERMed one,
        // 10..19 for the others, as the shim reports them at Delete.
        let events = Events::start(f)?;
        for (n, id) in ids.iter().enumerate().skip(9) {
            f.delete_task(id)?;
            let want = if n == 9 { 143 } else { n as u32 };
            let status = events.status("/tasks/delete", id)?;
            ensure!(status == want, "{id} exited {status}, want {want}");
        }
        // The running ones still obey kill, and report it.
        for id in &ids[..9] {
            f.kill_and_delete(&events, id)?;
        }
        for id in &ids {
            let out = f.ctr(&["container", "delete", id]);
            ensure!(
                out.status.success(),
                "ctr container delete {id}: {:?}",
                text(&out)
            );
        }
        Ok(())
    })();
    for id in &ids {
        f.remove(id);
    }
    result
}

/// containerd SIGKILLed while 20 `ctr run -d`s are in flight, launched
/// 30 ms apart (the kill lands after the eighth): some have run, some are in
/// the middle of Create or Start, some wait to connect. containerd restarted
/// on the same root, state and socket must then tell the truth about every
/// container: a task it lists as RUNNING or CREATED has a live worker, one
/// listed as STOPPED has none, and no worker or shim runs that it does not
/// list (nothing orphaned). Every `ctr run` that succeeded has a task; the
/// even-numbered ones sleep (RUNNING, killed: 137), the odd-numbered exit on
/// their own after 2 s with 10 + n, the status their delete reports (none
/// lost, none invented). Everything deletes, and nothing is left.
fn containerd_sigkill_while_starting(f: &Fixture) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..20).map(|n| f.id(n)).collect();
    let image = image("nap");
    let result = (|| {
        let mut runs = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let status = (10 + n).to_string();
            let mut argv = vec!["run", "-d", "--null-io", "--runtime", &f.rt, &image, id];
            argv.extend(match n % 2 {
                0 => ["/nap.wasm", "3600"],
                _ => ["/nap.wasm", "2"],
            });
            if n % 2 == 1 {
                argv.push(&status);
            }
            let child = f
                .containerd
                .ctr_command(&argv)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            runs.push(child);
            if n == 7 {
                f.containerd.kill_daemon();
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(500));
        f.containerd.restart(&[])?;
        // Every ctr returns: with success, or with the error of its lost
        // connection.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut succeeded = Vec::new();
        for (id, mut run) in ids.iter().zip(runs) {
            while run.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = run.kill();
                    bail!("ctr run {id} hung after containerd's restart");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            succeeded.push(run.wait_with_output()?.status.success());
        }
        // The odd ones that run exit 2 s after their start.
        std::thread::sleep(Duration::from_secs(3));
        let tasks = f.tasks()?;
        let mut seen = BTreeMap::<&str, usize>::new();
        for (n, id) in ids.iter().enumerate() {
            let task = tasks.get(id);
            *seen
                .entry(task.map_or("no task", |(_, s)| s.as_str()))
                .or_default() += 1;
            if succeeded[n] {
                let want = if n % 2 == 0 { "RUNNING" } else { "STOPPED" };
                ensure!(
                    task.map(|(_, s)| s.as_str()) == Some(want),
                    "{id}: ctr run succeeded, yet its task is {task:?} after the restart, want {want}"
                );
            }
            if let Some((pid, status)) = task {
                let live = *pid != 0 && alive(*pid);
                match status.as_str() {
                    "RUNNING" | "CREATED" => ensure!(
                        live && cmdline(*pid).contains("__wasmshim_worker"),
                        "{id} is listed {status} with pid {pid}, which is no worker: {:?}",
                        cmdline(*pid)
                    ),
                    "STOPPED" => ensure!(
                        !live || !cmdline(*pid).contains("__wasmshim_worker"),
                        "{id} is listed STOPPED, yet its worker {pid} runs"
                    ),
                    // containerd died after starting the shim and before
                    // sending Create: the shim has no such container (as
                    // runc's would not). Such a task must have no worker.
                    "UNKNOWN" => ensure!(
                        !succeeded[n] && worker_of(f, id).is_none(),
                        "{id} is listed UNKNOWN with ctr run {} and worker {:?}",
                        if succeeded[n] { "succeeded" } else { "failed" },
                        worker_of(f, id)
                    ),
                    other => bail!("{id} is listed {other} after the restart"),
                }
            }
        }
        // No worker runs for a container containerd does not list as live.
        for pid in f.containerd.processes() {
            let line = cmdline(pid);
            if let Some(id) = line.split("__wasmshim_worker ").nth(1) {
                let id = id.trim();
                ensure!(
                    tasks
                        .get(id)
                        .is_some_and(|(_, s)| s == "RUNNING" || s == "CREATED"),
                    "worker {pid} of {id} runs, but containerd lists its task as {:?}",
                    tasks.get(id)
                );
            }
        }
        eprintln!(
            "ctr run: {} of 20 succeeded across the kill; tasks after the restart: {seen:?}",
            succeeded.iter().filter(|s| **s).count()
        );
        // Exactly the statuses that happened.
        let events = Events::start(f)?;
        for (n, id) in ids.iter().enumerate() {
            let Some((_, status)) = tasks.get(id) else {
                continue;
            };
            match status.as_str() {
                "RUNNING" => f.kill_and_delete(&events, id)?,
                "STOPPED" => {
                    f.delete_task(id)?;
                    let status = events.status("/tasks/delete", id)?;
                    let want = 10 + n as u32;
                    ensure!(
                        n % 2 == 1 && status == want,
                        "{id} was stopped with {status}; it exits with {want} when it runs, \
                         and only the odd ones stop by themselves"
                    );
                }
                other => {
                    let out = f.ctr(&["task", "delete", "--force", id]);
                    ensure!(
                        out.status.success(),
                        "ctr task delete --force {id} ({other}): {:?}",
                        text(&out)
                    );
                }
            }
        }
        // Every container record deletes; one that `ctr run` never made is
        // simply not there.
        for id in &ids {
            let out = f.ctr(&["container", "delete", id]);
            let (_, stderr) = text(&out);
            ensure!(
                out.status.success() || stderr.contains("not found"),
                "ctr container delete {id}: {stderr}"
            );
        }
        Ok(())
    })();
    for id in &ids {
        f.remove(id);
    }
    result
}

/// The worker process of container `id` under this containerd, if one runs.
fn worker_of(f: &Fixture, id: &str) -> Option<u32> {
    f.containerd.processes().into_iter().find(|pid| {
        cmdline(*pid)
            .split("__wasmshim_worker ")
            .nth(1)
            .is_some_and(|rest| rest.trim() == id)
    })
}

/// The shim of a pod (three containers grouped by the CRI sandbox id)
/// SIGKILLed: the workers die with it, containerd reports each container's
/// exit (137), `ctr task ls` no longer shows any as running, and deleting
/// them leaves no process, mount, bundle, cgroup or shim socket.
fn pod_shim_sigkill(f: &Fixture) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..3).map(|n| f.id(n)).collect();
    let pod = format!("io.kubernetes.cri.sandbox-id={}-pod", f.prefix);
    let events = Events::start(f)?;
    let result = (|| {
        for id in &ids {
            f.run_detached(id, "nap", &["--annotation", &pod], &["/nap.wasm", "3600"])?;
        }
        let tasks = f.tasks()?;
        let workers: Vec<u32> = ids.iter().map(|id| tasks[id].0).collect();
        let shims: Vec<u32> = workers
            .iter()
            .map(|w| parent_of(*w))
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            shims.iter().all(|s| *s == shims[0]),
            "the pod's containers have different shims: {shims:?}"
        );
        ensure!(
            cmdline(shims[0]).contains("containerd-shim-"),
            "{} is not a shim",
            cmdline(shims[0])
        );
        let socket = shim_socket(f, &ids[0])?;
        ensure!(socket.exists(), "no shim socket {}", socket.display());
        signal(shims[0], Signal::SIGKILL)?;
        wait_until(
            Duration::from_secs(10),
            "the workers died with their shim",
            || workers.iter().all(|w| !alive(*w)),
        )?;
        wait_until(
            Duration::from_secs(10),
            "containerd saw the containers exit",
            || {
                f.tasks().is_ok_and(|t| {
                    ids.iter()
                        .all(|id| t.get(id).is_none_or(|(_, s)| s == "STOPPED"))
                })
            },
        )?;
        for id in &ids {
            let status = events.status("/tasks/exit", id)?;
            ensure!(
                status == 137,
                "{id} exited {status} with its shim, want 137"
            );
        }
        for id in &ids {
            // containerd 1.6 deletes a dead shim's tasks itself (the task is
            // gone from `ctr task ls`); a task still listed must delete.
            let out = f.ctr(&["task", "delete", id]);
            let (_, stderr) = text(&out);
            ensure!(
                out.status.success()
                    || stderr.contains("not found")
                    || out.status.code() == Some(137),
                "ctr task delete {id}: {stderr}"
            );
            let out = f.ctr(&["container", "delete", id]);
            ensure!(
                out.status.success(),
                "ctr container delete {id}: {:?}",
                text(&out)
            );
        }
        ensure!(
            !socket.exists(),
            "the dead shim's socket {} was left",
            socket.display()
        );
        Ok(())
    })();
    for id in &ids {
        f.remove(id);
    }
    result
}

/// The unix socket a container's shim listens on (the bundle's `address`).
fn shim_socket(f: &Fixture, id: &str) -> anyhow::Result<PathBuf> {
    let address = f
        .containerd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(wasmshim_integration::NAMESPACE)
        .join(id)
        .join("address");
    let text = std::fs::read_to_string(&address)
        .with_context(|| format!("reading {}", address.display()))?;
    Ok(PathBuf::from(
        text.trim().strip_prefix("unix://").unwrap_or(text.trim()),
    ))
}

/// A worker SIGKILLed from outside: `ctr run` returns 137 at once and the
/// container is removed cleanly.
fn worker_sigkill_exits_137(f: &Fixture) -> anyhow::Result<()> {
    let id = f.id(0);
    let result = (|| {
        let mut run = f.run_foreground(&id, "sleep", &["/sleep.wasm", "3600"])?;
        let worker = f.tasks()?.get(&id).context("no task")?.0;
        ensure!(
            cmdline(worker).contains("__wasmshim_worker"),
            "task pid {worker} is not a worker: {}",
            cmdline(worker)
        );
        signal(worker, Signal::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while run.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = run.kill();
                bail!("ctr run did not return after its worker was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = run.wait_with_output()?;
        ensure!(
            out.status.code() == Some(137),
            "ctr run exited {:?}, want 137: {:?}",
            out.status,
            text(&out)
        );
        Ok(())
    })();
    f.remove(&id);
    result
}

/// The reader of a container's stdout (`ctr run` in the foreground)
/// SIGKILLed mid-stream: the module, which prints 2.4 MB, blocks once the
/// fifo is full (the shim keeps the fifo open, as containerd's runc shim
/// does, so no output is lost and no EPIPE kills it); the shim lives on; `ctr
/// task attach` reads the rest up to the last line and reports exit 0. A
/// second container left blocked the same way is SIGKILLed: 137 is reported.
fn stdout_reader_gone(f: &Fixture) -> anyhow::Result<()> {
    let (resumed, killed) = (f.id(0), f.id(1));
    let events = Events::start(f)?;
    let result = (|| {
        for id in [&resumed, &killed] {
            let mut run = f.run_foreground(id, "flood", &["/flood.wasm", "200000"])?;
            run.kill()?;
            run.wait()?;
        }
        // Nobody reads now: the modules fill their fifos and wait.
        std::thread::sleep(Duration::from_millis(500));
        let tasks = f.tasks()?;
        for id in [&resumed, &killed] {
            let (worker, status) = tasks.get(id).context("task gone")?;
            ensure!(status == "RUNNING", "{id} is {status} without its reader");
            let shim = parent_of(*worker)?;
            ensure!(
                cmdline(shim).contains("containerd-shim-"),
                "{id}'s shim is gone"
            );
        }

        let attach = f.ctr(&["task", "attach", &resumed]);
        let (stdout, stderr) = text(&attach);
        ensure!(
            attach.status.success(),
            "ctr task attach {resumed}: {:?} {stderr}",
            attach.status
        );
        ensure!(
            stdout.contains("line 199999\nend\n"),
            "attach did not get the rest of the stream: ...{:?}",
            &stdout[stdout.len().saturating_sub(200)..]
        );
        let status = events.status("/tasks/exit", &resumed)?;
        ensure!(status == 0, "the resumed writer exited {status}, want 0");

        let out = f.ctr(&["task", "kill", "--signal", "SIGKILL", &killed]);
        ensure!(out.status.success(), "ctr task kill: {:?}", text(&out));
        wait_until(
            Duration::from_secs(10),
            "the blocked writer stopped",
            || f.status(&killed).as_deref() == Some("STOPPED"),
        )?;
        let status = events.status("/tasks/exit", &killed)?;
        ensure!(status == 137, "the killed writer exited {status}, want 137");
        f.delete_task(&killed)?;
        Ok(())
    })();
    for id in [&resumed, &killed] {
        f.remove(id);
        f.remove_client_fifos(id);
    }
    result
}

/// A tmpfs of `size` mounted at `dir` (created), mode 0700, filled to the
/// last byte by a file `fill` that can be removed to give the space back.
fn full_tmpfs(dir: &Path, size: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()?;
    ensure!(status.success(), "mount tmpfs on {}", dir.display());
    let fill = dir.join(".fill");
    let mut file = std::fs::File::create(&fill)?;
    let chunk = vec![0u8; 4096];
    loop {
        match std::io::Write::write(&mut file, &chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fill)
}

fn unmount(dir: &Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
}

/// The module cache's filesystem full: the container still runs (the cache
/// only saves compile time), the shim log names the problem, no partial
/// entry is left; once space is back, the next start stores its entry.
fn cache_dir_full(f: &Fixture) -> anyhow::Result<()> {
    let cache = f.containerd.cache_dir();
    let fill = full_tmpfs(&cache, "1m")?;
    let result = (|| {
        let id = f.id(0);
        let out = f.containerd.run(Some(&f.rt), &[&image("hello"), &id]);
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.success() && stdout.contains("Hello"),
            "hello with a full cache: {stdout:?} {stderr:?}"
        );
        let log = f
            .containerd
            .log_with(&["not stored", "No space left on device"]);
        ensure!(
            log.contains("not stored") && log.contains("No space left on device"),
            "the shim log does not say the cache is full: {}",
            tail(&log, 20)
        );
        let entries = cache_entries(&cache)?;
        ensure!(entries.is_empty(), "a full cache holds {entries:?}");
        std::fs::remove_file(&fill)?;
        let id = f.id(1);
        let out = f.containerd.run(Some(&f.rt), &[&image("hello"), &id]);
        ensure!(
            out.status.success(),
            "hello after space returned: {:?}",
            text(&out)
        );
        let entries = cache_entries(&cache)?;
        ensure!(
            entries.len() == 1 && !entries[0].starts_with(".tmp-"),
            "after space returned the cache holds {entries:?}"
        );
        Ok(())
    })();
    unmount(&cache);
    result
}

/// Names in the cache dir other than the test's filler.
fn cache_entries(cache: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_dir(cache)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".fill")
        .collect())
}

/// The filesystem of containerd's task state (the bundles) full: `ctr run`
/// fails naming "no space left on device", no shim, worker or bundle is
/// left; once space is back the same container id runs.
fn state_dir_full(f: &Fixture) -> anyhow::Result<()> {
    let state = f
        .containerd
        .dir()
        .join("state/io.containerd.runtime.v2.task");
    let fill = full_tmpfs(&state, "1m")?;
    let id = f.id(0);
    let result = (|| {
        let out = f.containerd.run(Some(&f.rt), &[&image("hello"), &id]);
        let (stdout, stderr) = text(&out);
        ensure!(
            !out.status.success(),
            "ran with a full state dir: {stdout:?}"
        );
        ensure!(
            stderr.contains("no space left on device"),
            "ctr's error does not name the problem: {stderr:?}"
        );
        f.ctr(&["container", "delete", &id]);
        let left = settled(|| f.containerd.leftovers(&id));
        ensure!(left.is_empty(), "a failed create left {left:?}");
        ensure!(
            f.containerd.processes().is_empty(),
            "a failed create left processes"
        );
        std::fs::remove_file(&fill)?;
        let out = f.containerd.run(Some(&f.rt), &[&image("hello"), &id]);
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.success() && stdout.contains("Hello"),
            "after space returned: {stdout:?} {stderr:?}"
        );
        Ok(())
    })();
    f.remove(&id);
    // Bundles below the tmpfs are gone with the container; then unmount.
    let _ = settled(|| f.containerd.leftovers(&id));
    unmount(&state);
    result
}
