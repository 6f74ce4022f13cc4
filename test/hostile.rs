//! The hostile input corpus (issue 12): one table of malformed, extreme or
//! malicious inputs, each run through `ctr` against a private containerd for
//! every engine under test. A case names what `ctr` must show: the refusal's
//! errdefs class and message, or the exit status and output of a container
//! that runs (a trap, an OOM kill). After every case nothing of its container
//! may remain: no shim or worker process, no mount, no bundle or state dir,
//! no fifo, no cgroup directory; cases that name paths check that none was
//! made outside our state dirs.
//!
//! Needs root, containerd + runc and the release shims (`make build`).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use libtest_mimic::{Arguments, Failed, Trial};
use wasmshim_integration::{engines, runtime, text, wasm_image, Containerd, NAMESPACE};

/// Cases an engine is known not to pass yet: (engine, case).
/// - WasmEdge 0.17 has no bound on the call depth: its frame stack grows on
///   the heap until `std::bad_alloc` (134 after more than 20 s, with all the
///   memory it can get), or the OOM killer at the container's memory limit
///   (docs/reliability.md).
const KNOWN_GAPS: &[(&str, &str)] = &[("wasmedge", "module_unbounded_recursion")];

/// The image the cases that go through containerd's own checks run.
const IMAGE: &str = "docker.io/wasmshim-test/hostile-hello:latest";

/// What the hello module prints.
const HELLO: &str = "hostile input: ok";

static CONTAINERD: OnceLock<Containerd> = OnceLock::new();

/// The errdefs class `ctr` shows at the end of its error.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// containerd's `invalid argument`.
    InvalidArgument,
    /// containerd's `not found`.
    NotFound,
    /// No errdefs class (an internal error, or ctr's own refusal).
    Unclassified,
}

impl Class {
    fn wording(self) -> Option<&'static str> {
        match self {
            Class::InvalidArgument => Some("invalid argument"),
            Class::NotFound => Some("not found"),
            Class::Unclassified => None,
        }
    }
}

/// What `ctr` must show for a case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `ctr run` fails: the error carries this class and this text.
    Refused(Class, &'static str),
    /// The container runs and exits with this status; stdout or stderr
    /// holds this text.
    Exits(i32, &'static str),
}

/// One case's container, as the case's input function prepares it.
struct Ctx<'a> {
    containerd: &'a Containerd,
    rt: String,
    id: String,
    engine: &'a str,
}

/// What a case runs, and what it checks afterwards.
struct Input {
    /// containerd namespace for `ctr`.
    namespace: String,
    /// The container id `ctr` is given (the leftover checks use [`Ctx::id`]).
    id: String,
    /// `ctr` arguments after `--namespace`.
    args: Vec<String>,
    /// The longest the whole `ctr run` may take.
    limit: Duration,
    /// A check after the run, the cleanup and the leftover checks.
    after: Option<After>,
}

/// A check a case makes after its run.
type After = Box<dyn FnOnce(&Ctx) -> anyhow::Result<()>>;

type Prepare = fn(&Ctx) -> anyhow::Result<Input>;

struct Case {
    name: &'static str,
    expect: Expect,
    prepare: Prepare,
}

use Class::{InvalidArgument, NotFound, Unclassified};
use Expect::{Exits, Refused};

const fn case(name: &'static str, expect: Expect, prepare: Prepare) -> Case {
    Case {
        name,
        expect,
        prepare,
    }
}

