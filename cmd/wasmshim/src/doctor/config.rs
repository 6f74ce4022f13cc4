//! containerd's config file (checks 2b and 2c): its format and the section
//! each containerd version reads runtimes from, whether the CRI plugin is on,
//! what it declares for each engine, and the lines to add when it declares
//! nothing. Runs in the CLI process.

use std::path::{Path, PathBuf};

use super::{indent, runtime_type, shim_binary, ContainerdVersion, Finding};

/// `[plugins]` keys of the CRI plugin, in any containerd version.
const CRI_PLUGIN_IDS: [&str; 4] = [
    "cri",
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
];

/// The format of a containerd config file: its `version` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// No `version` key: the old format, plugins under short names (`[plugins.cri]`).
    V1,
    /// `version = 2`: containerd 1.x's format.
    V2,
    /// `version = 3`: containerd 2.x's format.
    V3,
}

impl ConfigVersion {
    const ALL: [ConfigVersion; 3] = [ConfigVersion::V1, ConfigVersion::V2, ConfigVersion::V3];

    /// The format `containerd config default` of containerd `major` writes.
    pub fn for_containerd(major: u32) -> Self {
        if major >= 2 {
            ConfigVersion::V3
        } else {
            ConfigVersion::V2
        }
    }

    /// The `version` number.
    pub fn number(self) -> u8 {
        match self {
            ConfigVersion::V1 => 1,
            ConfigVersion::V2 => 2,
            ConfigVersion::V3 => 3,
        }
    }

    fn cri_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V1 => "cri",
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ConfigVersion::V1 => "the section of old version 1 configs",
            ConfigVersion::V2 => "the containerd 1.x section",
            ConfigVersion::V3 => "the containerd 2.x section",
        }
    }

    /// The table header declaring CRI runtime `handler` in this format.
    pub fn runtime_header(self, handler: &str) -> String {
        let plugin = match self {
            ConfigVersion::V1 => "cri".to_string(),
            _ => format!("\"{}\"", self.cri_plugin()),
        };
        format!("[plugins.{plugin}.containerd.runtimes.{handler}]")
    }
}

/// The lines declaring `engine`'s runtime (handler: the engine's name) in a config of `version`.
pub fn runtime_snippet(version: ConfigVersion, engine: &str) -> String {
    format!(
        "{}\n  runtime_type = \"{}\"\n",
        version.runtime_header(engine),
        runtime_type(engine)
    )
}

/// A containerd config file, parsed.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// Where it is.
    pub path: PathBuf,
    /// Its format.
    pub version: ConfigVersion,
    table: toml::Table,
}

/// What a config declares for an engine's runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    /// In the section containerd reads, with the right `runtime_type`: the handler.
    Declared(String),
    /// A handler named after the engine with another `runtime_type` (or none).
    WrongType(Option<String>),
    /// Only in the section of another config version.
    WrongSection(ConfigVersion),
    /// Nowhere.
    Missing,
}

