//! The runtime's log: the `--log` file in runc's formats (containerd's runc
//! shim reads the last `"level":"error"` line of the JSON form into the error
//! it reports, e.g. Docker's "OCI runtime create failed: …").

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::cli::LogFormat;
use crate::state::rfc3339;

struct FileLogger {
    file: Mutex<File>,
    format: LogFormat,
    max: log::LevelFilter,
}

impl log::Log for FileLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_record(self.format, record.level(), &record.args().to_string());
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// One log line in `format`, with the level names runc (logrus) uses.
pub fn format_record(format: LogFormat, level: log::Level, message: &str) -> String {
    let level = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    let time = rfc3339(SystemTime::now());
    match format {
        LogFormat::Json => {
            let record = serde_json::json!({"level": level, "msg": message, "time": time});
            format!("{record}\n")
        }
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={message:?}\n"),
    }
}

/// Sends the `log` records of this process (warnings and errors, or
/// everything with `debug`) to `path`, appended.
pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) {
    let Some(path) = path else { return };
    let Ok(file) = OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    let max = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let logger = FileLogger {
        file: Mutex::new(file),
        format,
        max,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_what_containerd_reads() {
        let line = format_record(LogFormat::Json, log::Level::Error, "bad \"module\"");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "bad \"module\"");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
        assert!(line.ends_with('\n'));
    }
}