/// The corpus.
const CASES: &[Case] = &[
    // config.json: what ctr refuses itself, what containerd passes on.
    case(
        "config_not_json",
        Refused(Unclassified, "invalid character"),
        config_not_json,
    ),
    case(
        "config_uid_is_a_string",
        Refused(
            Unclassified,
            "cannot unmarshal string into Go struct field User.process.user.uid of type uint32",
        ),
        config_uid_is_a_string,
    ),
    case(
        "config_no_root",
        Refused(InvalidArgument, "OCI spec has no root"),
        |c| spec(c, |s| remove(s, "root")),
    ),
    case(
        "config_no_process",
        Refused(InvalidArgument, "OCI spec has no process"),
        |c| spec(c, |s| remove(s, "process")),
    ),
    case(
        "config_args_missing",
        Refused(InvalidArgument, "OCI spec has no process.args"),
        |c| spec(c, |s| remove(&mut s["process"], "args")),
    ),
    case(
        "config_args_empty",
        Refused(InvalidArgument, "OCI spec has no process.args"),
        |c| spec(c, |s| s["process"]["args"] = serde_json::json!([])),
    ),
    case(
        "config_unknown_namespace_type",
        Refused(InvalidArgument, "cannot read OCI spec"),
        |c| {
            spec(c, |s| {
                s["linux"]["namespaces"] = serde_json::json!([{"type": "bogus"}])
            })
        },
    ),
    case(
        "config_unknown_capability",
        Refused(InvalidArgument, "cannot read OCI spec"),
        |c| {
            spec(c, |s| {
                s["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_BOGUS"])
            })
        },
    ),
    case(
        "config_unknown_rlimit",
        Refused(InvalidArgument, "cannot read OCI spec"),
        |c| {
            spec(
                c,
                |s| {
                    s["process"]["rlimits"] =
                        serde_json::json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}])
                },
            )
        },
    ),
    case(
        "config_rlimit_soft_above_hard",
        Refused(InvalidArgument, "soft limit 2048 above hard limit 1024"),
        |c| {
            spec(
                c,
                |s| {
                    s["process"]["rlimits"] =
                        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}])
                },
            )
        },
    ),
    case(
        "config_entrypoint_names_no_module",
        Refused(InvalidArgument, "entrypoint '#main' names no module"),
        |c| spec(c, |s| s["process"]["args"] = serde_json::json!(["#main"])),
    ),
    case(
        "config_hostname_without_uts",
        Refused(
            InvalidArgument,
            "hostname is set but linux.namespaces has no uts namespace",
        ),
        |c| {
            spec(c, |s| {
                s["hostname"] = serde_json::json!("hostile");
                s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
            })
        },
    ),
    case(
        "config_namespace_path_relative",
        Refused(
            InvalidArgument,
            "linux.namespaces: the path of the net namespace must be absolute: netns",
        ),
        |c| {
            spec(c, |s| {
                s["linux"]["namespaces"] = serde_json::json!([{"type": "network", "path": "netns"}])
            })
        },
    ),
    // The entrypoint.
    case(
        "entry_missing",
        Refused(NotFound, "WebAssembly module /missing.wasm not found"),
        |c| entry(c, "/missing.wasm", |_| Ok(())),
    ),
    case(
        "entry_is_a_directory",
        Refused(
            InvalidArgument,
            "entrypoint /dir.wasm is not a regular file",
        ),
        |c| {
            entry(c, "/dir.wasm", |r| {
                Ok(std::fs::create_dir(r.join("dir.wasm"))?)
            })
        },
    ),
    case(
        "entry_is_a_fifo",
        Refused(
            InvalidArgument,
            "entrypoint /pipe.wasm is not a regular file",
        ),
        |c| entry(c, "/pipe.wasm", |r| mkfifo(&r.join("pipe.wasm"))),
    ),
    case(
        "entry_is_a_fifo_without_wasm_name",
        Refused(InvalidArgument, "entrypoint /pipe is not a regular file"),
        |c| entry(c, "/pipe#_start", |r| mkfifo(&r.join("pipe"))),
    ),
    case(
        "entry_is_dev_zero",
        Refused(
            InvalidArgument,
            "entrypoint /zero.wasm is not a regular file",
        ),
        |c| entry(c, "/zero.wasm", |r| mknod_zero(&r.join("zero.wasm"))),
    ),
    case(
        "entry_is_a_4gib_sparse_file",
        Refused(
            InvalidArgument,
            "entrypoint /big.wasm is 4294967296 bytes, more than the 536870912 a module may have",
        ),
        |c| {
            entry(c, "/big.wasm", |r| {
                let file = std::fs::File::create(r.join("big.wasm"))?;
                std::io::Write::write_all(&mut &file, b"\0asm\x01\0\0\0")?;
                Ok(file.set_len(4 << 30)?)
            })
        },
    ),
    case(
        "entry_is_a_symlink_loop",
        Refused(InvalidArgument, "cannot open entrypoint /a.wasm"),
        |c| {
            entry(c, "/a.wasm", |r| {
                std::os::unix::fs::symlink("b.wasm", r.join("a.wasm"))?;
                Ok(std::os::unix::fs::symlink("a.wasm", r.join("b.wasm"))?)
            })
        },
    ),
    case(
        "entry_dotdot_escapes",
        Refused(
            InvalidArgument,
            "entrypoint /../../../hello.wasm resolves outside the container's rootfs",
        ),
        |c| entry(c, "/../../../hello.wasm", |_| Ok(())),
    ),
    case("entry_dotdot_inside_runs", Exits(0, HELLO), |c| {
        entry(c, "/sub/../hello.wasm", |r| {
            Ok(std::fs::create_dir(r.join("sub"))?)
        })
    }),
    case(
        "entry_with_nul",
        Refused(InvalidArgument, "cannot open entrypoint /hello.wasm"),
        |c| entry(c, "/hello.wasm\0.wasm", |_| Ok(())),
    ),
    case(
        "entry_is_text",
        Refused(
            InvalidArgument,
            "entrypoint /text.wasm is not a WebAssembly module",
        ),
        |c| {
            entry(c, "/text.wasm", |r| {
                Ok(std::fs::write(r.join("text.wasm"), "#!/bin/sh\necho hi\n")?)
            })
        },
    ),
    case(
        "entry_is_empty",
        Refused(
            InvalidArgument,
            "entrypoint /empty.wasm is not a WebAssembly module",
        ),
        |c| {
            entry(c, "/empty.wasm", |r| {
                Ok(std::fs::write(r.join("empty.wasm"), "")?)
            })
        },
    ),
    case(
        "entry_is_only_the_magic_number",
        Refused(InvalidArgument, "/m.wasm is not a valid WebAssembly module"),
        |c| module(c, b"\0asm".to_vec(), &[], |_| {}),
    ),
    // Modules: linking, entry functions, traps, memory, size.
    case(
        "module_imports_unknown_function",
        Refused(InvalidArgument, "cannot link /m.wasm"),
        |c| {
            wat_module(
                c,
                r#"(module (import "env" "nope" (func)) (func (export "_start")))"#,
            )
        },
    ),
    case(
        "module_without_entry_export",
        Refused(InvalidArgument, "/m.wasm has no exported function '_start'"),
        |c| wat_module(c, "(module (func))"),
    ),
    case(
        "module_entry_with_parameters",
        Refused(
            InvalidArgument,
            "function '_start' of /m.wasm takes parameters",
        ),
        |c| wat_module(c, r#"(module (func (export "_start") (param i32)))"#),
    ),
    case(
        "module_entry_is_not_a_function",
        Refused(InvalidArgument, "/m.wasm has no exported function '_start'"),
        |c| {
            wat_module(
                c,
                r#"(module (global (export "_start") i32 (i32.const 0)))"#,
            )
        },
    ),
    case(
        "module_named_entry_missing",
        Refused(InvalidArgument, "/m.wasm has no exported function 'nope'"),
        |c| {
            let wasm = wat::parse_str(HELLO_WAT)?;
            module_at(c, wasm, "/m.wasm#nope", &[], |_| {})
        },
    ),
    case(
        "module_start_section_traps",
        Exits(134, "unreachable"),
        |c| {
            wat_module(
                c,
                r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#,
            )
        },
    ),
    case(
        "module_unbounded_recursion",
        Exits(134, "call stack exhausted"),
        |c| wat_module(c, r#"(module (func $f (export "_start") call $f))"#),
    ),
    case("module_grows_memory_to_4gib", Exits(0, ""), |c| {
        grow_module(c, false, None)
    }),
    case(
        "module_grows_memory_to_4gib_past_its_limit",
        Exits(137, ""),
        |c| grow_module(c, true, Some(64 << 20)),
    ),
    case(
        "module_of_a_million_functions_under_a_limit",
        Refused(
            Unclassified,
            "worker process: killed by the OOM killer at the container's memory limit of 256 MiB while loading the module (exit status 137)",
        ),
        million_functions,
    ),
    case(
        "module_past_a_million_functions",
        Refused(InvalidArgument, "/m.wasm is not a valid WebAssembly module"),
        too_many_functions,
    ),
    case("args_100000", Exits(0, ""), hundred_thousand_args),
    case("env_1mib_variable", Exits(0, ""), huge_env),
    // Mounts.
    case(
        "mount_source_missing",
        Refused(
            NotFound,
            "the source /nonexistent-hostile-source of the bind mount at /data does not exist",
        ),
        |c| {
            mount(
                c,
                serde_json::json!({"destination": "/data", "type": "bind",
                    "source": "/nonexistent-hostile-source", "options": ["rbind"]}),
            )
        },
    ),
    case("mount_source_is_a_file", Exits(0, HELLO), mount_source_file),
    case(
        "mount_destination_relative",
        Refused(
            InvalidArgument,
            "mounts: the destination data of a mount must be absolute",
        ),
        |c| {
            mount(
                c,
                serde_json::json!({"destination": "data", "type": "bind",
                    "source": "/tmp", "options": ["rbind"]}),
            )
        },
    ),
    case(
        "mount_destination_dotdot",
        Refused(
            InvalidArgument,
            "mounts: the destination /data/../../etc of a mount must not contain '..'",
        ),
        |c| {
            mount(
                c,
                serde_json::json!({"destination": "/data/../../etc", "type": "bind",
                    "source": "/tmp", "options": ["rbind"]}),
            )
        },
    ),
    // Container ids and namespaces: containerd refuses them, nothing is made.
    case(
        "id_with_slash",
        Refused(InvalidArgument, "must match"),
        |c| {
            image_run(
                c,
                NAMESPACE,
                &format!("x/../../../../../../tmp/{}", escape(c)),
            )
        },
    ),
    case(
        "id_dotdot",
        Refused(InvalidArgument, "identifier \"..\" must match"),
        |c| image_run(c, NAMESPACE, ".."),
    ),
    case(
        "id_of_1000_characters",
        Refused(
            InvalidArgument,
            "greater than maximum length (76 characters)",
        ),
        |c| image_run(c, NAMESPACE, &"a".repeat(1000)),
    ),
    case("id_of_76_characters_runs", Exits(0, HELLO), |c| {
        let id = format!("{}-{}", c.id, "x".repeat(75 - c.id.len()));
        image_run(c, NAMESPACE, &id)
    }),
    case(
        "namespace_with_slash",
        Refused(InvalidArgument, "namespace validation"),
        |c| image_run(c, &format!("../../../../../../tmp/{}", escape(c)), &c.id),
    ),
    case(
        "namespace_dotdot",
        Refused(InvalidArgument, "namespace validation"),
        |c| image_run(c, "..", &c.id),
    ),
    case(
        "namespace_of_1000_characters",
        Refused(InvalidArgument, "namespace validation"),
        |c| image_run(c, &"n".repeat(1000), &c.id),
    ),
    // The user.
    case("uid_that_does_not_exist_runs", Exits(0, HELLO), |c| {
        spec(c, |s| {
            s["process"]["user"] = serde_json::json!({"uid": 54321, "gid": 54321})
        })
    }),
    case(
        "uid_minus_one",
        Refused(
            InvalidArgument,
            "process.user.uid 4294967295 is not a valid user id",
        ),
        |c| {
            spec(c, |s| {
                s["process"]["user"] = serde_json::json!({"uid": 4294967295u32, "gid": 0})
            })
        },
    ),
    case(
        "gid_minus_one",
        Refused(
            InvalidArgument,
            "process.user.gid 4294967295 is not a valid group id",
        ),
        |c| {
            spec(c, |s| {
                s["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 4294967295u32})
            })
        },
    ),
    // The cgroup.
    case(
        "cgroups_path_dotdot",
        Refused(
            InvalidArgument,
            "linux.cgroupsPath \"../../..\": must not contain '..'",
        ),
        |c| cgroups_path(c, "../../.."),
    ),
    case(
        "cgroups_path_systemd_dotdot",
        Refused(InvalidArgument, "the systemd form is slice:prefix:name"),
        |c| cgroups_path(c, "system.slice:hostile:../../x"),
    ),
    // Hooks.
    case(
        "hook_that_never_exits",
        Refused(
            Unclassified,
            "createRuntime hook /bin/sh: timed out after 1 s",
        ),
        hook_never_exits,
    ),
    case(
        "hook_path_relative",
        Refused(
            InvalidArgument,
            "hooks: the path of a hook must be absolute: sh",
        ),
        |c| hooks(c, serde_json::json!({"prestart": [{"path": "sh"}]})),
    ),
    case(
        "hook_timeout_zero",
        Refused(
            InvalidArgument,
            "hooks: the timeout of /bin/true must be positive",
        ),
        |c| {
            hooks(
                c,
                serde_json::json!({"prestart": [{"path": "/bin/true", "timeout": 0}]}),
            )
        },
    ),
    case(
        "hook_binary_missing",
        Refused(
            Unclassified,
            "starting createRuntime hook /nonexistent/hook",
        ),
        |c| {
            hooks(
                c,
                serde_json::json!({"createRuntime": [{"path": "/nonexistent/hook"}]}),
            )
        },
    ),
];

/// A module that prints [`HELLO`] through WASI and returns.
const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hostile input: ok\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 18))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn main() {
    let args = Arguments::from_args();
    let (engines, skipped) = match engines() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("hostile input corpus cannot run: {e:#}");
            std::process::exit(1);
        }
    };
    for line in &skipped {
        eprintln!("SKIPPED {line}");
    }
    let mut trials = Vec::new();
    for engine in &engines {
        for (index, case) in CASES.iter().enumerate() {
            let engine: &'static str = engine;
            let gap = KNOWN_GAPS.contains(&(engine, case.name));
            // Short ids: some cases make paths from them.
            let id = format!("{engine}-h{index}");
            trials.push(
                Trial::test(format!("{engine}::{}", case.name), move || {
                    run_case(case, engine, &id)
                })
                .with_ignored_flag(gap),
            );
        }
    }
    eprintln!("hostile input corpus: {} cases per engine", CASES.len());
    if trials.iter().any(|t| !args.is_filtered_out(t)) && !args.list {
        if let Err(e) = setup() {
            eprintln!("hostile corpus setup failed: {e:#}");
            std::process::exit(1);
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(containerd) = CONTAINERD.get() {
        let left: Vec<String> = containerd
            .processes()
            .into_iter()
            .map(wasmshim_integration::cmdline)
            .collect();
        containerd.stop();
        if !left.is_empty() {
            eprintln!("shim or worker processes left behind after the run: {left:#?}");
            std::process::exit(1);
        }
    }
    conclusion.exit();
}

fn setup() -> anyhow::Result<()> {
    let containerd = Containerd::start()?;
    let hello = containerd.dir().join("hello.wasm");
    std::fs::write(&hello, wat::parse_str(HELLO_WAT)?)?;
    containerd.import(&wasm_image(IMAGE, &hello, &[])?)?;
    CONTAINERD
        .set(containerd)
        .map_err(|_| anyhow::anyhow!("set up twice"))
}

/// Runs one case and checks what `ctr` showed, then that nothing is left.
fn run_case(case: &Case, engine: &str, id: &str) -> Result<(), Failed> {
    let containerd = CONTAINERD.get().expect("set up before the trials run");
    let ctx = Ctx {
        containerd,
        rt: runtime(engine),
        id: id.to_string(),
        engine,
    };
    let result = (|| {
        let input = (case.prepare)(&ctx).context("preparing the input")?;
        let started = Instant::now();
        let out = run_ctr(containerd, &input);
        // `ctr run --rm` leaves the container record when the task fails to
        // create; a run that hung leaves its task.
        let ctr = |args: &[&str]| containerd.ctr_command_in(&input.namespace, args).output();
        let _ = ctr(&["task", "rm", "--force", &input.id]);
        let _ = ctr(&["container", "rm", &input.id]);
        let out = out?;
        ensure!(
            started.elapsed() <= input.limit,
            "ctr took {:?}, more than {:?}",
            started.elapsed(),
            input.limit
        );
        check(&out, case.expect)?;
        let leftovers = settled_leftovers(containerd, &[&ctx.id, &input.id]);
        ensure!(
            leftovers.is_empty(),
            "container {} left behind:\n{}",
            input.id,
            leftovers.join("\n")
        );
        if let Some(after) = input.after {
            after(&ctx)?;
        }
        Ok(())
    })();
    result.map_err(|e: anyhow::Error| Failed::from(format!("{e:#}")))
}

/// What the containers `ids` left, once containerd had a few seconds to
/// finish deleting them.
fn settled_leftovers(containerd: &Containerd, ids: &[&str]) -> Vec<String> {
    let all = || -> Vec<String> {
        ids.iter()
            .flat_map(|id| {
                // A hostile id is never a path: look for what its last part names.
                let name = id.rsplit('/').next().unwrap_or(id);
                if name.is_empty() || name == ".." {
                    Vec::new()
                } else {
                    containerd.leftovers(name)
                }
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = all();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = all();
    }
    left
}

/// Runs `ctr` as `input` says; kills it when it takes more than twice the limit.
fn run_ctr(containerd: &Containerd, input: &Input) -> anyhow::Result<Output> {
    let args: Vec<&str> = input.args.iter().map(String::as_str).collect();
    let mut child = containerd
        .ctr_command_in(&input.namespace, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ctr")?;
    let deadline = Instant::now() + input.limit * 2;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("ctr hung for {:?}: {:?}", input.limit * 2, text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// Asserts that `out` is what `expect` says.
fn check(out: &Output, expect: Expect) -> anyhow::Result<()> {
    let (stdout, stderr) = text(out);
    match expect {
        Refused(class, message) => {
            ensure!(
                !out.status.success(),
                "ctr succeeded: stdout {stdout:?} stderr {stderr:?}"
            );
            let line = stderr.trim_end();
            ensure!(
                line.contains(message),
                "ctr's error does not say {message:?}: {stderr:?}"
            );
            match class.wording() {
                Some(wording) => ensure!(
                    line.ends_with(&format!(": {wording}")),
                    "ctr's error is not of class {wording:?}: {stderr:?}"
                ),
                None => {
                    for other in [InvalidArgument, NotFound] {
                        let wording = other.wording().unwrap_or_default();
                        ensure!(
                            !line.ends_with(&format!(": {wording}")),
                            "ctr's error has class {wording:?}, expected none: {stderr:?}"
                        );
                    }
                }
            }
        }
        Exits(status, message) => {
            ensure!(
                out.status.code() == Some(status),
                "exit status {:?}, expected {status}: stdout {stdout:?} stderr {stderr:?}",
                out.status
            );
            ensure!(
                stdout.contains(message) || stderr.contains(message),
                "the container's output does not say {message:?}: stdout {stdout:?} stderr {stderr:?}"
            );
        }
    }
    Ok(())
}

/// `ctr run --rm --fifo-dir … --runtime … <rest>` in `namespace`, for container `id`.
fn ctr_run(c: &Ctx, namespace: &str, id: &str, rest: &[&str]) -> Input {
    let mut args: Vec<String> = ["run", "--rm", "--fifo-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(c.containerd.fifo_dir().to_string_lossy().into_owned());
    args.extend(["--runtime".to_string(), c.rt.clone()]);
    args.extend(rest.iter().map(|s| s.to_string()));
    Input {
        namespace: namespace.to_string(),
        id: id.to_string(),
        args,
        limit: Duration::from_secs(20),
        after: None,
    }
}

/// `ctr run --config <spec>`: the spec's rootfs holds the hello module at
/// `/hello.wasm`, which it runs; `edit` changes the spec.
fn spec(c: &Ctx, edit: impl FnOnce(&mut serde_json::Value)) -> anyhow::Result<Input> {
    let wasm = wat::parse_str(HELLO_WAT)?;
    std::fs::write(c.containerd.spec_rootfs(&c.id)?.join("hello.wasm"), wasm)?;
    let path = c.containerd.write_spec(&c.id, &["/hello.wasm"], edit)?;
    Ok(ctr_run(
        c,
        NAMESPACE,
        &c.id,
        &["--config", path.to_str().context("spec path")?, &c.id],
    ))
}

fn remove(value: &mut serde_json::Value, key: &str) {
    if let Some(object) = value.as_object_mut() {
        object.remove(key);
    }
}

/// The spec of [`spec`] with entrypoint `arg`, after `make` put what it
/// names in the rootfs (which holds `/hello.wasm`).
fn entry(
    c: &Ctx,
    arg: &str,
    make: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<Input> {
    let input = spec(c, |s| s["process"]["args"] = serde_json::json!([arg]))?;
    make(&c.containerd.spec_rootfs(&c.id)?)?;
    Ok(input)
}

/// The spec of [`spec`] running `wasm` as `/m.wasm` with `args`.
fn module(
    c: &Ctx,
    wasm: Vec<u8>,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<Input> {
    module_at(c, wasm, "/m.wasm", args, edit)
}

/// The spec of [`spec`] running `wasm`, at `/m.wasm`, as `entrypoint` with `args`.
fn module_at(
    c: &Ctx,
    wasm: Vec<u8>,
    entrypoint: &str,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<Input> {
    let mut argv = vec![entrypoint];
    argv.extend(args);
    let input = spec(c, |s| {
        s["process"]["args"] = serde_json::json!(argv);
        edit(s);
    })?;
    std::fs::write(c.containerd.spec_rootfs(&c.id)?.join("m.wasm"), wasm)?;
    Ok(input)
}

fn wat_module(c: &Ctx, wat: &str) -> anyhow::Result<Input> {
    module(c, wat::parse_str(wat)?, &[], |_| {})
}

fn mkfifo(path: &Path) -> anyhow::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
    Ok(())
}

/// A character device 1:5, the kernel's `/dev/zero`.
fn mknod_zero(path: &Path) -> anyhow::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 5),
    )?;
    Ok(())
}

fn config_not_json(c: &Ctx) -> anyhow::Result<Input> {
    let input = spec(c, |_| {})?;
    let config = c
        .containerd
        .spec_rootfs(&c.id)?
        .with_file_name("config.json");
    std::fs::write(&config, "{ this is not json")?;
    Ok(input)
}

fn config_uid_is_a_string(c: &Ctx) -> anyhow::Result<Input> {
    spec(c, |s| {
        s["process"]["user"]["uid"] = serde_json::json!("root")
    })
}

/// A module that grows its memory by 65,535 pages to the whole 4 GiB a
/// 32-bit memory can have, exits 1 if that fails, then writes its last byte
/// (or, with `touch_all`, one byte of every page) and exits 0.
fn grow_module(c: &Ctx, touch_all: bool, limit: Option<u64>) -> anyhow::Result<Input> {
    let touch = if touch_all {
        "(loop $l
           (i32.store8 (local.get $p) (i32.const 1))
           (local.set $p (i32.add (local.get $p) (i32.const 65536)))
           (br_if $l (local.get $p)))"
    } else {
        "(i32.store8 (i32.const -1) (i32.const 1))"
    };
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $p i32)
    (if (i32.eq (memory.grow (i32.const 65535)) (i32.const -1))
      (then (call $exit (i32.const 1))))
    {touch}
    (call $exit (i32.const 0))))"#
    );
    module(c, wat::parse_str(wat)?, &[], |s| {
        if let Some(limit) = limit {
            s["linux"]["resources"] = serde_json::json!({"memory": {"limit": limit}});
        }
    })
}

/// `count` functions `(func)`, the last exported as `_start`.
fn functions(count: u32) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instructions().end();
    for _ in 0..count {
        funcs.function(0);
        code.function(&body);
    }
    let mut exports = ExportSection::new();
    exports.export("_start", ExportKind::Func, count - 1);
    let mut module = wasm_encoder::Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    module.finish()
}