impl ContainerdConfig {
    /// Parses `text`, the file at `path`, as containerd `containerd` reads it;
    /// a file containerd cannot read is a failed finding.
    pub fn parse(path: &Path, text: &str, containerd: &ContainerdVersion) -> Result<Self, Finding> {
        let what = format!("containerd config {}", path.display());
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let why = format!("not valid TOML ({})", e.message());
            Finding::fail(&what, why, "correct it: containerd does not start with it")
        })?;
        let version = match table.get("version") {
            None | Some(toml::Value::Integer(1)) => ConfigVersion::V1,
            Some(toml::Value::Integer(2)) => ConfigVersion::V2,
            Some(toml::Value::Integer(3)) => ConfigVersion::V3,
            Some(other) => {
                let want = ConfigVersion::for_containerd(containerd.major).number();
                let why = format!("`version = {other}` is not a config version {containerd} reads");
                return Err(Finding::fail(what, why, format!("set `version = {want}`")));
            }
        };
        if version == ConfigVersion::V3 && containerd.major < 2 {
            let why = format!(
                "`version = 3` is containerd 2.x's format: {containerd} does not start with it"
            );
            let fix = "write it in the version 2 format (`containerd config default` prints one), or install containerd 2.x";
            return Err(Finding::fail(what, why, fix));
        }
        Ok(ContainerdConfig {
            path: path.to_path_buf(),
            version,
            table,
        })
    }

    fn runtimes(&self, version: ConfigVersion) -> Option<&toml::Table> {
        let plugins = self.table.get("plugins")?.as_table()?;
        let cri = plugins.get(version.cri_plugin())?.as_table()?;
        cri.get("containerd")?
            .as_table()?
            .get("runtimes")?
            .as_table()
    }

    /// What this config declares for `engine`'s runtime.
    pub fn find_runtime(&self, engine: &str) -> Declaration {
        let wanted = runtime_type(engine);
        let type_of = |rt: &toml::Value| {
            rt.get("runtime_type")
                .and_then(toml::Value::as_str)
                .map(String::from)
        };
        if let Some(runtimes) = self.runtimes(self.version) {
            if let Some((handler, _)) = runtimes
                .iter()
                .find(|(_, rt)| type_of(rt).as_deref() == Some(&wanted))
            {
                return Declaration::Declared(handler.clone());
            }
            if let Some(rt) = runtimes.get(engine) {
                return Declaration::WrongType(type_of(rt));
            }
        }
        let elsewhere = |version: &ConfigVersion| {
            self.runtimes(*version).is_some_and(|runtimes| {
                runtimes.contains_key(engine)
                    || runtimes
                        .values()
                        .any(|rt| type_of(rt).as_deref() == Some(&wanted))
            })
        };
        ConfigVersion::ALL
            .into_iter()
            .filter(|v| *v != self.version)
            .find(elsewhere)
            .map_or(Declaration::Missing, Declaration::WrongSection)
    }

    /// The CRI plugin's name when `disabled_plugins` lists it.
    pub fn disabled_cri(&self) -> Option<&str> {
        let disabled = self.table.get("disabled_plugins")?.as_array()?;
        disabled
            .iter()
            .filter_map(toml::Value::as_str)
            .find(|name| CRI_PLUGIN_IDS.contains(name))
    }
}

/// Check 2b: the config file as containerd reads it: its format, the CRI plugin enabled.
pub fn check_config_file(config: &ContainerdConfig, containerd: &ContainerdVersion) -> Finding {
    let what = format!("containerd config {}", config.path.display());
    if let Some(name) = config.disabled_cri() {
        let why = format!("disabled_plugins lists \"{name}\": the CRI plugin is off, so Kubernetes can run no container here");
        let fix =
            format!("remove \"{name}\" from disabled_plugins, then `systemctl restart containerd`");
        return Finding::fail(what, why, fix);
    }
    let migrated = if containerd.major >= 2 && config.version != ConfigVersion::V3 {
        format!(", which {containerd} migrates to version 3 when it starts")
    } else {
        String::new()
    };
    Finding::ok(format!(
        "{what}: version {}{migrated}",
        config.version.number()
    ))
}

/// Check 2b when there is no config file: containerd's defaults declare no Wasm runtime.
pub fn check_missing_config(
    path: &Path,
    containerd: &ContainerdVersion,
    engines: &[&str],
) -> Finding {
    let version = ConfigVersion::for_containerd(containerd.major);
    let snippets: Vec<String> = engines
        .iter()
        .map(|e| runtime_snippet(version, e))
        .collect();
    let why = "does not exist: containerd runs with its defaults, which declare no Wasm runtime for Kubernetes (the CRI plugin)";
    let fix = format!(
        "`containerd config default > {0}`, append these lines to {0}, then `systemctl restart containerd`:\n{1}",
        path.display(),
        indent(&snippets.join("\n"))
    );
    Finding::fail(format!("containerd config {}", path.display()), why, fix)
}

