//! The server's side of the deployment: its default ports and the flag behind each, the flags
//! `otelscale serve --help` documents, and whether the real binary accepts a list of arguments.

use std::process::{Command, Output};

/// The server's default ports, by Service port name.
pub(crate) const DEFAULT_PORTS: [(&str, u64); 4] =
    [("otlp-grpc", 4317), ("otlp-http", 4318), ("scaler", 8090), ("admin", 8080)];

/// The listen-address flag behind each port name.
pub(crate) const ADDRESS_FLAGS: [(&str, &str); 4] = [
    ("otlp-grpc", "otlp-grpc-addr"),
    ("otlp-http", "otlp-http-addr"),
    ("scaler", "scaler-addr"),
    ("admin", "admin-addr"),
];

/// The ports that can serve TLS, as named in the chart's `tls` values and in `--<port>-tls-*`.
pub(crate) const TLS_PORTS: [&str; 3] = ["otlp-grpc", "otlp-http", "scaler"];

/// One flag of `otelscale serve --help`.
#[derive(Debug)]
pub(crate) struct ServeFlag {
    pub(crate) name: String,
    pub(crate) takes_value: bool,
    pub(crate) default: Option<String>,
}

fn otelscale_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otelscale"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTELSCALE_") {
            command.env_remove(name);
        }
    }
    command
}

/// The flags the real binary documents, parsed from its long help.
pub(crate) fn serve_flags() -> Vec<ServeFlag> {
    let output = otelscale_command().args(["serve", "--help"]).output().expect("run otelscale serve --help");
    assert!(output.status.success(), "otelscale serve --help failed: {}", String::from_utf8_lossy(&output.stderr));
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags: Vec<ServeFlag> = Vec::new();
    for line in help.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("--") {
            let name = rest.split_whitespace().next().unwrap().to_owned();
            flags.push(ServeFlag { name, takes_value: rest.contains(" <"), default: None });
        } else if let Some(default) = line.strip_prefix("[default: ").and_then(|rest| rest.strip_suffix(']')) {
            flags.last_mut().expect("a default follows its flag").default = Some(default.to_owned());
        }
    }
    assert!(flags.len() >= 20, "too few flags parsed from:\n{help}");
    flags
}

/// Runs `otelscale serve <args> --help`: clap parses every argument before it reaches `--help`,
/// so this succeeds exactly when the server accepts the arguments.
pub(crate) fn server_accepts(args: &[String]) -> Output {
    otelscale_command().arg("serve").args(args).arg("--help").output().expect("run otelscale")
}

/// Whether `args` pass `--name`, as a switch or with a value.
pub(crate) fn passes_flag(args: &[String], name: &str) -> bool {
    args.iter().any(|arg| {
        arg.strip_prefix("--")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('='))
    })
}

pub(crate) fn port_of_address(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("`{address}` does not end in a port"))
}