/// One million functions: compiling them takes more than a minute and over
/// 5 GB on the CI machine, so the container gets a memory limit, which stops
/// the compiling worker within seconds.
fn million_functions(c: &Ctx) -> anyhow::Result<Input> {
    let mut input = module(c, functions(1_000_000), &[], |s| {
        s["linux"]["resources"] = serde_json::json!({"memory": {"limit": 256u64 << 20}});
    })?;
    input.limit = Duration::from_secs(60);
    Ok(input)
}

/// One function more than the engines accept.
fn too_many_functions(c: &Ctx) -> anyhow::Result<Input> {
    module(c, functions(1_000_001), &[], |_| {})
}

/// A module that exits 0 when it was given exactly 100,000 args after its
/// name (args_sizes_get), 1 otherwise.
fn hundred_thousand_args(c: &Ctx) -> anyhow::Result<Input> {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (call $exit (select (i32.const 0) (i32.const 1)
      (i32.eq (i32.load (i32.const 0)) (i32.const 100001))))))"#;
    let args: Vec<String> = (0..100_000).map(|i| format!("a{i}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    module(c, wat::parse_str(wat)?, &args, |_| {})
}

/// A module that exits 0 when its environment holds more than 1 MiB
/// (environ_sizes_get), 1 otherwise; the spec sets one variable of 1 MiB.
fn huge_env(c: &Ctx) -> anyhow::Result<Input> {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (call $exit (select (i32.const 0) (i32.const 1)
      (i32.gt_u (i32.load (i32.const 4)) (i32.const 1048576))))))"#;
    let value = format!("BIG={}", "x".repeat(1 << 20));
    module(c, wat::parse_str(wat)?, &[], |s| {
        s["process"]["env"] = serde_json::json!(["PATH=/", value])
    })
}

