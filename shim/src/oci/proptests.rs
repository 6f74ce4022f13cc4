//! Generated input (issue 12): property tests over bundle parsing
//! ([`load_bundle`], [`run_spec`]), entrypoint resolution and the isolation
//! plan ([`Plan::from_spec`]). Whatever the input, nothing panics; an error
//! names the field (or the path) it is about; an entrypoint that resolves
//! never resolves outside the rootfs; a cgroup path never climbs out.
//!
//! Inputs come from a fixed vocabulary of hostile pieces (`..`, NUL bytes,
//! symlinks out of the rootfs, a loop, a fifo, a directory, a text file)
//! combined at random, so that the cases hit the interesting paths rather
//! than random strings that all fail the same way. The case counts are
//! bounded for CI; proptest's failure persistence is off (a failure prints
//! the minimal input, which is then kept as a case here).

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{json, Value};

use super::*;
use crate::sys::plan::{CgroupsPath, Plan};

/// A module's first bytes: enough for the shim's checks.
const WASM: &[u8] = b"\0asm\x01\0\0\0";

/// Cases per property: bounded so the whole file runs in seconds.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// A bundle in a temp dir: `bundle/rootfs` with the hostile vocabulary, and
/// `outside/` beside the bundle with a valid module that must never be
/// reached from the rootfs.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        let outside = dir.path().join("outside");
        for d in [&rootfs.join("app/sub"), &rootfs.join("dir.wasm"), &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(rootfs.join("m.wasm"), WASM).unwrap();
        std::fs::write(rootfs.join("app/m.wasm"), WASM).unwrap();
        std::fs::write(rootfs.join("text"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(rootfs.join("empty.wasm"), b"").unwrap();
        std::fs::write(outside.join("host.wasm"), WASM).unwrap();
        // Relative symlinks that stay inside, and ones that leave.
        symlink("../m.wasm", rootfs.join("app/rel.wasm")).unwrap();
        symlink("sub/..", rootfs.join("app/here")).unwrap();
        symlink("../../outside/host.wasm", rootfs.join("up.wasm")).unwrap();
        symlink("../../../../../../../..", rootfs.join("up")).unwrap();
        symlink(outside.join("host.wasm"), rootfs.join("abs.wasm")).unwrap();
        symlink(&outside, rootfs.join("abs")).unwrap();
        symlink("/etc", rootfs.join("etc")).unwrap();
        symlink("loop", rootfs.join("loop")).unwrap();
        nix::unistd::mkfifo(
            &rootfs.join("fifo.wasm"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        Fixture { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
}

/// One path component of an entrypoint or a working directory.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("m.wasm"),
        2 => Just(".."),
        1 => Just("."),
        2 => Just("app"),
        1 => Just("sub"),
        1 => Just("here"),
        1 => Just("rel.wasm"),
        1 => Just("up.wasm"),
        1 => Just("up"),
        1 => Just("abs.wasm"),
        1 => Just("abs"),
        1 => Just("etc"),
        1 => Just("passwd"),
        1 => Just("outside"),
        1 => Just("host.wasm"),
        1 => Just("loop"),
        1 => Just("fifo.wasm"),
        1 => Just("dir.wasm"),
        1 => Just("text"),
        1 => Just("empty.wasm"),
        1 => Just("missing.wasm"),
        1 => Just("a\0b.wasm"),
        1 => Just(""),
    ]
    .prop_map(str::to_string)
}

/// A path of up to six components, absolute or relative.
fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 0..6)).prop_map(|(absolute, parts)| {
        format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
    })
}

/// An entrypoint: a path, maybe with `#function` (possibly empty) or several `#`.
fn entrypoint() -> impl Strategy<Value = String> {
    (
        path(),
        prop_oneof![
            Just(""),
            Just("#"),
            Just("#main"),
            Just("#_start#x"),
            Just("#\0")
        ],
    )
        .prop_map(|(p, f)| format!("{p}{f}"))
}

/// The spec of a bundle whose entrypoint is `args[0]`, in `cwd`.
fn spec_json(args: &[String], cwd: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"cwd": cwd, "args": args, "env": ["A=1"], "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "mount"}]}
    })
}

