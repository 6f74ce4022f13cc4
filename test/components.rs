//! Components (issue 13): the C test programs, wrapped into `wasi:cli/command`
//! components with wasmtime's preview-1 adapter ([`modules::componentize`]),
//! run through `ctr` like the modules they came from: the same args, env,
//! mounts, output, exit codes and kill semantics; a component serves
//! through `wasi:sockets` in the container's network namespace. WasmEdge
//! refuses components by name.

use anyhow::ensure;
use wasmshim_integration::{modules, text, wasm_image, Containerd};

use super::{
    check_args_and_env, check_read_only_mount, expect_error, image_env, kill_running, Env,
};

/// The WASI preview 1 C programs the component cases use, each made a
/// component with the adapter and imported as `component-<name>`.
pub const PROGRAMS: &[&str] = &["args", "exit", "files", "sleep"];

/// The programs of `test/wasm/p2` that call preview 2 interfaces directly,
/// with the world of `test/wit` they are built against; imported as
/// `component-p2-<name>`.
pub const P2_PROGRAMS: &[(&str, &str)] = &[("echo", "sockets-echo"), ("exit", "exit-code")];

/// The HTTP functions of `test/wasm/p2` (no `main`: `wasi:http/proxy`
/// components), with their world; imported as `component-p2-<name>`.
pub const P2_FUNCTIONS: &[(&str, &str)] = &[("http_hello", "http-hello")];

/// The component image made from test program `name`.
pub fn image(name: &str) -> String {
    format!("docker.io/wasmshim-test/component-{name}:latest")
}

/// Builds the components of [`PROGRAMS`] from the modules in `modules_dir`
/// and imports them; each keeps its module's file name (`/args.wasm`). Also
/// builds and imports [`P2_PROGRAMS`] and [`P2_FUNCTIONS`].
pub fn import(containerd: &Containerd, modules_dir: &std::path::Path) -> anyhow::Result<()> {
    let out = modules_dir.join("components");
    std::fs::create_dir_all(&out)?;
    for name in PROGRAMS {
        let file = format!("{name}.wasm");
        let component = modules::componentize(&modules_dir.join(&file), &out.join(&file))?;
        containerd.import(&wasm_image(&image(name), &component, image_env(name))?)?;
    }
    let p2 = out.join("p2");
    for (name, world) in P2_PROGRAMS {
        let component = modules::build_p2_component(name, world, &p2)?;
        containerd.import(&wasm_image(&image(&format!("p2-{name}")), &component, &[])?)?;
    }
    for (name, world) in P2_FUNCTIONS {
        let component = modules::build_p2(name, world, &p2, modules::Exec::Reactor)?;
        containerd.import(&wasm_image(&image(&format!("p2-{name}")), &component, &[])?)?;
    }
    Ok(())
}

/// A component sees its argv and env and prints them, and its exit status is
/// the container's: 0 and 1 through the adapter's `proc_exit` (which knows
/// no other statuses), 3 and 0 through `wasi:cli/exit`'s `exit-with-code`.
pub fn args_env_and_exit(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    check_args_and_env(env, rt, id, &image("args"))?;
    let exits = [("exit", 0), ("exit", 1), ("p2-exit", 3), ("p2-exit", 0)];
    for (program, code) in exits {
        let code_arg = code.to_string();
        let out = env
            .containerd
            .run(Some(rt), &[&image(program), id, "/exit.wasm", &code_arg]);
        let (stdout, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(code),
            "{program} exiting with {code} gave {:?}: {stdout:?} {stderr:?}",
            out.status
        );
        ensure!(
            stdout.contains(&format!("exiting with {code}")),
            "no output before exit({code}): {stdout:?}"
        );
    }
    Ok(())
}

/// A read-only bind mount: the component reads it and its write is refused,
/// as for a module (`files.c` exits 2, which the adapter reports as 1).
pub fn read_only_mount(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    check_read_only_mount(env, rt, id, &image("files"), 1)
}

/// A sleeping component stops within a second of SIGKILL (137) and of
/// SIGTERM (143).
pub fn killed_like_a_module(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let image = image("sleep");
    kill_running(env, rt, id, &[&image, id], "SIGKILL", 137)?;
    kill_running(env, rt, id, &[&image, id], "SIGTERM", 143)
}

/// A component server: `p2/echo.c` listens through `wasi:sockets` on
/// 127.0.0.1 of a network namespace the test made and echoes one client
/// there, as WasmEdge's socket module does.
pub fn serves_on_wasi_sockets(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    super::sockets::echo_in_new_namespace(env, rt, id, &image("p2-echo"), "/echo.wasm")
}

/// `#function` names a core export; a component has none to name, and says so.
pub fn entry_function_is_refused(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env
        .containerd
        .run(Some(rt), &[&image("exit"), id, "/exit.wasm#main"]);
    expect_error(
        &out,
        "is a component: it runs through its wasi:cli/run export",
    )
}

/// WasmEdge runs core modules only: a component is refused at create, by name.
pub fn refused_by_wasmedge(env: &Env, rt: &str, id: &str) -> anyhow::Result<()> {
    let out = env.containerd.run(Some(rt), &[&image("exit"), id]);
    expect_error(
        &out,
        "/exit.wasm is a WebAssembly component; the wasmedge engine runs only core modules",
    )
}