/// The spec of [`spec`] with `mount` as its only mount.
fn mount(c: &Ctx, mount: serde_json::Value) -> anyhow::Result<Input> {
    spec(c, |s| s["mounts"] = serde_json::json!([mount]))
}

/// A bind mount of a file: WASI preopens only directories, so the module
/// runs without it and the shim log says why.
fn mount_source_file(c: &Ctx) -> anyhow::Result<Input> {
    let file = c.containerd.spec_rootfs(&c.id)?.with_file_name("hosts");
    std::fs::write(&file, "127.0.0.1 localhost\n")?;
    let mut input = mount(
        c,
        serde_json::json!({"destination": "/etc/hosts", "type": "bind",
            "source": file, "options": ["rbind", "ro"]}),
    )?;
    input.after = Some(Box::new(move |c: &Ctx| {
        let expected = format!(
            "bind mount {} is not a directory; WASI can only preopen directories, skipping it",
            file.display()
        );
        ensure!(
            c.containerd.log_with(&[&expected]).contains(&expected),
            "the shim log does not say {expected:?}"
        );
        Ok(())
    }));
    Ok(input)
}

/// The name a hostile id or namespace would make outside our dirs.
fn escape(c: &Ctx) -> String {
    format!("wasmshim-hostile-escape-{}", c.engine)
}