/// Checks what [`run_spec`] made of `first` (in `cwd`): a module inside the
/// rootfs that starts with the magic number, or an error naming it.
fn check_entrypoint(fixture: &Fixture, first: &str, cwd: &str) -> Result<(), TestCaseError> {
    let spec: Spec = serde_json::from_value(spec_json(&[first.to_string()], cwd)).unwrap();
    let (name, entry) = split_entrypoint(first);
    match run_spec(&spec, &fixture.rootfs()) {
        Ok(run) => {
            let real = run.module.canonicalize().unwrap();
            let rootfs = fixture.rootfs().canonicalize().unwrap();
            prop_assert!(
                real.starts_with(&rootfs),
                "{first:?} in {cwd:?} resolved to {} outside the rootfs",
                real.display()
            );
            prop_assert!(!real.starts_with(fixture.outside().canonicalize().unwrap()));
            prop_assert_eq!(std::fs::read(&real).unwrap(), WASM);
            prop_assert_eq!(&run.entry, entry);
            prop_assert!(!run.entry.is_empty());
            prop_assert_eq!(&run.args[0], name);
        }
        Err(e) => {
            let text = e.to_string();
            if name.is_empty() {
                prop_assert!(text.contains("names no module"), "{first:?}: {text}");
            } else {
                prop_assert!(
                    text.contains(name),
                    "{first:?} in {cwd:?}: the error does not name the entrypoint: {text}"
                );
            }
            prop_assert!(
                matches!(e, Error::InvalidArgument(_) | Error::NotFound(_)),
                "{first:?}: {e:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Entrypoint resolution: any combination of `..`, symlinks in and out,
    /// loops, fifos, directories and NUL bytes, absolute or relative to any
    /// working directory.
    #[test]
    fn entrypoints_resolve_inside_the_rootfs_or_are_named(first in entrypoint(), cwd in path()) {
        let fixture = Fixture::new();
        check_entrypoint(&fixture, &first, &format!("/{cwd}"))?;
    }
}

/// Where in a spec a generated value may land, and the words an error about
/// it may use to name it (the field, or what it holds).
const FIELDS: &[(&str, &[&str])] = &[
    ("ociVersion", &["ociVersion"]),
    ("root", &["root"]),
    ("root.path", &["root.path", "rootfs"]),
    ("root.readonly", &["root.readonly"]),
    ("process", &["process"]),
    ("process.args", &["process.args", "entrypoint", "module"]),
    ("process.args.0", &["process.args", "entrypoint", "module"]),
    ("process.cwd", &["process.cwd", "entrypoint", "module"]),
    ("process.env", &["process.env"]),
    ("process.env.0", &["process.env"]),
    ("process.terminal", &["process.terminal", "terminal"]),
    ("process.user", &["process.user"]),
    ("process.user.uid", &["process.user.uid", "uid"]),
    ("process.user.gid", &["process.user.gid", "gid"]),
    ("process.rlimits", &["process.rlimits"]),
    ("process.rlimits.0.type", &["process.rlimits"]),
    ("process.rlimits.0.soft", &["process.rlimits", "soft"]),
    ("mounts", &["mounts"]),
    ("mounts.0", &["mounts"]),
    ("mounts.0.destination", &["mounts", "destination"]),
    ("mounts.0.source", &["mounts", "source"]),
    ("mounts.0.type", &["mounts"]),
    ("mounts.0.options", &["mounts"]),
    ("hostname", &["hostname"]),
    ("annotations", &["annotations"]),
    ("linux", &["linux"]),
    ("linux.cgroupsPath", &["linux.cgroupsPath"]),
    ("linux.namespaces", &["linux.namespaces"]),
    ("linux.namespaces.0.type", &["linux.namespaces"]),
    ("linux.namespaces.0.path", &["linux.namespaces"]),
];

/// A JSON value of any type, with the hostile strings and numbers of the
/// vocabulary among them.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(4294967295u64)),
            Just(json!(4294967296u64)),
            Just(json!(1.5)),
            Just(json!(u64::MAX)),
            Just(json!(i64::MIN)),
        ],
        path().prop_map(Value::from),
        prop_oneof![
            Just("bind"),
            Just("rbind"),
            Just("ro"),
            Just("/a:b:c"),
            Just("system.slice:docker:c1"),
            Just("../../.."),
            Just("RLIMIT_NOFILE"),
            Just("network"),
            Just("uts"),
            Just("mount"),
            Just("bogus"),
            Just("A=1"),
            Just("=")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("type"),
                        Just("path"),
                        Just("source"),
                        Just("destination"),
                        Just("options"),
                        Just("soft"),
                        Just("hard"),
                        Just("uid"),
                        Just("x")
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// A valid spec to start from: a module, a bind mount, an rlimit, namespaces.
fn base_spec(fixture: &Fixture) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": false},
        "process": {
            "cwd": "/app",
            "args": ["m.wasm", "x"],
            "env": ["A=1", "B=x=y"],
            "user": {"uid": 1000, "gid": 1000},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]
        },
        "mounts": [{"destination": "/data", "type": "bind", "source": fixture.outside(), "options": ["rbind", "ro"]}],
        "hostname": "c1",
        "linux": {
            "cgroupsPath": "/wasmshim-test/c1",
            "namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "network"}]
        }
    })
}

/// Sets (or with `None` removes) the field at `path` (dot-separated, numbers
/// index arrays), making the objects and arrays on the way.
fn set(spec: &mut Value, path: &str, new: Option<Value>) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut at = spec;
    for part in &parts[..parts.len() - 1] {
        at = match part.parse::<usize>() {
            Ok(i) => {
                if !at.is_array() {
                    *at = json!([]);
                }
                let array = at.as_array_mut().unwrap();
                while array.len() <= i {
                    array.push(json!({}));
                }
                &mut array[i]
            }
            Err(_) => {
                if !at.is_object() {
                    *at = json!({});
                }
                at.as_object_mut()
                    .unwrap()
                    .entry(part.to_string())
                    .or_insert(json!({}))
            }
        };
    }
    let last = parts[parts.len() - 1];
    match (last.parse::<usize>(), at) {
        (Ok(i), Value::Array(array)) => match new {
            Some(v) if i < array.len() => array[i] = v,
            Some(v) => array.push(v),
            None if i < array.len() => {
                array.remove(i);
            }
            None => {}
        },
        (_, Value::Object(object)) => match new {
            Some(v) => {
                object.insert(last.to_string(), v);
            }
            None => {
                object.remove(last);
            }
        },
        (_, other) => {
            if let Some(v) = new {
                *other = json!({ last: v });
            }
        }
    }
}