/// Check 2c: the CRI runtime of `engine` in `config`. `wanted`: whether its absence is a problem.
pub fn check_runtime(
    config: &ContainerdConfig,
    containerd: &ContainerdVersion,
    engine: &str,
    wanted: bool,
) -> Finding {
    let what = format!("CRI runtime {}", runtime_type(engine));
    let path = config.path.display();
    let snippet = indent(&runtime_snippet(config.version, engine));
    match config.find_runtime(engine) {
        Declaration::Declared(handler) => {
            Finding::ok(format!("{what}: handler {handler} in {path}"))
        }
        Declaration::WrongType(found) => {
            let found = found.map_or("no runtime_type".to_string(), |t| {
                format!("runtime_type \"{t}\"")
            });
            let why = format!("handler {engine} in {path} has {found}");
            Finding::fail(what, why, format!("declare it as:\n{snippet}"))
        }
        Declaration::WrongSection(other) => {
            let why = format!(
                "declared under {} ({}), but {containerd} reads this version {} file's runtimes from {}",
                other.runtime_header(engine),
                other.label(),
                config.version.number(),
                config.version.runtime_header(engine)
            );
            Finding::fail(
                what,
                why,
                format!("move it there, then `systemctl restart containerd`:\n{snippet}"),
            )
        }
        Declaration::Missing if wanted => {
            let why = format!("not declared in {path}, so Kubernetes (the CRI plugin) cannot use it (`ctr run --runtime` can)");
            Finding::fail(
                what,
                why,
                format!("add to {path}, then `systemctl restart containerd`:\n{snippet}"),
            )
        }
        Declaration::Missing => Finding::skip(
            what,
            format!("not declared, and {} is not installed", shim_binary(engine)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fixtures::{why_and_fix, DEFAULT_1X};
    use crate::doctor::{Status, DEFAULT_CONFIG};

    /// The runtime part of `containerd config default` of containerd 2.0.
    const DEFAULT_2X: &str = r#"version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.runtime']
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
"#;

    fn containerd(version: &str) -> ContainerdVersion {
        let out = format!("containerd github.com/containerd/containerd {version} 88bf19b\n");
        ContainerdVersion::parse(&out).unwrap()
    }

    fn config(text: &str, version: &str) -> ContainerdConfig {
        ContainerdConfig::parse(Path::new(DEFAULT_CONFIG), text, &containerd(version)).unwrap()
    }

    #[test]
    fn snippets_name_the_section_each_containerd_reads() {
        assert_eq!(ConfigVersion::for_containerd(1), ConfigVersion::V2);
        assert_eq!(ConfigVersion::for_containerd(2), ConfigVersion::V3);
        assert_eq!(
            runtime_snippet(ConfigVersion::V2, "wasmtime"),
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n"
        );
        assert_eq!(
            runtime_snippet(ConfigVersion::V3, "wasmedge"),
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge]\n  runtime_type = \"io.containerd.wasmedge.v1\"\n"
        );
    }

    #[test]
    fn missing_runtime_fails_and_appending_the_printed_snippet_fixes_it() {
        for (default, version) in [(DEFAULT_1X, "1.6.20~ds1"), (DEFAULT_2X, "v2.0.2")] {
            let before = config(default, version);
            assert_eq!(before.find_runtime("wasmtime"), Declaration::Missing);
            let finding = check_runtime(&before, &containerd(version), "wasmtime", true);
            let (why, fix) = why_and_fix(&finding);
            assert!(
                why.contains("not declared in /etc/containerd/config.toml"),
                "{finding}"
            );
            let snippet = runtime_snippet(before.version, "wasmtime");
            assert!(fix.ends_with(&indent(&snippet)), "{finding}");

            let after = config(&format!("{default}\n{snippet}"), version);
            let finding = check_runtime(&after, &containerd(version), "wasmtime", true);
            assert_eq!(
                finding.to_string(),
                "ok   CRI runtime io.containerd.wasmtime.v1: handler wasmtime in /etc/containerd/config.toml"
            );
        }
    }

    #[test]
    fn runtime_under_the_2x_section_fails_on_containerd_1x() {
        let text = format!(
            "{DEFAULT_1X}\n{}",
            runtime_snippet(ConfigVersion::V3, "wasmtime")
        );
        let config = config(&text, "1.7.2");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::WrongSection(ConfigVersion::V3)
        );
        let finding = check_runtime(&config, &containerd("1.7.2"), "wasmtime", true);
        let (why, fix) = why_and_fix(&finding);
        assert!(
            why.contains(
                "(the containerd 2.x section), but containerd 1.7.2 reads this version 2 file"
            ),
            "{finding}"
        );
        assert!(
            fix.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
            "{finding}"
        );
    }

    #[test]
    fn runtime_under_the_1x_section_fails_in_a_version_3_config() {
        let text = format!(
            "{DEFAULT_2X}\n{}",
            runtime_snippet(ConfigVersion::V2, "wasmtime")
        );
        let config = config(&text, "2.0.2");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::WrongSection(ConfigVersion::V2)
        );
        let finding = check_runtime(&config, &containerd("2.0.2"), "wasmtime", true);
        let (why, fix) = why_and_fix(&finding);
        assert!(
            why.contains(
                "(the containerd 1.x section), but containerd 2.0.2 reads this version 3 file"
            ),
            "{finding}"
        );
        assert!(
            fix.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]"),
            "{finding}"
        );
    }

    #[test]
    fn containerd_2_reads_a_version_2_config_after_migrating_it() {
        let text = format!(
            "{DEFAULT_1X}\n{}",
            runtime_snippet(ConfigVersion::V2, "wasmtime")
        );
        let config = config(&text, "2.1.0");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::Declared("wasmtime".into())
        );
        let finding = check_config_file(&config, &containerd("2.1.0"));
        assert_eq!(
            finding.to_string(),
            "ok   containerd config /etc/containerd/config.toml: version 2, which containerd 2.1.0 migrates to version 3 when it starts"
        );
    }

    #[test]
    fn config_containerd_cannot_read_fails() {
        let path = Path::new(DEFAULT_CONFIG);
        let err = ContainerdConfig::parse(path, DEFAULT_2X, &containerd("1.6.20")).unwrap_err();
        assert!(
            why_and_fix(&err)
                .0
                .contains("containerd 1.6.20 does not start with it"),
            "{err}"
        );
        let err = ContainerdConfig::parse(path, "version = 2\n[plugins", &containerd("1.6.20"))
            .unwrap_err();
        assert!(why_and_fix(&err).0.starts_with("not valid TOML"), "{err}");
        let err = ContainerdConfig::parse(path, "version = 7\n", &containerd("2.0.0")).unwrap_err();
        assert_eq!(why_and_fix(&err).1, "set `version = 3`");
        // No `version`: the old format, whose section is `[plugins.cri]`.
        let old = config(&runtime_snippet(ConfigVersion::V1, "wasmtime"), "1.6.20");
        assert_eq!(old.version, ConfigVersion::V1);
        assert_eq!(
            old.find_runtime("wasmtime"),
            Declaration::Declared("wasmtime".into())
        );
    }

    #[test]
    fn another_handler_name_counts_and_a_wrong_runtime_type_fails() {
        let text = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasm]
  runtime_type = "io.containerd.wasmtime.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmedge]
  runtime_type = "io.containerd.runc.v2"