/// `ctr run` of the hello image as container `id` in `namespace`; afterwards
/// no file or cgroup named by [`escape`] exists anywhere it could land.
fn image_run(c: &Ctx, namespace: &str, id: &str) -> anyhow::Result<Input> {
    let mut input = ctr_run(c, namespace, id, &[IMAGE, id]);
    input.after = Some(Box::new(|c: &Ctx| {
        let name = escape(c);
        let mut places = vec![PathBuf::from("/tmp"), PathBuf::from("/run")];
        places.extend(dirs_below(c.containerd.dir()));
        places.extend(
            std::fs::read_dir("/sys/fs/cgroup")?
                .flatten()
                .map(|e| e.path()),
        );
        for place in places {
            let path = place.join(&name);
            ensure!(!path.exists(), "{} was made", path.display());
        }
        Ok(())
    }));
    Ok(input)
}

/// The spec of [`spec`] with `linux.cgroupsPath` = `path`.
fn cgroups_path(c: &Ctx, path: &str) -> anyhow::Result<Input> {
    spec(c, |s| s["linux"]["cgroupsPath"] = serde_json::json!(path))
}

/// The spec of [`spec`] with `hooks`.
fn hooks(c: &Ctx, hooks: serde_json::Value) -> anyhow::Result<Input> {
    spec(c, |s| s["hooks"] = hooks)
}

/// A `createRuntime` hook whose shell waits for a `sleep` that never ends,
/// with a timeout of 1 s: Create fails within seconds and neither the hook
/// nor its child is left.
fn hook_never_exits(c: &Ctx) -> anyhow::Result<Input> {
    // A duration of its own, to find the hook's child.
    let marker = format!("{}", 86_000 + c.id.len() * 100 + c.engine.len());
    let script = format!("sleep {marker}; echo done");
    let mut input = hooks(
        c,
        serde_json::json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", script], "timeout": 1}
        ]}),
    )?;
    input.limit = Duration::from_secs(15);
    input.after = Some(Box::new(move |_c: &Ctx| {
        let needle = format!("sleep {marker}");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = wasmshim_integration::processes_mentioning(&needle);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                for pid in &left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                bail!("the timed-out hook left processes {left:?} ({needle})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    Ok(input)
}

/// Every directory below `dir` (symlinks not followed), and `dir`.
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(dirs_below(&entry.path()));
            }
        }
    }
    out
}