/// One change to the base spec: a field set to a generated value or removed.
fn mutation() -> impl Strategy<Value = (usize, Option<Value>)> {
    (0..FIELDS.len(), prop::option::weighted(0.85, value()))
}

proptest! {
    #![proptest_config(config(768))]

    /// Bundle parsing: a valid spec with one to three fields replaced by
    /// values of any type (or removed) either loads, with a module inside
    /// the rootfs, or fails naming one of the fields changed; the isolation
    /// plan of a spec that loads either builds or names its field.
    #[test]
    fn any_config_loads_or_names_the_field(changes in prop::collection::vec(mutation(), 1..4)) {
        let fixture = Fixture::new();
        let mut spec = base_spec(&fixture);
        for (field, new) in &changes {
            set(&mut spec, FIELDS[*field].0, new.clone());
        }
        std::fs::write(fixture.bundle().join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        // The field's words, or its last name as serde quotes a missing one ("missing field `user`").
        let mut names: Vec<String> = changes.iter().flat_map(|(f, _)| FIELDS[*f].1.iter().map(|n| n.to_string())).collect();
        names.extend(changes.iter().filter_map(|(f, _)| FIELDS[*f].0.rsplit('.').find(|p| p.parse::<usize>().is_err())).map(|last| format!("`{last}`")));
        let fields: Vec<&str> = changes.iter().map(|(f, _)| FIELDS[*f].0).collect();
        let named = |text: &str| names.iter().any(|n| text.contains(n));
        match load_bundle(&fixture.bundle()) {
            Ok(bundle) => {
                if let Workload::Wasm(run) = &bundle.workload {
                    let real = run.module.canonicalize().unwrap();
                    prop_assert!(real.starts_with(fixture.rootfs().canonicalize().unwrap()), "{}", real.display());
                    prop_assert_eq!(std::fs::read(&real).unwrap(), WASM);
                }
                if let Err(e) = Plan::from_spec(&bundle.spec, "c1") {
                    let text = e.to_string();
                    prop_assert!(named(&text), "changed {fields:?}; the plan's error names none: {text}\n{spec:#}");
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(named(&text), "changed {fields:?}; the error names none: {text}\n{spec:#}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// `linux.cgroupsPath`: whatever the string, the cgroup it names is
    /// below the hierarchy's root (no `..` climbs out) or it is refused
    /// naming the field.
    #[test]
    fn cgroups_paths_stay_below_the_root(parts in prop::collection::vec(
        prop_oneof![
            Just(".."), Just("."), Just("/"), Just(":"), Just("a"), Just("-"),
            Just(".slice"), Just("system.slice"), Just("a-b.slice"), Just("\0"), Just(""),
        ],
        0..8,
    )) {
        let path = parts.concat();
        match CgroupsPath::parse(&path, "c1") {
            Ok(parsed) => {
                let fs = parsed.fs_path();
                prop_assert!(fs.is_absolute(), "{path:?} -> {}", fs.display());
                prop_assert!(
                    fs.components().all(|c| !matches!(c, std::path::Component::ParentDir)),
                    "{path:?} -> {}", fs.display()
                );
                prop_assert!(fs.components().count() > 1, "{path:?} is the root cgroup itself");
            }
            Err(e) => prop_assert!(e.to_string().contains("linux.cgroupsPath"), "{e}"),
        }
    }
}

/// Minimal inputs the properties found, kept as cases: a wrongly typed
/// field was reported as "serde failed", naming nothing.
#[test]
fn found_cases() {
    let fixture = Fixture::new();
    for (first, cwd) in [
        ("/up.wasm", "/"),
        ("abs/host.wasm", "/"),
        ("../../m.wasm", "/app"),
    ] {
        check_entrypoint(&fixture, first, cwd).unwrap();
    }
    for (field, new, expected) in [
        ("ociVersion", json!(null), "ociVersion: invalid type: null"),
        (
            "process.user.uid",
            json!("0"),
            "process.user.uid: invalid type: string",
        ),
        (
            "mounts.0.destination",
            json!(1),
            "mounts[0].destination: invalid type",
        ),
        (
            "linux.namespaces.0.type",
            json!("bogus"),
            "linux.namespaces[0].type: unknown variant `bogus`",
        ),
    ] {
        let mut spec = base_spec(&fixture);
        set(&mut spec, field, Some(new));
        std::fs::write(
            fixture.bundle().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let err = load_bundle(&fixture.bundle()).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{field}: {err}");
    }
}
