//! `make demo`: a private containerd runs the hello module through our shim.
//!
//! Builds `test/wasm/hello.c` into a `wasi/wasm` image, imports it with
//! `ctr image import` and runs it with `ctr run --runtime io.containerd.<engine>.v1`,
//! printing exactly what `ctr` prints. containerd and its files are removed at the end.

use anyhow::{bail, Context};
use wasmshim_integration::{modules, runtime, text, wasm_image, Containerd};

fn main() -> anyhow::Result<()> {
    let engine = std::env::args()
        .skip_while(|a| a != "--engine")
        .nth(1)
        .unwrap_or_else(|| "wasmtime".into());
    let containerd = Containerd::start().context("starting a private containerd")?;
    eprintln!("demo: private containerd in {}", containerd.dir().display());

    let modules = modules::build_all(&containerd.dir().join("modules"))?;
    let image = "docker.io/wasmshim/hello:latest";
    containerd.import(&wasm_image(image, &modules.join("hello.wasm"), &[])?)?;
    eprintln!("demo: imported {image} (platform wasi/wasm)");

    let rt = runtime(&engine);
    eprintln!("demo: ctr run --rm --runtime {rt} {image} demo");
    let out = containerd.run(Some(&rt), &[image, "demo"]);
    let (stdout, stderr) = text(&out);
    print!("{stdout}");
    eprint!("{stderr}");
    containerd.stop();
    if !out.status.success() {
        bail!("ctr run failed with {}", out.status);
    }
    Ok(())
}