"#;
        let config = config(text, "1.6.20");
        assert_eq!(
            config.find_runtime("wasmtime"),
            Declaration::Declared("wasm".into())
        );
        let finding = check_runtime(&config, &containerd("1.6.20"), "wasmedge", true);
        let (why, _) = why_and_fix(&finding);
        assert_eq!(why, "handler wasmedge in /etc/containerd/config.toml has runtime_type \"io.containerd.runc.v2\"");
        let finding = check_runtime(&config, &containerd("1.6.20"), "other", false);
        assert!(matches!(finding.status, Status::Skip { .. }), "{finding}");
    }

    #[test]
    fn missing_config_file_fails_with_the_lines_to_add() {
        let path = Path::new(DEFAULT_CONFIG);
        for (version, header) in [
            (
                "1.6.20",
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]",
            ),
            (
                "2.0.2",
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]",
            ),
        ] {
            let finding =
                check_missing_config(path, &containerd(version), &["wasmtime", "wasmedge"]);
            let (why, fix) = why_and_fix(&finding);
            assert!(why.starts_with("does not exist"), "{finding}");
            assert!(
                fix.starts_with("`containerd config default > /etc/containerd/config.toml`"),
                "{finding}"
            );
            assert!(
                fix.contains(&format!(
                    "    {header}\n      runtime_type = \"io.containerd.wasmtime.v1\""
                )),
                "{finding}"
            );
            assert!(
                fix.contains("runtime_type = \"io.containerd.wasmedge.v1\""),
                "{finding}"
            );
            assert!(!fix.lines().any(|l| l.ends_with(' ')), "{finding}");
        }
    }

    #[test]
    fn disabled_cri_plugin_fails() {
        let disabled = config("version = 2\ndisabled_plugins = [\"cri\"]\n", "1.6.20");
        let finding = check_config_file(&disabled, &containerd("1.6.20"));
        assert_eq!(
            why_and_fix(&finding).1,
            "remove \"cri\" from disabled_plugins, then `systemctl restart containerd`"
        );
        let enabled = config("version = 2\ndisabled_plugins = [\"aufs\"]\n", "1.6.20");
        assert!(!check_config_file(&enabled, &containerd("1.6.20")).is_fail());
    }
}
