//! The command line, as runc spells it: the global flags containerd's runc
//! shim, Docker and podman pass, and the subcommands they call.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/wasmshim-oci";

/// `wasmshim-oci [global flags] <command> …`
#[derive(Debug, Parser)]
#[command(
    name = "wasmshim-oci",
    version,
    about = "A runc-compatible OCI runtime: runs WebAssembly containers with wasmtime and hands every other container to runc"
)]
pub struct Cli {
    /// Directory for the containers' state (runc's `--root`).
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// File that receives this runtime's log (errors are also printed to stderr).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Format of the `--log` file.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages too.
    #[arg(long)]
    pub debug: bool,
    /// Accepted for runc compatibility: `slice:prefix:name` cgroup paths are always understood.
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility (rootless mode is not supported for Wasm containers).
    #[arg(long)]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility (checkpointing is not supported for Wasm containers).
    #[arg(long)]
    pub criu: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Formats of the `--log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time level message` lines.
    Text,
    /// One JSON object per line (`level`, `msg`, `time`), as runc writes it.
    Json,
}

/// runc's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: load its module and wait for `start`.
    Create {
        /// The bundle directory (holding `config.json`).
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// File to write the container process's pid to.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Unix socket to send a terminal's master to (`process.terminal`).
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Accepted for runc compatibility.
        #[arg(long)]
        no_pivot: bool,
        /// Accepted for runc compatibility.
        #[arg(long)]
        no_new_keyring: bool,
        /// Number of extra file descriptors to pass (only 0 for Wasm containers).
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        /// Accepted for runc compatibility.
        #[arg(long, short = 'd')]
        detach: bool,
        /// The container id.
        id: String,
    },
    /// Run the created container's module.
    Start {
        /// The container id.
        id: String,
    },
    /// Print the container's state as JSON.
    State {
        /// The container id.
        id: String,
    },
    /// Send a signal to the container's process.
    Kill {
        /// Signal every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        /// The container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove the container's state, cgroup and process.
    Delete {
        /// Kill the container first if it still runs.
        #[arg(long, short = 'f')]
        force: bool,
        /// The container id.
        id: String,
    },
    /// List the container's processes.
    Ps {
        /// `table` or `json`.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// The container id.
        id: String,
        /// Options for ps (Linux containers).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run another process in the container (Linux containers only).
    Exec {
        /// Options and the container id, as runc takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Suspend the container's processes (Wasm containers: the cgroup freezer).
    Pause {
        /// The container id.
        id: String,
    },
    /// Resume the container's processes (Wasm containers: the cgroup freezer).
    Resume {
        /// The container id.
        id: String,
    },
    /// Change the container's resource limits (Linux containers only).
    Update {
        /// Options, then the container id, as runc takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Print the container's events or statistics (Linux containers only).
    Events {
        /// Options, then the container id, as runc takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Print what the runtime supports (runc's answer: Wasm adds nothing to it).
    Features,
}

impl Command {
    /// The container this command is about, if it names one.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Command::Create { id, .. }
            | Command::Start { id }
            | Command::State { id }
            | Command::Kill { id, .. }
            | Command::Delete { id, .. }
            | Command::Ps { id, .. }
            | Command::Pause { id }
            | Command::Resume { id } => Some(id),
            Command::Exec { args } => exec_container_id(args),
            Command::Update { args } | Command::Events { args } => args
                .iter()
                .rfind(|a| !a.starts_with('-'))
                .map(String::as_str),
            Command::Features => None,
        }
    }

    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::Start { .. } => "start",
            Command::State { .. } => "state",
            Command::Kill { .. } => "kill",
            Command::Delete { .. } => "delete",
            Command::Ps { .. } => "ps",
            Command::Exec { .. } => "exec",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Update { .. } => "update",
            Command::Events { .. } => "events",
            Command::Features => "features",
        }
    }
}

/// runc exec's flags that take a value (the container id is the first
/// argument that is neither a flag nor a flag's value).
const EXEC_VALUE_FLAGS: &[&str] = &[
    "--console-socket",
    "--pidfd-socket",
    "--cwd",
    "--env",
    "-e",
    "--user",
    "-u",
    "--additional-gids",
    "-g",
    "--process",
    "-p",
    "--process-label",
    "--apparmor",
    "--cap",
    "-c",
    "--preserve-fds",
    "--cgroup",
    "--pid-file",
];

fn exec_container_id(args: &[String]) -> Option<&str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if EXEC_VALUE_FLAGS.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("wasmshim-oci").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn containerd_runc_shim_create_line_parses() {
        let cli = parse(&[
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--no-new-keyring",
            "c1",
        ]);
        assert_eq!(cli.log_format, LogFormat::Json);
        match cli.command {
            Command::Create {
                bundle,
                pid_file,
                id,
                ..
            } => {
                assert_eq!(bundle, PathBuf::from("/b"));
                assert_eq!(pid_file, Some(PathBuf::from("/b/init.pid")));
                assert_eq!(id, "c1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_command_names_its_container() {
        for (args, id) in [
            (&["kill", "--all", "c1", "9"][..], "c1"),
            (&["delete", "--force", "c2"][..], "c2"),
            (&["ps", "--format", "json", "c3"][..], "c3"),
            (
                &[
                    "exec",
                    "--process",
                    "/p.json",
                    "--detach",
                    "--pid-file",
                    "/x",
                    "c4",
                ][..],
                "c4",
            ),
            (&["exec", "-t", "c5", "sh", "-c", "true"][..], "c5"),
            (&["update", "--resources", "-", "c6"][..], "c6"),
            (&["events", "--stats", "c7"][..], "c7"),
        ] {
            assert_eq!(parse(args).command.container_id(), Some(id), "{args:?}");
        }
    }
}
